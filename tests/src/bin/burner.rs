//! Test workload: burns a known amount of CPU on N threads.
//!
//! `burner THREADS MILLIS`: prints `ready`, waits for a line on stdin, then each thread burns
//! MILLIS ms of its own CPU time (CLOCK_THREAD_CPUTIME_ID); prints `done <total thread ns>
//! <tid> <tid> …`, then waits for stdin to close before exiting. The burner threads stay
//! alive (parked) until then, so their `/proc/<pid>/task/<tid>/` entries can still be read:
//! the kernel's own total for each thread, start-up included, which the thread's clock read
//! from inside its loop does not see.

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
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..threads {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let start = smp_tests::thread_cpu_ns();
            let mut x = 0u64;
            while smp_tests::thread_cpu_ns() - start < millis * 1_000_000 {
                for i in 0..10_000u64 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                }
                std::hint::black_box(x);
            }
            let burned = smp_tests::thread_cpu_ns() - start;
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let _ = tx.send((tid, burned));
            loop {
                std::thread::park();
            }
        });
    }
    drop(tx);
    let done: Vec<(i32, u64)> = rx.iter().take(threads).collect();
    let total: u64 = done.iter().map(|&(_, ns)| ns).sum();
    let tids: Vec<String> = done.iter().map(|&(tid, _)| tid.to_string()).collect();
    println!("done {total} {}", tids.join(" "));
    std::io::stdout().flush().unwrap();
    smp_tests::wait_for_stdin_close();
    std::process::exit(0);
}
