//! smp-agent: an eBPF service-mesh overhead profiler.
//!
//! Only [`probes`] touches aya and the kernel; everything else is plain Rust fed by typed
//! records, so it is unit-tested without root. See docs/architecture.md.

pub mod aggregate;
pub mod cli;
pub mod duration;
pub mod host;
pub mod input;
pub mod lab;
pub mod loadgen;
pub mod logging;
pub mod metrics;
pub mod probes;
pub mod profile;
pub mod proxy;
pub mod report;
pub mod tracker;
