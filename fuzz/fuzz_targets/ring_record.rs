//! The ring-buffer record decoder: any bytes give an event or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smp_agent::probes::events::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
});
