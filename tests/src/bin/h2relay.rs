//! Test workload: a single-threaded relay that answers several HTTP/2 streams in one write,
//! as a proxy's connection writer does when responses become ready together.
//!
//! `h2relay <upstream>`: listens on a loopback port, prints `ready <port>`, accepts one
//! plaintext HTTP/2 connection. Then, round after round: one read of the client's frames
//! (the first with its preface), each HEADERS frame a request; each request forwarded as
//! `GET /<stream id>` on a fresh HTTP/1.1 connection to `<upstream>`, in frame order; each
//! response read, in the same order; then **one write** to the client holding a HEADERS
//! frame (END_STREAM) for every stream of the round. A round of exactly two streams is
//! answered in two writes from one buffer, one frame each: the first write's buffer holds
//! the second's frame past its length. Exits when the client closes.
//! No HPACK: the kernel walks frame headers only, never a payload.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
};

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_LEN: usize = 24;

fn main() {
    let upstream = std::env::args().nth(1).expect("usage: h2relay <upstream>");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("ready {}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let (mut down, _) = listener.accept().expect("accept");
    let mut buf = vec![0u8; 1 << 16];
    let mut first = true;
    loop {
        let n = down.read(&mut buf).expect("read client");
        if n == 0 {
            return;
        }
        let mut at = if first { PREFACE_LEN } else { 0 };
        first = false;
        let mut streams = Vec::new();
        while at + 9 <= n {
            let len = u32::from_be_bytes([0, buf[at], buf[at + 1], buf[at + 2]]) as usize;
            let stream = u32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]])
                & 0x7fff_ffff;
            if buf[at + 3] == 1 {
                streams.push(stream);
            }
            at += 9 + len;
        }
        assert_eq!(at, n, "one read of whole frames");
        let mut ups: Vec<TcpStream> = streams
            .iter()
            .map(|s| {
                let mut u = TcpStream::connect(&upstream).expect("connect upstream");
                // One write: one message, whole.
                let req = format!("GET /{s} HTTP/1.1\r\nhost: app\r\n\r\n");
                u.write_all(req.as_bytes()).expect("forward");
                u
            })
            .collect();
        for u in &mut ups {
            let mut resp = [0u8; 512];
            let got = u.read(&mut resp).expect("read response");
            assert!(resp[..got].starts_with(b"HTTP/1.1 200"), "a response");
        }
        let mut out = Vec::new();
        for s in &streams {
            // HEADERS, 1 byte of payload, END_STREAM | END_HEADERS.
            out.extend_from_slice(&[0, 0, 1, 1, 0x5]);
            out.extend_from_slice(&s.to_be_bytes());
            out.push(0x88);
        }
        if streams.len() == 2 {
            down.write_all(&out[..10]).expect("answer");
            down.write_all(&out[10..]).expect("answer");
        } else {
            down.write_all(&out).expect("answer");
        }
    }
}
