//! SMP (Service Mesh Performance) reporting: the SMP message types ([`smp`]), their reader
//! and writer ([`file`]), the result set a profile run writes ([`set`]), the per-hop details
//! document that SMP has no field for ([`details`]), the HTML report of a result set
//! ([`html`]), Meshery's non-proto result layouts ([`meshery`]) and comparison of two results
//! ([`compare`]). Plain Rust, no aya. The file layout is documented in docs/smp.md.

pub mod breakdown;
pub mod compare;
pub mod details;
pub mod file;
pub mod html;
pub mod meshery;
pub mod set;
pub mod smp;

pub use details::Details;
pub use file::{read_test_config, SmpFileError, Strictness};
pub use set::ResultSet;
pub use smp::{
    EnvironmentConfig, PerformanceTestConfig, PerformanceTestResult, ServiceMeshConfig,
    TestConfigFile,
};

#[cfg(test)]
mod fixture_tests;
