//! Test workload: burns a known amount of CPU on N threads.
//!
//! `burner THREADS MILLIS`: prints `ready`, waits for a line on stdin, then each thread burns
//! MILLIS ms of its own CPU time (CLOCK_THREAD_CPUTIME_ID); prints `done <total thread ns>`,
//! then waits for stdin to close before exiting, so its /proc entry can still be read.

use std::io::{BufRead as _, Write as _};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let millis: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(500);
    let stdin = std::io::stdin();
    let mut line = String::new();
    println!("ready");
    std::io::stdout().flush().unwrap();
    stdin.lock().read_line(&mut line).unwrap();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let start = smp_tests::thread_cpu_ns();
                let mut x = 0u64;
                while smp_tests::thread_cpu_ns() - start < millis * 1_000_000 {
                    for i in 0..10_000u64 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                    }
                    std::hint::black_box(x);
                }
                smp_tests::thread_cpu_ns() - start
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    println!("done {total}");
    std::io::stdout().flush().unwrap();
    smp_tests::wait_for_stdin_close();
}
