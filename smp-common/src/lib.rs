//! Types shared by the kernel programs (`smp-ebpf`) and the userspace agent (`smp-agent`).
//!
//! Every type here is `#[repr(C)]`, `Copy`, free of `bool` and of implicit padding, and its size
//! is pinned at compile time, so both sides agree on the layout byte for byte. Userspace-only
//! impls (`aya::Pod`) sit behind the `user` feature.
#![no_std]

pub mod config;
pub mod counters;
pub mod cpu;
pub mod event;
pub mod h2;
pub mod hop;
pub mod maps;
pub mod pairing;
pub mod sock;
pub mod tls;

/// Version of the kernel/user wire format. Bump it when any type in this crate changes layout.
pub const ABI_VERSION: u32 = 12;

/// Marks a type as safe to copy to and from eBPF maps (userspace side only).
#[cfg(feature = "user")]
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: the type is #[repr(C)], Copy, and has no implicit padding (sizes asserted).
            unsafe impl aya::Pod for $t {}
        )*
    };
}
#[cfg(feature = "user")]
pub(crate) use user_pod;
