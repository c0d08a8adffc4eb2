//! What `check` reports about the running kernel: release, BTF, tracefs, kprobes, and the
//! agent's capabilities. The probe layer's view of the host (it reads `host/` facts, never
//! the reverse).

use std::path::Path;

use serde::Serialize;

use crate::host::{effective_caps, has_cap, kernel_release, Capability};

/// Kernel facts `check` reports.
#[derive(Debug, Clone, Serialize)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    /// `/sys/kernel/btf/vmlinux` exists.
    pub btf: bool,
    /// tracefs is mounted (tracepoint formats readable).
    pub tracefs: bool,
    /// The kernel was built with kprobes (a kprobe PMU is registered).
    pub kprobe_pmu: bool,
    /// Effective capabilities of the agent, by name.
    pub capabilities: Vec<&'static str>,
}

impl KernelFacts {
    /// Reads the facts of the running kernel.
    pub fn read() -> KernelFacts {
        let caps = effective_caps();
        KernelFacts {
            release: kernel_release(),
            btf: Path::new(super::btf::VMLINUX_BTF).exists(),
            tracefs: super::tracefs::root().is_ok(),
            kprobe_pmu: Path::new("/sys/bus/event_source/devices/kprobe").exists(),
            capabilities: [
                Capability::Bpf,
                Capability::Perfmon,
                Capability::SysAdmin,
                Capability::NetAdmin,
                Capability::SysResource,
            ]
            .into_iter()
            .filter(|c| has_cap(caps, *c))
            .map(Capability::name)
            .collect(),
        }
    }
}
