//! Thin wrappers over the Linux calls that no crate berth uses covers: pidfds,
//! close_range and a process's start time. Kept here so the rest of berth reads as
//! operations, not syscalls.

pub mod pidfd;
pub mod process;

pub use pidfd::PidFd;
