//! The kernel side: load, configure and attach the eBPF programs, and read their maps.
//!
//! This is the only module that imports aya. What leaves it are the plain types of
//! [`crate::aggregate`] and [`events::ProbeEvent`], so everything downstream is tested
//! without root.

pub mod btf;
pub mod catalog;
pub mod events;
pub mod facts;
mod loader;
pub mod offsets;
pub mod tracefs;

pub use events::ProbeEvent;
pub use loader::{
    monotonic_ns, EventReader, FloorHooks, FloorProbes, HookStatus, ProbeError, Probes,
};

/// The kernel programs, built by build.rs (empty when built with `AYA_BUILD_SKIP=1`).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/smp"));
