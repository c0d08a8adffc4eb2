//! Support for the privileged integration tests: root and tool checks that fail under CI
//! instead of skipping, and the path of the built `smp-agent` binary.

use std::path::{Path, PathBuf};

use smp_agent::lab::truth::TruthRequest;

pub mod browser;
pub mod cpu_limit;
pub mod exchange_check;
pub mod hop_session;
pub mod prometheus;

/// A loopback port for a process to listen on: below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), so that no outgoing connection (a test's own checks
/// that a child listens included) takes it as its local port before the child binds it
/// (seen: "Address already in use" on the kernel matrix); never the same twice in one test
/// process; free when chosen (another process may still take it: callers that can retry
/// on a bind failure do).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| {
            r.split_whitespace()
                .next()
                .and_then(|l| l.parse::<u32>().ok())
        })
        .filter(|&l| l > FIRST + 1_000)
        .unwrap_or(32_768);
    let span = below - FIRST;
    // Test processes that run one after the other start at different places.
    let base = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (base + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{below}");
}

/// True when running as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Call first in every privileged test. Returns `false` (test should return early) when not
/// root outside CI; panics when not root under `CI=true`: in CI a privileged test that cannot
/// run is a failure, never a pass.
#[must_use]
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if in_ci() {
        panic!("{test}: needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN) and CI=true: failing, not skipping");
    }
    eprintln!("skipping {test}: needs root; run `cargo xtask test` as root");
    false
}

/// The load of a benchmark's lab profile.
#[derive(Debug, Clone, Copy)]
pub struct BenchLoad {
    /// Threads (workers) of each proxy (`--concurrency`).
    pub workers: u32,
    /// Requests per second (open loop).
    pub rate: u32,
    /// Client connections.
    pub connections: u32,
    /// Seconds of load (after a 1 s warm-up; the baseline run is as long).
    pub seconds: u32,
}

/// One `smp-agent profile --lab` of lab `name` with `kind` in both slots (and `extra` flags)
/// under `load`, its result set read back strictly and its directory removed: what the
/// benchmarks built on lab profiles run.
pub fn bench_lab_profile(
    name: &str,
    kind: &str,
    extra: &[&str],
    load: BenchLoad,
) -> anyhow::Result<smp_agent::report::ResultSet> {
    use smp_agent::report::{ResultSet, Strictness};
    let dir = std::env::temp_dir().join(format!("smp-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cmd = std::process::Command::new(agent_bin());
    cmd.args(["profile", "--lab", "--lab-name", name, "--proxy", kind])
        .args(extra)
        .args(["--concurrency", &load.workers.to_string()])
        .args(["--rate", &load.rate.to_string()])
        .args(["--connections", &load.connections.to_string()])
        .args([
            "--duration",
            &format!("{}s", load.seconds),
            "--warmup",
            "1s",
        ])
        .arg("--output-dir")
        .arg(&dir);
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let set = ResultSet::read_from_dir(&dir, Strictness::Strict)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(set)
}

/// True when the lab can find a ztunnel binary (`--ztunnel-bin`'s sources: `$SMP_ZTUNNEL`, the
/// project's `.cache/ztunnel/ztunnel` that `cargo xtask setup` builds from `$SMP_ZTUNNEL_SRC`,
/// PATH). Without one a test says what is missing and skips, or under CI fails.
pub fn require_ztunnel(test: &str) -> bool {
    match smp_agent::lab::proxies::ztunnel::find_binary(None) {
        Ok(_) => true,
        Err(e) if in_ci() => panic!("{test}: {e} (CI=true: failing, not skipping)"),
        Err(e) => {
            eprintln!("skipping {test}: {e}");
            false
        }
    }
}

/// The ways of seeing socket I/O this kernel supports, the agent's own choice first: the
/// socket tracepoints (6.4+) and the raw syscall hooks (every kernel). Probe-level tests run
/// under each, so the fallback stays proven on new kernels too.
pub fn socket_hook_modes() -> Vec<smp_agent::probes::catalog::SocketHooks> {
    use smp_agent::probes::catalog::SocketHooks;
    let mut modes = vec![SocketHooks::detect()];
    if modes[0] != SocketHooks::Syscalls {
        modes.push(SocketHooks::Syscalls);
    }
    modes
}

/// Test `test` (as root, else [`require_root`] says why) once per way of seeing socket I/O
/// this kernel supports ([`socket_hook_modes`]): `f` with each.
pub fn in_each_socket_hook_mode(test: &str, f: impl Fn(smp_agent::probes::catalog::SocketHooks)) {
    if !require_root(test) {
        return;
    }
    for mode in socket_hook_modes() {
        eprintln!("socket hooks: {mode:?}");
        f(mode);
    }
}

/// True under CI (`CI=true` or `CI=1`): a test that cannot run must fail, not skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Finds a program a test needs: `$env_override` if set, else the first of `names` found by
/// [`require_tool`] (which fails the test under CI when none is there).
#[must_use]
pub fn require_program(test: &str, env_override: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_override) {
        return Some(PathBuf::from(p));
    }
    let (last, rest) = names.split_last()?;
    rest.iter().find_map(|n| which(n)).or_else(|| {
        require_tool(
            last,
            test,
            &format!("or set {env_override}; `cargo xtask setup` installs it"),
        )
    })
}

fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.is_file());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Finds an executable on `PATH` (or at `name` if it contains a `/`). When it is missing:
/// under CI the test panics (a missing tool is a failure, never a pass); otherwise it says
/// it skips and returns `None`. `install` says how to get it.
pub fn require_tool(name: &str, test: &str, install: &str) -> Option<PathBuf> {
    let found = which(name);
    if found.is_none() {
        if in_ci() {
            panic!("{test}: `{name}` is missing and CI=true: failing, not skipping ({install})");
        }
        eprintln!("skipping {test}: `{name}` is missing ({install})");
    }
    found
}

