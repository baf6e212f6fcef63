//! Long operations (template builds, imports, exports, copies) as Job objects: a worker
//! reports into a [`Progress`], and the Job shows it over D-Bus and can cancel it.

pub mod progress;

pub use progress::Progress;
