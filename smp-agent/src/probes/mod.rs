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

pub use crate::host::monotonic_ns;
pub use events::ProbeEvent;
pub use loader::{EventReader, FloorHooks, FloorProbes, HookStatus, ProbeError, Probes};

/// The kernel programs, built by build.rs (empty when built with `AYA_BUILD_SKIP=1`).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/smp"));

#[cfg(test)]
mod tests {
    /// Every map name the loader uses is a symbol of the built object (its string table
    /// holds each as a NUL-terminated name): a map renamed on one side only fails here, not at
    /// load time on a machine with root.
    #[test]
    fn the_object_exports_every_map_name() {
        assert!(
            !super::EBPF_OBJECT.is_empty(),
            "built with AYA_BUILD_SKIP=1: no object to check"
        );
        for name in smp_common::maps::ALL {
            let sym = [name.as_bytes(), b"\0"].concat();
            assert!(
                super::EBPF_OBJECT.windows(sym.len()).any(|w| w == sym),
                "map {name} missing from the eBPF object"
            );
        }
    }
}
