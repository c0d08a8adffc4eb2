//! Probe bodies, one module per domain.

pub mod sched;
pub mod sock;
