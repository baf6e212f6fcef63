//! Machine consoles: the pty whose slave is a machine's /dev/console and PID 1's stdio
//! ([`pty`]), the bounded file of its recent output ([`log`]), and systemd's file
//! descriptor store that keeps the masters while berthd restarts ([`fdstore`]). The
//! daemon's side (reading, relaying to a client, following) is src/daemon/console.rs.

pub mod fdstore;
pub mod log;
pub mod pty;
