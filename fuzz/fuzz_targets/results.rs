//! The details document and `smp-agent load` results, as `compare` reads them, with every
//! histogram they hold decoded.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use smp_agent::{
    loadgen::Results,
    report::{file::parse_plain, Details},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_plain::<Details>(text, Path::new("details.json")) {
        for h in std::iter::once(&d.end_to_end.meshed)
            .chain(d.end_to_end.baseline.as_ref())
            .filter_map(|r| r.latency.histogram.as_ref())
            .chain(d.hops.iter().filter_map(|h| h.latency.histogram.as_ref()))
        {
            let _ = h.decode();
        }
    }
    let _ = serde_json::from_str::<Results>(text);
    let _ = parse_plain::<Results>(text, Path::new("results.yaml"));
});
