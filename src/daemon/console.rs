//! Consoles: each running machine's PID 1 has a pty slave as /dev/console and stdio
//! (src/spawn/); berthd keeps the master, reads it all the time into the machine's log
//! (src/console/log.rs) and hands clients what they ask for:
//! - OpenConsole: a pty pair of its own per client, whose master the client gets, relayed
//!   to the machine's master; berthd never hands out the machine's master, since it must
//!   go on reading it for the log. One client at a time may type.
//! - ReadLog: a pipe with the log's last lines, and with `follow` what comes after.
//!
//! The masters are kept in systemd's file descriptor store (src/console/fdstore.rs), so
//! a restarted or crashed berthd takes them back in load.rs and the machines' consoles
//! go on. Beside each master berthd keeps a slave open (and stores it too): a pty whose
//! slaves are all closed reports a hangup on its master, which systemd takes as the
//! sign to drop the descriptor from the store, and a machine's init may well close the
//! console for a while (systemd reopens it for each message).

use super::Daemon;
use super::machine::MachineState;
use crate::console::log::{LogFile, REPLAY};
use crate::console::{fdstore, pty};
use crate::error::{Error, Result};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

/// Chunks of output queued for each follower and client; one who falls further behind
/// misses some (the log still has them).
const QUEUE: usize = 64;

/// How often an attached client's window size is looked at when nothing else happens.
/// berthd is not in the client pty's session, so no SIGWINCH tells it of a resize: it
/// compares sizes on every relay wakeup and, for a resize with no keystroke after it, on
/// this timer.
const WINSIZE_POLL: Duration = Duration::from_millis(500);

/// A machine's console as berthd knows it, running or not: its log, and its output as it
/// comes for followers and an attached client.
pub struct Console {
    log: Mutex<LogFile>,
    /// Made for the first follower or client and dropped when the last has gone: its
    /// queue is a few KiB, and most of a thousand consoles have nobody watching.
    output: Mutex<Option<broadcast::Sender<Arc<[u8]>>>>,
    live: Mutex<Option<Arc<Live>>>,
}

/// The pty of a running machine.
struct Live {
    master: Arc<AsyncFd<OwnedFd>>,
    /// Kept open so the master never hangs up (see the module's comment).
    _peer: Option<OwnedFd>,
    /// Whether a client is attached (the one who may type).
    seat: AtomicBool,
    /// True once the machine has ended: relays stop.
    ended: watch::Sender<bool>,
    reader: tokio::task::AbortHandle,
}

/// An attached client's seat, freed when its relay ends.
struct Seat(Arc<Live>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.seat.store(false, Ordering::SeqCst);
    }
}

impl Console {
    /// Appends to the log and tells followers, in one hold of the log's lock, so a
    /// reader that takes the log's tail and subscribes under it misses nothing and sees
    /// nothing twice.
    fn record(&self, data: &[u8]) {
        let mut log = self.log.lock().expect("console log lock");
        if let Err(e) = log.append(data) {
            warn!("cannot write {}: {e}", log.path().display());
        }
        let mut output = self.output.lock().expect("console output lock");
        if let Some(tx) = output.as_ref() {
            if tx.receiver_count() == 0 {
                *output = None;
            } else {
                let _ = tx.send(Arc::from(data));
            }
        }
    }

    /// What the console says from now on. Called with the log's lock held (`_log`), as
    /// `record` sends under it, so nothing is missed or seen twice after the log's tail.
    fn subscribe(&self, _log: &LogFile) -> broadcast::Receiver<Arc<[u8]>> {
        self.output
            .lock()
            .expect("console output lock")
            .get_or_insert_with(|| broadcast::channel(QUEUE).0)
            .subscribe()
    }

    fn note(&self, text: &str) {
        let line = format!("{}{text}\r\n", crate::console::log::NOTE_PREFIX);
        self.record(line.as_bytes());
    }
}

