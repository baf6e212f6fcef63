//! CopyTo and CopyFrom (machinectl's copy-to and copy-from): one file, symlink or tree
//! between a caller's descriptor, a tar stream, and a path inside a machine, as a Job.
//!
//! Which tree is the machine's: a stopped machine's rootfs on disk; for a running (or
//! frozen) one, its leader's root (`/proc/LEADER/root`), the tree its processes see, with
//! its /tmp tmpfs, its binds and, for an ephemeral machine, its overlay, none of which
//! the rootfs on disk shows. Either way every path is resolved inside that tree
//! (storage::transfer), and its owners are the machine's view (its root 0).

use super::Daemon;
use super::machine::{Machine, MachineState};
use crate::error::{Error, Result};
use crate::jobs::{Job, Operation, Target};
use crate::storage::archive::{self, Compression, PackOptions, Specials, UnpackOptions};
use crate::storage::idmap::IdMap;
use crate::storage::transfer::{self, Base};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

/// A machine's tree, opened, and how its owners on disk (as the host sees them) map to
/// the machine's view.
struct MachineRoot {
    root: OwnedFd,
    /// From the host's view to the machine's.
    to_machine_view: IdMap,
    /// The machine's root as the host sees it, when files are created in a tree of the
    /// machine's user namespace (see [`AsMachineRoot`]).
    create_as: Option<u32>,
}

impl Daemon {
    pub async fn copy_to(
        self: &Arc<Self>,
        name: &str,
        destination: &str,
        input: OwnedFd,
    ) -> Result<Arc<Job>> {
        transfer::check_machine_path(destination)?;
        let m = self.machine(name)?;
        let where_ = format!(" in machine {name}");
        let dest = destination.to_string();
        let (root, dir, target) = blocking(move || {
            let root = machine_root(&m)?;
            let (dir, target) = transfer::destination(Base::Root(&root.root), &dest, &where_)?;
            Ok((root, dir, target))
        })
        .await?;
        let opts = UnpackOptions {
            // Host root making device nodes in a machine's tree would hand it host devices.
            specials: Specials::SkipDevices,
            reserve_bytes: UnpackOptions::default().reserve_bytes,
            ids: root.to_machine_view.inverse(),
        };
        let job = self.new_job(
            Operation::CopyTo,
            Target::Machine(name.to_string()),
            "bytes",
        );
        let progress = job.progress.clone();
        let (name, destination) = (name.to_string(), destination.to_string());
        self.run_job(job.clone(), async move {
            let create_as = root.create_as;
            let written = blocking(move || {
                let _as = create_as.map(AsMachineRoot::new).transpose()?;
                let input = archive::input_from(input, &progress);
                transfer::receive(
                    input,
                    &dir,
                    &destination,
                    target.as_deref(),
                    &opts,
                    &progress,
                )
            })
            .await
            .map_err(|e| e.context(format!("cannot copy to machine {name}")))?;
            drop(root);
            Ok(format!(
                "copied {} to machine {name}",
                transfer::shown_name(&written)
            ))
        });
        Ok(job)
    }

    pub async fn copy_from(
        self: &Arc<Self>,
        name: &str,
        source: &str,
        output: OwnedFd,
    ) -> Result<Arc<Job>> {
        transfer::check_machine_path(source)?;
        let m = self.machine(name)?;
        let where_ = format!(" in machine {name}");
        let src = source.to_string();
        let (root, dir, entry) = blocking(move || {
            let root = machine_root(&m)?;
            let (dir, entry) = transfer::source(Base::Root(&root.root), &src, &where_)?;
            Ok((root, dir, entry))
        })
        .await?;
        let opts = PackOptions {
            compression: Compression::None,
            ids: root.to_machine_view,
            ..Default::default()
        };
        let job = self.new_job(
            Operation::CopyFrom,
            Target::Machine(name.to_string()),
            "bytes",
        );
        let progress = job.progress.clone();
        let (name, source) = (name.to_string(), source.to_string());
        let shown_source = source.clone();
        self.run_job(job.clone(), async move {
            blocking(move || {
                let shown = Path::new(&shown_source).parent().unwrap_or(Path::new("/"));
                archive::pack_entry(
                    &dir,
                    shown,
                    &entry,
                    std::fs::File::from(output),
                    &opts,
                    true,
                    &progress,
                )
            })
            .await
            .map_err(|e| e.context(format!("cannot copy from machine {name}")))?;
            drop(root);
            Ok(format!("copied {source} from machine {name}"))
        });
        Ok(job)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::failed("copy crashed", e))?
}

