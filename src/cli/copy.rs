//! `berthctl copy-to` and `copy-from`: the caller's side of the file or tree is read or
//! written here, with the caller's rights, as a tar stream through a pipe whose other end
//! berthd works on inside the machine (storage::transfer on both sides).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use zbus::zvariant::{Fd, OwnedObjectPath, Value};

use super::args::{CopyFromArgs, CopyToArgs};
use super::commands::Session;
use super::error::CliError;
use crate::jobs::Progress;
use crate::storage::archive::{self, Compression, PackOptions, Specials, UnpackOptions};
use crate::storage::transfer::{self, Base};

fn pipe() -> Result<(OwnedFd, OwnedFd), CliError> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?)
}

fn local(e: crate::error::Error) -> CliError {
    CliError::Usage(e.to_string())
}

impl Session {
    pub async fn copy_to(&self, args: &CopyToArgs) -> Result<i32, CliError> {
        let source = args.source.to_string_lossy().into_owned();
        let destination = args.destination.clone().unwrap_or_else(|| source.clone());
        let (dir, entry) = transfer::source(Base::Host, &source, "").map_err(local)?;
        let machine = self.machine(&args.name).await?;
        let (read, write) = pipe()?;
        let shown = Path::new(&source)
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let packer = std::thread::spawn(move || {
            let opts = PackOptions {
                compression: Compression::None,
                ..Default::default()
            };
            // The caller's own tree, as cp -r takes it: mounts below it included.
            archive::pack_entry(
                &dir,
                &shown,
                &entry,
                std::fs::File::from(write),
                &opts,
                false,
                &Progress::default(),
            )
        });
        let signals = self.job_signals().await?;
        let options: HashMap<&str, Value<'_>> = HashMap::new();
        let body = (destination.as_str(), Fd::from(read.as_fd()), options);
        let called = self.change(machine.inner(), "CopyTo", &body).await;
        // berthd has its own copy now; ours would keep the pipe open if it failed.
        drop(read);
        let job: OwnedObjectPath = called?;
        let followed = self
            .follow(
                signals,
                job,
                &format!("copying to {}", args.name),
                &args.follow,
            )
            .await;
        let packed = packer.join().expect("the packing thread does not panic");
        // berthd's error says why it stopped reading; a broken pipe here is its echo.
        followed?;
        packed.map_err(local)?;
        Ok(0)
    }

    pub async fn copy_from(&self, args: &CopyFromArgs) -> Result<i32, CliError> {
        let destination = args
            .destination
            .as_ref()
            .map_or_else(|| args.source.clone(), |d| d.to_string_lossy().into_owned());
        let (dir, name) = transfer::destination(Base::Host, &destination, "").map_err(local)?;
        let machine = self.machine(&args.name).await?;
        let (read, write) = pipe()?;
        let signals = self.job_signals().await?;
        let options: HashMap<&str, Value<'_>> = HashMap::new();
        let body = (args.source.as_str(), Fd::from(write.as_fd()), options);
        let called = self.change(machine.inner(), "CopyFrom", &body).await;
        // The end of the stream is when berthd closes its copy; ours would hide it.
        drop(write);
        let job: OwnedObjectPath = called?;
        let shown = match &name {
            Some(_) => transfer::split(&destination).parent.to_string(),
            None => destination.clone(),
        };
        let receiver = std::thread::spawn(move || {
            let opts = UnpackOptions {
                specials: Specials::SkipDevices,
                reserve_bytes: 0,
                ..Default::default()
            };
            transfer::receive(
                std::fs::File::from(read),
                &dir,
                &shown,
                name.as_deref(),
                &opts,
                &Progress::default(),
            )
        });
        let followed = self
            .follow(
                signals,
                job,
                &format!("copying from {}", args.name),
                &args.follow,
            )
            .await;
        let received = receiver
            .join()
            .expect("the receiving thread does not panic");
        followed?;
        received.map_err(local)?;
        Ok(0)
    }
}
