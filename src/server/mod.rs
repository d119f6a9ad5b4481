//! The worker side of the server: per-core event loops and what they own (timers, buffers).
pub mod pool;
mod run_stub;
pub mod timer;
pub use run_stub::run;