/// The repository root (the parent of `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// For the workload binaries: block until stdin closes (the test is done reading /proc).
pub fn wait_for_stdin_close() {
    use std::io::BufRead as _;
    let mut line = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        line.clear();
    }
}

/// Path of the `smp-agent` binary under test: `$SMP_AGENT_BIN` (set by `cargo xtask test`),
/// else `target/<profile>/smp-agent` next to this test binary.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SMP_AGENT_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-binary> -> target/<profile>/smp-agent
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("smp-agent");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p smp-agent`) or set SMP_AGENT_BIN",
        bin.display()
    );
    bin
}

/// A child process driven line by line over stdin/stdout (the `tests/src/bin` workloads).
pub struct Workload {
    pub child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Workload {
    /// Spawns `bin args…` and returns it with its first line (e.g. `ready …`).
    pub fn spawn(bin: &str, args: &[&str]) -> (Workload, String) {
        let mut child = std::process::Command::new(bin)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {bin}: {e}"));
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut w = Workload {
            child,
            stdin,
            stdout,
        };
        let first = w.line();
        (w, first)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads one line of the workload's stdout.
    pub fn line(&mut self) -> String {
        use std::io::BufRead as _;
        let mut s = String::new();
        self.stdout.read_line(&mut s).expect("read workload stdout");
        s.trim().to_string()
    }

    /// Sends the go line.
    pub fn go(&mut self) {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(b"go\n")
            .and_then(|_| stdin.flush())
            .expect("write go");
    }

    /// Closes stdin (the workload exits) and reaps it.
    pub fn finish(mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process in nanoseconds, from `/proc/<pid>/stat` (clock-tick resolution).
pub fn proc_cpu_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_comm = stat.rsplit_once(')').expect("stat format").1;
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields after the comm start at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = f[11].parse().expect("utime");
    let stime: u64 = f[12].parse().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    (utime + stime) * 1_000_000_000 / hz
}

/// The calling thread's CPU time, nanoseconds (CLOCK_THREAD_CPUTIME_ID).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A thread's on-CPU time as the scheduler charged it (`sum_exec_runtime`, the first field
/// of `/proc/<pid>/task/<tid>/schedstat`), nanoseconds.
pub fn thread_exec_ns(pid: u32, tid: u32) -> u64 {
    let path = format!("/proc/{pid}/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{path}: {text:?}"))
}

/// Waits until every thread of `tids` in `pid` sleeps (`S` in `/proc/<pid>/task/<tid>/stat`):
/// it has then left its CPU, so the scheduler probe has charged its last stint. A workload
/// that says it is done (and then parks) can still be on its CPU when the line arrives.
pub fn wait_threads_asleep(pid: u32, tids: &[u32]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for &tid in tids {
        let path = format!("/proc/{pid}/task/{tid}/stat");
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // The state follows the command's closing parenthesis.
            let state = text
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            if state == Some("S") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path}: thread still not asleep after 5 s (state {state:?})"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// The values after `word ` in a workload's line (`ready 3 4`, `done 12 7 9`,
/// `ready 127.0.0.1:9477`); panics naming the line when it is not that.
pub fn values_after<T: std::str::FromStr>(line: &str, word: &str) -> Vec<T> {
    line.strip_prefix(word)
        .and_then(|rest| rest.strip_prefix(' '))
        .unwrap_or_else(|| panic!("workload said {line:?}, not {word:?} and values"))
        .split_whitespace()
        .map(|w| {
            w.parse()
                .unwrap_or_else(|_| panic!("workload said {line:?}: cannot read {w:?}"))
        })
        .collect()
}

/// The burner's `done <total thread ns> <tid> …` line: the total its threads' own clocks
/// burned, and the threads' ids.
pub fn burner_done(line: &str) -> (u64, Vec<u32>) {
    let n: Vec<u64> = values_after(line, "done");
    let total = *n.first().unwrap_or_else(|| panic!("burner said {line:?}"));
    (total, n[1..].iter().map(|&t| t as u32).collect())
}

/// Socket inode of `fd` in process `pid` (`/proc/<pid>/fd/<fd>` → `socket:[ino]`).
pub fn socket_inode(pid: u32, fd: i32) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("readlink fd");
    let s = link.to_string_lossy();
    s.strip_prefix("socket:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("fd {fd} of {pid} is not a socket: {s}"))
}

/// Ids of the loaded eBPF programs whose name starts with `smp_` (ours), from the kernel's
/// list of every loaded program.
/// The highest id of any loaded eBPF program (ids only grow): programs loaded later have
/// higher ids, which tells the agent under test's from those of an agent already running.
pub fn max_program_id() -> u32 {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .max()
        .unwrap_or(0)
}

/// Ids of every loaded `smp_` program (any agent's: filter by id against [`max_program_id`]).
pub fn loaded_smp_programs() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("smp_")))
        .map(|p| p.id())
        .collect()
}

/// A paced HTTP/1.1 keep-alive client run from inside a network namespace: `conns` connections
/// (one OS thread each, joined to the namespace with setns), `rate` requests per second in all,
/// for `duration`. `delay_us(i)` gives request i's `x-smp-delay-us` header (none if `None`).
/// Returns the injected delays of the requests that got a 2xx response, and the failures.
pub fn drive_in_netns(
    netns: &str,
    addr: std::net::SocketAddr,
    conns: usize,
    rate: f64,
    duration: std::time::Duration,
    delay_us: impl Fn(u64) -> Option<u64> + Send + Sync + 'static,
) -> (Vec<Option<u64>>, u64) {
    drive(Some(netns), addr, conns, rate, duration, delay_us)
}

/// [`drive_in_netns`] from the caller's own network namespace (`None`) or from `netns`.
pub fn drive(
    netns: Option<&str>,
    addr: std::net::SocketAddr,
    conns: usize,
    rate: f64,
    duration: std::time::Duration,
    delay_us: impl Fn(u64) -> Option<u64> + Send + Sync + 'static,
) -> (Vec<Option<u64>>, u64) {
    let (ok, failed, _) = drive_recorded(netns, addr, conns, rate, duration, delay_us);
    (ok, failed)
}

/// [`drive`], also returning the client's record of every request that got its response
/// (`lab::ends`: the id it sent in `x-smp-req-id`, its connection, CLOCK_MONOTONIC before
/// the write and after the whole response was read).
pub fn drive_recorded(
    netns: Option<&str>,
    addr: std::net::SocketAddr,
    conns: usize,
    rate: f64,
    duration: std::time::Duration,
    delay_us: impl Fn(u64) -> Option<u64> + Send + Sync + 'static,
) -> (Vec<Option<u64>>, u64, Vec<smp_agent::lab::ends::EndRecord>) {
    use smp_agent::lab::ends::{monotonic_ns, EndRecord, REQUEST_ID_HEADER};
    use std::{
        io::{Read as _, Write as _},
        os::fd::AsRawFd as _,
        sync::Arc,
        time::Instant,
    };
    let delay_us = Arc::new(delay_us);
    let per_conn_period = std::time::Duration::from_secs_f64(conns as f64 / rate);
    let start = Instant::now() + std::time::Duration::from_millis(200);
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let netns = netns.map(str::to_string);
            let delay_us = Arc::clone(&delay_us);
            std::thread::spawn(move || {
                if let Some(netns) = netns {
                    let ns =
                        std::fs::File::open(format!("/run/netns/{netns}")).expect("open netns");
                    // SAFETY: setns on this thread only, with a valid namespace fd.
                    assert_eq!(
                        unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                        0,
                        "setns"
                    );
                }
                let mut ok = Vec::new();
                let mut records = Vec::new();
                let mut failed = 0u64;
                let mut stream: Option<std::net::TcpStream> = None;
                let mut buf = vec![0u8; 64 * 1024];
                let offset = per_conn_period.mul_f64(c as f64 / conns as f64);
                let mut k: u64 = 0;
                loop {
                    let due = start + offset + per_conn_period.mul_f64(k as f64);
                    if due >= start + duration {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let i = k * conns as u64 + c as u64;
                    k += 1;
                    let d = delay_us(i);
                    let header = d
                        .map(|d| format!("x-smp-delay-us: {d}\r\n"))
                        .unwrap_or_default();
                    let req = format!(
                        "GET /hop/{i} HTTP/1.1\r\nhost: {addr}\r\n{REQUEST_ID_HEADER}: {i}\r\n{header}\r\n"
                    );
                    if stream.is_none() {
                        stream = std::net::TcpStream::connect(addr).ok();
                        if let Some(s) = &stream {
                            let _ = s.set_nodelay(true);
                            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                        }
                    }
                    let Some(s) = stream.as_mut() else {
                        failed += 1;
                        continue;
                    };
                    let t0_ns = monotonic_ns();
                    let good = s.write_all(req.as_bytes()).is_ok() && read_response(s, &mut buf);
                    if good {
                        let t1_ns = monotonic_ns();
                        if let (Ok(local), Ok(remote)) = (s.local_addr(), s.peer_addr()) {
                            records.push(EndRecord {
                                id: i,
                                local,
                                remote,
                                t0_ns,
                                t1_ns,
                            });
                        }
                        ok.push(d);
                    } else {
                        failed += 1;
                        stream = None;
                    }
                }
                (ok, failed, records)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut all_records = Vec::new();
    let mut failed = 0;
    for h in handles {
        let (ok, f, r) = h.join().expect("driver thread");
        all.extend(ok);
        all_records.extend(r);
        failed += f;
    }
    return (all, failed, all_records);

    /// Reads one response (headers + Content-Length body); true on a 2xx.
    fn read_response(s: &mut std::net::TcpStream, buf: &mut [u8]) -> bool {
        let mut have = 0;
        loop {
            let n = match s.read(&mut buf[have..]) {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            have += n;
            let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while have < end + 4 + len {
                match s.read(&mut buf[have..]) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => have += n,
                }
            }
            return head.starts_with("http/1.1 2");
        }
    }
}

/// Pids of `pid` and all its descendants (nginx master + workers).
pub use smp_agent::host::process_tree;

/// Value at quantile `q` of a sample (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// A lab config named `name` with `kind` in both sidecar slots, using the agent under test.
pub fn lab_config(
    name: &str,
    kind: smp_agent::lab::config::ProxyKind,
    mtls: bool,
) -> smp_agent::lab::LabConfig {
    let mut cfg = smp_agent::lab::LabConfig {
        name: name.into(),
        proxy: kind,
        mtls,
        ..smp_agent::lab::LabConfig::default()
    };
    cfg.agent_bin = Some(agent_bin());
    cfg
}

/// Brings a lab up, runs `f`, always tears it down (also when `f` panics).
pub fn with_lab<T>(
    cfg: &smp_agent::lab::LabConfig,
    f: impl FnOnce(&smp_agent::lab::LabInfo) -> T,
) -> T {
    use smp_agent::lab::Lab;
    let _ = Lab::down(&cfg.name);
    let info = Lab::up(cfg).unwrap_or_else(|e| panic!("lab up {}: {e:#}", cfg.name));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&info)));
    Lab::down(&cfg.name).expect("lab down");
    match out {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// The lab's meshed URL as a socket address (what the client app connects to).
pub fn meshed_addr(info: &smp_agent::lab::LabInfo) -> std::net::SocketAddr {
    let url = info.meshed_url.trim_start_matches("http://");
    let hostport = url.split('/').next().unwrap_or_default();
    hostport.parse().expect("meshed url host:port")
}

/// (fd side, syscall, calls, bytes, errors) the `sockmover` workload performs; `a` sends, `b`
/// receives.
const SOCKMOVER: &[(char, smp_common::sock::SyscallKind, u64, u64, u64)] = {
    use smp_common::sock::SyscallKind;
    &[
        ('a', SyscallKind::Write, 10, 1000, 0),
        ('a', SyscallKind::Sendto, 10, 2000, 0),
        ('a', SyscallKind::Writev, 10, 1000, 0),
        ('a', SyscallKind::Sendmsg, 10, 3000, 0),
        ('b', SyscallKind::Read, 12, 1000, 1),
        ('b', SyscallKind::Recvfrom, 10, 2000, 0),
        ('b', SyscallKind::Readv, 10, 1000, 0),
        ('b', SyscallKind::Recvmsg, 10, 3000, 0),
    ]
};

/// Runs the `sockmover` workload (`bin`) under `probes` (loaded with `mode`) and asserts that
/// its socket syscalls were counted exactly, per socket and kind, and nothing else.
pub fn sockmover_counts_exactly(
    probes: &mut smp_agent::probes::Probes,
    mode: smp_agent::probes::catalog::SocketHooks,
    bin: &str,
) {
    let (mut w, ready) = Workload::spawn(bin, &[]);
    let fds: Vec<i32> = values_after(&ready, "ready");
    let pid = w.pid();
    let (ino_a, ino_b) = (socket_inode(pid, fds[0]), socket_inode(pid, fds[1]));
    probes.track(pid).expect("track");
    w.go();
    assert_eq!(w.line(), "done");
    let snap = probes.snapshot().expect("snapshot");
    w.finish();

    let mine: Vec<_> = snap.sockets.iter().filter(|s| s.tgid == pid).collect();
    for &(side, kind, calls, bytes, errors) in SOCKMOVER {
        let (fd, ino) = if side == 'a' {
            (fds[0], ino_a)
        } else {
            (fds[1], ino_b)
        };
        let s = mine
            .iter()
            .find(|s| s.ino == ino && s.kind == kind)
            .unwrap_or_else(|| panic!("no sample for fd {fd} {kind:?}; have {mine:?}"));
        assert_eq!(s.fd, fd as u32, "{kind:?}");
        assert_eq!(
            (s.calls, s.bytes, s.errors),
            (calls, bytes, errors),
            "{kind:?} on fd {fd}"
        );
        // The socket tracepoints fire at completion only: no time inside the call.
        if mode == smp_agent::probes::catalog::SocketHooks::Syscalls {
            assert!(s.ns > 0, "{kind:?}: time inside the syscall is recorded");
        }
    }
    // Nothing else: the /dev/null, /dev/zero and pipe I/O are not sockets.
    assert_eq!(mine.len(), SOCKMOVER.len(), "unexpected samples: {mine:?}");
    assert_eq!(snap.loss.map_insert_failed, 0);
}

/// The kernel's pressure-stall totals (`/proc/pressure/{cpu,memory,io}`, the `some` lines, µs):
/// how long runnable tasks waited for a CPU, for memory, for I/O. A timing test prints how
/// much they grew during its run, so that a failure in a slow phase of the machine says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub cpu_us: u64,
    pub memory_us: u64,
    pub io_us: u64,
}

impl Pressure {
    /// The totals now (0 where the kernel has no PSI).
    pub fn now() -> Pressure {
        let some_total = |what: &str| {
            std::fs::read_to_string(format!("/proc/pressure/{what}"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with("some "))
                        .and_then(|l| l.rsplit("total=").next())
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(0)
        };
        Pressure {
            cpu_us: some_total("cpu"),
            memory_us: some_total("memory"),
            io_us: some_total("io"),
        }
    }

    /// How much each total grew since `before`.
    pub fn since(before: Pressure) -> Pressure {
        let now = Pressure::now();
        Pressure {
            cpu_us: now.cpu_us.saturating_sub(before.cpu_us),
            memory_us: now.memory_us.saturating_sub(before.memory_us),
            io_us: now.io_us.saturating_sub(before.io_us),
        }
    }
}

/// A right exchange's request hop as the probe saw it, and the bounds the proxy's clock
/// around the two syscalls puts on it ([`TruthRequest::hop_bounds_ns`]), µs.
pub struct Bounded {
    pub probe: f64,
    pub lo: f64,
    pub hi: f64,
}

/// [`Bounded`] of every right exchange ([`smp_agent::lab::truth::check_matching`]'s matches)
/// whose request the log brackets.
pub fn bounded(
    exchanges: &[smp_agent::aggregate::hops::Exchange],
    log: &[TruthRequest],
    matches: &[(usize, usize)],
) -> Vec<Bounded> {
    matches
        .iter()
        .filter_map(|&(e, r)| {
            let (lo, hi) = log.get(r)?.hop_bounds_ns()?;
            let e = exchanges.get(e)?;
            Some(Bounded {
                probe: e.req_out_ns.saturating_sub(e.req_in_ns) as f64 / 1e3,
                lo: lo as f64 / 1e3,
                hi: hi as f64 / 1e3,
            })
        })
        .collect()
}

/// The proxy's own clock (read returned → write issued) of the requests in `b` at quantile
/// `q`, µs.
pub fn own_clock_us(b: &[Bounded], q: f64) -> f64 {
    let mut lo: Vec<f64> = b.iter().map(|b| b.lo).collect();
    lo.sort_by(f64::total_cmp);
    quantile(&lo, q)
}

/// The probe's request-hop histogram (`at`: its value at a quantile, µs; `len` samples) lies,
/// at each quantile of `qs`, between the same quantiles of the proxy's bounds `b`: each
/// request's hop lies inside its bounds (the probe stamps the syscalls the proxy brackets), so
/// every quantile of the hops lies between those of the bounds. The histogram also holds the
/// few exchanges the log could not bracket: each may move a quantile by one rank. Histogram
/// values are exact to 3 digits. No tolerance for the scheduler is needed: a preemption
/// between a syscall and the proxy's stamp of it widens that request's bracket.
pub fn assert_hop_quantiles_bounded(
    what: &str,
    at: impl Fn(f64) -> f64,
    len: u64,
    b: &[Bounded],
    qs: &[f64],
) {
    let n = len.max(1) as f64;
    let loose = (len as f64 - b.len() as f64).abs() + 1.0;
    let sorted = |f: fn(&Bounded) -> f64| {
        let mut v: Vec<f64> = b.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (lo, hi, probe) = (sorted(|b| b.lo), sorted(|b| b.hi), sorted(|b| b.probe));
    for &q in qs {
        let p = at(q);
        let floor = quantile(&lo, (q - loose / n).max(0.0)) * 0.999 - 1.0;
        let ceil = quantile(&hi, (q + loose / n).min(1.0)) * 1.001 + 1.0;
        eprintln!(
            "{what} q{q}: probe {p:.1} µs (its exchanges {:.1}); proxy's own clock {:.1}, its \
             syscall brackets allow {floor:.1}..{ceil:.1}",
            quantile(&probe, q),
            quantile(&lo, q)
        );
        assert!(
            (floor..=ceil).contains(&p),
            "{what}: request hop q{q} {p} µs outside {floor:.1}..{ceil:.1}, the proxy's clock \
             around its syscalls"
        );
    }
}
