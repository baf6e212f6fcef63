//! Root filesystem trees on disk: copying them (create, clone, the directory method),
//! packing and unpacking archives (the tar method, export, import), each path resolved
//! inside the tree it belongs to, and moving their user and group IDs between user
//! ranges where a machine's files are shifted on disk (idmap.rs).

pub mod archive;
pub mod copy;
pub mod idmap;
pub mod quota;
pub mod transfer;