/// The tree machine `m`'s processes see, or its rootfs when it is stopped.
fn machine_root(m: &Machine) -> Result<MachineRoot> {
    if let Some(problem) = m.problem() {
        return Err(Error::InvalidState(format!(
            "machine {} is broken ({problem}); cannot copy files of it",
            m.name
        )));
    }
    let config = m.config();
    let range = config.users.map(|u| u.range);
    let run = m.run();
    match run.state {
        MachineState::Running | MachineState::Frozen => {
            let path = format!("/proc/{}/root", run.leader);
            let root = nix::fcntl::open(
                path.as_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                Error::Failed(format!("cannot open the root of machine {}: {e}", m.name))
            })?;
            // The PID could have been reused by the time /proc was read: the pidfd,
            // taken when the leader started, says whether it is still that process.
            if run.pidfd.as_ref().is_none_or(|p| p.send_signal(0).is_err()) {
                return Err(Error::InvalidState(format!(
                    "machine {} stopped meanwhile; try again",
                    m.name
                )));
            }
            // Seen from the host, through an idmapped mount or chowned on disk alike, an
            // unprivileged machine's files are owned by its range.
            Ok(MachineRoot {
                root,
                to_machine_view: range.map_or(IdMap::IDENTITY, IdMap::unshift),
                create_as: range.map(|r| r.base),
            })
        }
        MachineState::Stopped | MachineState::Failed => {
            if config.base.is_some() {
                return Err(Error::InvalidState(format!(
                    "machine {} is ephemeral and stopped; its files are gone",
                    m.name
                )));
            }
            let rootfs = m.rootfs();
            let root = nix::fcntl::open(
                &rootfs,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::Failed(format!("cannot open {}: {e}", rootfs.display())))?;
            Ok(MachineRoot {
                root,
                to_machine_view: super::create::ids_between(config.users, None),
                create_as: None,
            })
        }
        state => Err(Error::InvalidState(format!(
            "machine {} is {}; wait until it is running or stopped, then try again",
            m.name,
            state.as_str()
        ))),
    }
}

/// This thread creates files as the machine's root (its file system IDs), keeping its
/// capabilities. A running unprivileged machine's tmpfs mounts belong to its user
/// namespace, and its idmapped rootfs maps only its range: a file made by the host's
/// root, unmapped there, fails with EOVERFLOW. Per thread (setfsuid is), undone on drop
/// before the blocking pool reuses the thread.
struct AsMachineRoot;

impl AsMachineRoot {
    fn new(uid: u32) -> Result<AsMachineRoot> {
        nix::unistd::setfsgid(nix::unistd::Gid::from_raw(uid));
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
        let guard = AsMachineRoot;
        // Leaving fsuid 0 drops CAP_CHOWN, CAP_DAC_OVERRIDE and the like from the
        // effective set; setting the owners of what is received needs them back.
        raise_permitted()
            .map_err(|e| Error::Failed(format!("cannot keep capabilities to copy files: {e}")))?;
        Ok(guard)
    }
}

impl Drop for AsMachineRoot {
    fn drop(&mut self) {
        // Back to 0, the kernel gives the file system capabilities back as well.
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(0));
        nix::unistd::setfsgid(nix::unistd::Gid::from_raw(0));
    }
}

/// The calling thread's effective capabilities set to its permitted ones.
fn raise_permitted() -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: header and a two-element data array, as capget and capset v3 take them.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    for d in &mut data {
        d.effective = d.permitted;
    }
    // SAFETY: as above; pid 0 is this thread.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
