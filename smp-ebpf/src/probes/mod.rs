//! Probe bodies, one module per domain.

pub mod hop;
pub mod sched;
pub mod sock;
