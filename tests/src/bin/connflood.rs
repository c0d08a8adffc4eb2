//! Test workload: processes holding very many live TCP connections, each of which carried
//! one HTTP-looking exchange, so that every per-socket map of the probes is offered an entry
//! per socket (far more sockets than the maps hold).
//!
//! `connflood N`: starts worker processes of at most [`PER_WORKER`] connections each (a
//! process may hold only as many fds as its hard limit allows, and raising that needs
//! CAP_SYS_RESOURCE; a proxy of several processes, like nginx's workers, shares the probes'
//! maps all the same), prints `ready <worker pid> …`, waits for a line on stdin, has every
//! worker open its connections, prints `done <seconds>`, and keeps them all open until stdin
//! closes.
//!
//! Each worker listens on 8 loopback ports (one source address reaches one destination
//! through ~28 000 ephemeral ports); on each connection the client writes a request line,
//! the accepted side reads it and writes a response head, the client reads that.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
};

const LISTENERS: usize = 8;
/// Connections per worker: two fds each, under the usual hard limit of 20 000 fds.
const PER_WORKER: usize = 9_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let n = args
            .get(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or(PER_WORKER);
        worker(n);
        return;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let exe = std::env::current_exe().expect("own path");
    let mut workers: Vec<_> = (0..n.div_ceil(PER_WORKER))
        .map(|w| {
            let share = PER_WORKER.min(n - w * PER_WORKER);
            let mut child = Command::new(&exe)
                .args(["worker", &share.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a worker");
            let out = BufReader::new(child.stdout.take().expect("worker stdout"));
            (child, out)
        })
        .collect();
    let mut line = String::new();
    for (_, out) in &mut workers {
        line.clear();
        out.read_line(&mut line).expect("worker ready");
        assert_eq!(line.trim(), "ready", "a worker said {line:?}");
    }
    let pids: Vec<String> = workers.iter().map(|(c, _)| c.id().to_string()).collect();
    println!("ready {}", pids.join(" "));
    std::io::stdout().flush().unwrap();
    line.clear();
    std::io::stdin().lock().read_line(&mut line).unwrap();

    let start = std::time::Instant::now();
    for (child, _) in &mut workers {
        let stdin = child.stdin.as_mut().expect("worker stdin");
        stdin.write_all(b"go\n").expect("tell a worker to go");
        stdin.flush().expect("tell a worker to go");
    }
    for (_, out) in &mut workers {
        line.clear();
        out.read_line(&mut line).expect("worker done");
        assert_eq!(line.trim(), "done", "a worker said {line:?}");
    }
    println!("done {:.1}", start.elapsed().as_secs_f64());
    std::io::stdout().flush().unwrap();
    smp_tests::wait_for_stdin_close();
    for (mut child, _) in workers {
        drop(child.stdin.take());
        let _ = child.wait();
    }
}

/// Opens `n` connections to itself, one exchange each, and holds them until stdin closes.
fn worker(n: usize) {
    let listeners: Vec<TcpListener> = (0..LISTENERS)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("listen"))
        .collect();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    let mut open = Vec::with_capacity(2 * n);
    let mut buf = [0u8; 64];
    for i in 0..n {
        let l = &listeners[i % LISTENERS];
        let mut c = TcpStream::connect(l.local_addr().unwrap())
            .unwrap_or_else(|e| panic!("connection {i}: connect: {e}"));
        let (mut s, _) = l
            .accept()
            .unwrap_or_else(|e| panic!("connection {i}: accept: {e}"));
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("request");
        let got = s.read(&mut buf).expect("read request");
        assert!(got > 0, "connection {i}: no request");
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").expect("response");
        let got = c.read(&mut buf).expect("read response");
        assert!(got > 0, "connection {i}: no response");
        open.push(c);
        open.push(s);
    }
    println!("done");
    std::io::stdout().flush().unwrap();
    smp_tests::wait_for_stdin_close();
    drop(open);
}