impl Daemon {
    /// The console of machine `name`, made (its log opened) on first use.
    fn console(&self, name: &str) -> Result<Arc<Console>> {
        let mut consoles = self.consoles.lock().expect("consoles lock");
        if let Some(c) = consoles.get(name) {
            return Ok(c.clone());
        }
        let path = self.paths.console_log(name);
        let log = LogFile::open(&path).map_err(|e| Error::io("cannot open", &path, e))?;
        let c = Arc::new(Console {
            log: Mutex::new(log),
            output: Mutex::new(None),
            live: Mutex::new(None),
        });
        consoles.insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// One of berthd's lines about the machine in its log (started, stopped, ...).
    pub(super) fn console_note(&self, name: &str, text: &str) {
        match self.console(name) {
            Ok(c) => c.note(text),
            Err(e) => warn!("machine {name}: {e}"),
        }
    }

    /// Takes `master` as the running machine's console and reads it from now on; `peer`
    /// is the slave berthd keeps open. `store`: hand both to systemd's store (not when
    /// they came from it).
    pub(super) fn console_attach(
        &self,
        name: &str,
        master: OwnedFd,
        peer: Option<OwnedFd>,
        store: bool,
    ) -> Result<()> {
        let console = self.console(name)?;
        if store {
            use std::os::fd::AsFd;
            let stored =
                fdstore::store(&fdstore::master_name(name), &[master.as_fd()]).and_then(|()| {
                    match &peer {
                        Some(p) => fdstore::store(&fdstore::peer_name(name), &[p.as_fd()]),
                        None => Ok(()),
                    }
                });
            if let Err(e) = stored {
                warn!("machine {name}: cannot keep the console in systemd's store: {e}");
            }
        }
        pty::set_nonblocking(&master)
            .map_err(|e| Error::failed("cannot use the console's pty", e))?;
        let master = Arc::new(
            poll(master, Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| Error::failed("cannot poll the console's pty", e))?,
        );
        let reader = tokio::spawn(read_console(master.clone(), Arc::downgrade(&console)));
        let live = Arc::new(Live {
            master,
            _peer: peer,
            seat: AtomicBool::new(false),
            ended: watch::channel(false).0,
            reader: reader.abort_handle(),
        });
        if let Some(old) = console.live.lock().expect("live lock").replace(live) {
            old.end();
        }
        Ok(())
    }

    /// The machine ended: its pty goes (from berthd and from systemd's store); the log
    /// stays for `logs`.
    pub(super) fn console_end(&self, name: &str) {
        let live = self
            .consoles
            .lock()
            .expect("consoles lock")
            .get(name)
            .and_then(|c| c.live.lock().expect("live lock").take());
        if let Some(live) = live {
            live.end();
        }
        remove_from_store(name);
    }

    /// The machine is gone: its console and log too; followers see the end.
    pub(super) fn console_forget(&self, name: &str) {
        self.console_end(name);
        self.consoles.lock().expect("consoles lock").remove(name);
        let path = self.paths.console_log(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!("cannot remove {}: {e}", path.display()),
        }
    }

    /// The machine was renamed (stopped, so no pty): its log follows.
    pub(super) fn console_rename(&self, old: &str, new: &str) {
        let mut consoles = self.consoles.lock().expect("consoles lock");
        let (from, to) = (self.paths.console_log(old), self.paths.console_log(new));
        let moved = match consoles.remove(old) {
            Some(c) => c.log.lock().expect("console log lock").rename(&to),
            None => std::fs::rename(&from, &to),
        };
        match moved {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!("cannot rename {}: {e}", from.display()),
        }
    }

    /// A new pty's master for a client to use as the running machine's console: what it
    /// types goes to the machine, what the machine writes comes back, after the last few
    /// KiB of its log. One client at a time; it detaches by closing the master.
    pub async fn open_console(self: &Arc<Self>, name: &str) -> Result<OwnedFd> {
        let m = self.machine(name)?;
        match m.state() {
            MachineState::Running => {}
            MachineState::Frozen => {
                return Err(Error::InvalidState(format!(
                    "machine {name} is frozen; thaw it first"
                )));
            }
            other => {
                return Err(Error::InvalidState(format!(
                    "machine {name} is {}; its console is there only while it runs \
                     (`berthctl logs {name}` shows what it said)",
                    other.as_str()
                )));
            }
        }
        let console = self.console(name)?;
        let live = console.live.lock().expect("live lock").clone();
        let Some(live) = live else {
            return Err(Error::InvalidState(format!(
                "machine {name} has no console: it was started without one; restart it"
            )));
        };
        if live.seat.swap(true, Ordering::SeqCst) {
            return Err(Error::InvalidState(format!(
                "the console of machine {name} is in use by another client, and only one \
                 may type at a time; follow it read-only with `berthctl logs -f {name}`"
            )));
        }
        let seat = Seat(live.clone());
        let pair = pty::open().map_err(|e| Error::failed("cannot open a pty", e))?;
        pty::make_raw(&pair.slave)
            .and_then(|()| pty::set_nonblocking(&pair.slave))
            .map_err(|e| Error::failed("cannot set up the console's pty", e))?;
        // Until the client says its own size, the machine's.
        if let Ok(size) = pty::window_size(live.master.get_ref()) {
            let _ = pty::set_window_size(&pair.master, size);
        }
        let proxy = poll(pair.slave, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| Error::failed("cannot poll the console's pty", e))?;
        let (replay, rx) = {
            let log = console.log.lock().expect("console log lock");
            (
                log.tail(REPLAY).unwrap_or_default(),
                console.subscribe(&log),
            )
        };
        info!("machine {name}: console attached");
        let name = name.to_string();
        tokio::spawn(async move {
            relay(&live, &proxy, &replay, rx).await;
            drop(seat);
            info!("machine {name}: console detached");
        });
        Ok(pair.master)
    }

    /// The read end of a pipe carrying the last `lines` lines of the machine's log and,
    /// with `follow`, what it says after, until the reader closes the pipe or the
    /// machine is removed.
    pub async fn read_log(
        self: &Arc<Self>,
        name: &str,
        lines: u64,
        follow: bool,
    ) -> Result<OwnedFd> {
        self.machine(name)?;
        let console = self.console(name)?;
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::failed("cannot make a pipe", e))?;
        pty::set_nonblocking(&w).map_err(|e| Error::failed("cannot make a pipe", e))?;
        let w = poll(w, Interest::WRITABLE.add(Interest::ERROR))
            .map_err(|e| Error::failed("cannot poll a pipe", e))?;
        let (text, rx) = {
            let log = console.log.lock().expect("console log lock");
            let text = log
                .last_lines(lines)
                .map_err(|e| Error::io("cannot read", log.path(), e))?;
            (text, follow.then(|| console.subscribe(&log)))
        };
        // The follower must not keep the console (and so its sender) alive: a removal
        // ends it.
        drop(console);
        tokio::spawn(async move {
            if write_all(&w, &text).await.is_err() {
                return;
            }
            let Some(mut rx) = rx else { return };
            loop {
                tokio::select! {
                    chunk = rx.recv() => match chunk {
                        Ok(chunk) => if write_all(&w, &chunk).await.is_err() { return },
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    // The reader closed its end while the machine was quiet.
                    _ = w.ready(Interest::ERROR) => return,
                }
            }
        });
        Ok(r)
    }
}

impl Live {
    fn end(&self) {
        self.reader.abort();
        let _ = self.ended.send(true);
    }
}

fn remove_from_store(name: &str) {
    for n in [fdstore::master_name(name), fdstore::peer_name(name)] {
        if let Err(e) = fdstore::remove(&n) {
            warn!("machine {name}: cannot drop {n} from systemd's store: {e}");
        }
    }
}

/// Names in systemd's store that no running machine took at start: their machines ended
/// while berthd was away.
pub(super) fn drop_unclaimed_from_store() {
    for name in fdstore::drain_unclaimed() {
        if fdstore::is_console_name(&name) {
            info!("dropping {name} from systemd's store: its machine is not running");
            if let Err(e) = fdstore::remove(&name) {
                warn!("cannot drop {name} from systemd's store: {e}");
            }
        }
    }
}

/// Reads the machine's master for as long as the console lives (aborted when the
/// machine ends).
async fn read_console(master: Arc<AsyncFd<OwnedFd>>, console: Weak<Console>) {
    loop {
        let Ok(mut guard) = master.readable().await else {
            return;
        };
        match guard.try_io(|fd| read_into_log(fd.get_ref(), &console)) {
            Ok(Ok(Some(true))) => {}
            Ok(Ok(None)) => return,
            // No slave open (a master taken back from the store without its peer, in the
            // moment the machine's init has the console closed): wait for it to reopen.
            Ok(Ok(Some(false))) => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                guard.clear_ready();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(e)) => {
                warn!("cannot read a machine's console: {e}");
                return;
            }
            Err(_would_block) => {}
        }
    }
}

