//! Root filesystem trees on disk: copying them (create, clone, the directory method),
//! packing and unpacking archives (the tar method, export, import), each path resolved
//! inside the tree it belongs to.

pub mod archive;
pub mod copy;
