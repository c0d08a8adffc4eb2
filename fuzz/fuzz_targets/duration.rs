//! The duration parser (`30s`, `1m30s`, `250ms`): never panics; what parses formats and parses
//! back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smp_agent::duration::{format, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse(text) {
        let again = parse(&format(d));
        assert_eq!(again.ok(), Some(d), "{text:?} -> {d:?} -> {:?}", format(d));
    }
});
