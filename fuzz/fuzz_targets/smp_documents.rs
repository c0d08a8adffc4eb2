//! The SMP and configuration readers (YAML through the capped reader, or JSON), strict and
//! lenient, and the lab configuration. The first byte picks the format.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use smp_agent::{
    lab::config::LabConfig,
    report::{
        file::{parse_document, parse_test_config},
        smp::{EnvironmentConfig, PerformanceTestResult, ServiceMeshConfig},
        Strictness,
    },
};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let path = Path::new(if kind & 1 == 0 { "f.yaml" } else { "f.json" });
    for s in [Strictness::Strict, Strictness::Lenient] {
        let _ = parse_document::<PerformanceTestResult>(text, path, s);
        let _ = parse_document::<ServiceMeshConfig>(text, path, s);
        let _ = parse_document::<EnvironmentConfig>(text, path, s);
    }
    let _ = parse_test_config(text, path);
    let _ = LabConfig::from_yaml(text);
});
