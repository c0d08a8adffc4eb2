#![no_std]
// This file exists so smp-agent can list smp-ebpf as a build-dependency (rebuilds on change).
