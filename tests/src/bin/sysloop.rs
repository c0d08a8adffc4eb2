//! Benchmark workload: a tight send/recv loop on a loopback TCP pair.
//!
//! `sysloop ITERATIONS`: prints `ready`, waits for a line on stdin, runs ITERATIONS rounds of
//! one 64-byte `write` and one `read` (two traced socket syscalls), prints
//! `ns_per_syscall <wall> cpu_ns_per_syscall <cpu>`, and repeats on every further stdin line
//! until stdin closes. A line `ppid` runs 2 × ITERATIONS `getppid` calls instead (a syscall
//! no probe traces: what the hooks cost every other syscall). A line `switch` runs ITERATIONS
//! round trips of one byte with a helper thread of the same process over two pipes, each
//! side blocking in `read`: context switches, for what `sched_switch` costs per switch (the
//! figures printed are then per round trip). `<cpu>` is the thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`, which
//! includes the time in the kernel and in the eBPF programs that run in its context): unlike
//! wall time it does not grow while co-tenants hold the CPU.

use std::{
    io::{BufRead as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    time::Instant,
};

fn main() {
    let iterations: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    a.set_nodelay(true).unwrap();
    let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
    let buf = [1u8; 64];
    let mut rbuf = [0u8; 64];
    // The `switch` helper: echoes each byte of `ping` back on `pong`.
    let (ping_r, ping_w) = pipe();
    let (pong_r, pong_w) = pipe();
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        // SAFETY: plain syscalls on owned pipe fds with valid one-byte buffers.
        while unsafe { libc::read(ping_r, b.as_mut_ptr().cast(), 1) } == 1 {
            unsafe { libc::write(pong_w, b.as_ptr().cast(), 1) };
        }
    });
    println!("ready");
    std::io::stdout().flush().unwrap();
    let stdin = std::io::stdin();
    let mut line = String::new();
    while stdin
        .lock()
        .read_line(&mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        let ppid = line.trim() == "ppid";
        let switch = line.trim() == "switch";
        let cpu_start = smp_tests::thread_cpu_ns();
        let start = Instant::now();
        for _ in 0..iterations {
            // SAFETY: plain syscalls on owned fds with valid buffers.
            unsafe {
                if switch {
                    libc::write(ping_w, buf.as_ptr().cast(), 1);
                    libc::read(pong_r, rbuf.as_mut_ptr().cast(), 1);
                } else if ppid {
                    libc::syscall(libc::SYS_getppid);
                    libc::syscall(libc::SYS_getppid);
                } else {
                    libc::write(fa, buf.as_ptr().cast(), 64);
                    libc::read(fb, rbuf.as_mut_ptr().cast(), 64);
                }
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / (2 * iterations) as f64;
        let cpu = (smp_tests::thread_cpu_ns() - cpu_start) as f64 / (2 * iterations) as f64;
        println!("ns_per_syscall {ns:.1} cpu_ns_per_syscall {cpu:.1}");
        std::io::stdout().flush().unwrap();
        line.clear();
    }
}

/// A pipe: (read end, write end).
fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    (fds[0], fds[1])
}