/// One read of the machine's master into its console: whether it said anything, None
/// when the console is gone. The buffer is on this call's stack, not in the reader's
/// task, which would keep it for as long as the machine runs (4 MiB for a thousand).
fn read_into_log(master: &OwnedFd, console: &Weak<Console>) -> io::Result<Option<bool>> {
    let mut buf = [0u8; 4096];
    let n = nix::unistd::read(master, &mut buf).map_err(io::Error::from)?;
    if n == 0 {
        return Ok(Some(false));
    }
    Ok(console.upgrade().map(|c| {
        c.record(&buf[..n]);
        true
    }))
}

/// Relays between a client's pty (its slave side, `proxy`) and the machine's master:
/// `replay` first, then the machine's output as it comes; what the client types goes to
/// the machine. Ends when the client closes its master (a read gives end-of-file or
/// EIO) or the machine ends.
async fn relay(
    live: &Live,
    proxy: &AsyncFd<OwnedFd>,
    replay: &[u8],
    mut rx: broadcast::Receiver<Arc<[u8]>>,
) {
    let mut ended = live.ended.subscribe();
    let output = async {
        write_all(proxy, replay).await?;
        loop {
            match rx.recv().await {
                Ok(chunk) => write_all(proxy, &chunk).await?,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return io::Result::Ok(()),
            }
        }
    };
    let input = async {
        let mut buf = [0u8; 1024];
        let mut size = None;
        let mut tick = tokio::time::interval(WINSIZE_POLL);
        loop {
            sync_window_size(proxy, &live.master, &mut size);
            tokio::select! {
                guard = proxy.readable() => {
                    let mut guard = guard?;
                    match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf).map_err(io::Error::from)) {
                        Ok(Ok(0)) => return Ok(()),
                        Ok(Ok(n)) => {
                            // A resize then a keystroke: the machine has the new size by
                            // the time it reads the key.
                            sync_window_size(proxy, &live.master, &mut size);
                            write_all(&live.master, &buf[..n]).await?
                        }
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => {}
                    }
                }
                _ = tick.tick() => {}
            }
        }
    };
    tokio::select! {
        _ = output => {}
        _ = input => {}
        _ = ended.wait_for(|e| *e) => {}
    }
}

/// Copies the client's window size onto the machine's console when it changed.
fn sync_window_size(
    proxy: &AsyncFd<OwnedFd>,
    master: &AsyncFd<OwnedFd>,
    last: &mut Option<(u16, u16)>,
) {
    if let Ok(size) = pty::window_size(proxy.get_ref())
        && size != (0, 0)
        && Some(size) != *last
    {
        let _ = pty::set_window_size(master.get_ref(), size);
        *last = Some(size);
    }
}

/// `fd` registered with tokio's reactor, which owns it from now on.
fn poll(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor, so it stays open and the same file for as
    // long as it is registered.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A follower of a quiet machine notices its reader leaving (ReadLog's end).
    #[tokio::test]
    async fn a_pipe_whose_reader_left_is_seen_without_writing() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        pty::set_nonblocking(&w).unwrap();
        let w = poll(w, Interest::WRITABLE.add(Interest::ERROR)).unwrap();
        write_all(&w, b"hello").await.unwrap();
        drop(r);
        let seen = tokio::time::timeout(Duration::from_secs(5), w.ready(Interest::ERROR))
            .await
            .expect("the reader's leaving is seen")
            .unwrap();
        drop(seen);
        assert!(write_all(&w, b"more").await.is_err());
    }
}
