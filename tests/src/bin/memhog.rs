//! Test workload: allocates and touches a known amount of memory.
//!
//! `memhog MIB`: prints `ready`, waits for a line on stdin, allocates MIB MiB and writes to
//! every page (so all of it is resident), prints `done <bytes>`, then holds the memory until
//! stdin closes.

use std::io::{BufRead as _, Write as _};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64);
    let stdin = std::io::stdin();
    let mut line = String::new();
    println!("ready");
    std::io::stdout().flush().unwrap();
    stdin.lock().read_line(&mut line).unwrap();
    let bytes = mib * 1024 * 1024;
    let mut buf: Vec<u8> = Vec::with_capacity(bytes);
    // Non-zero bytes on every page: zero pages could be shared with the zero page.
    buf.resize(bytes, 0xA5);
    for i in (0..bytes).step_by(4096) {
        buf[i] = (i / 4096) as u8 | 1;
    }
    std::hint::black_box(&buf);
    println!("done {bytes}");
    std::io::stdout().flush().unwrap();
    smp_tests::wait_for_stdin_close();
    std::hint::black_box(&buf);
}
