//! halley-load: the C10K long-poll / SSE load generator for Halley (and nginx + Nchan).
//!
//! The parent process plans a run, re-executes itself as `worker` children that each hold up
//! to ~19,000 subscriber sockets (the per-process open-file cap on these machines), publishes
//! stamped messages, and merges what the children report into one summary. Wire handling
//! (`http`, `feed`, `stamp`) does no I/O and is unit-tested; the event loops live in `sub`,
//! `publish` and `floor`; `tls` is the socket they use with `--tls`.

pub mod child;
pub mod children;
pub mod cli;
pub mod cost;
pub mod feed;
pub mod floor;
pub mod http;
pub mod ipc;
pub mod limits;
pub mod net;
pub mod procfs;
pub mod publish;
pub mod report;
pub mod run;
pub mod session;
pub mod stamp;
pub mod stats;
pub mod sub;
pub mod svg;
pub mod tls;
