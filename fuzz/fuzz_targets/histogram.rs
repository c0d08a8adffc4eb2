//! The bounded HdrHistogram V2 decoder on raw bytes (base64-encoded here, as the files hold it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smp_agent::report::details::decode_v2_base64;

fuzz_target!(|data: &[u8]| {
    let _ = decode_v2_base64(&base64_encode(data));
});

fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
