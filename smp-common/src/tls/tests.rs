extern crate std;
use std::vec::Vec;

use super::*;

/// A ClientHello record: a 32-byte session id, `ciphers` suites, then `exts` (type, body).
fn hello(ciphers: usize, exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0x03, 0x03]);
    body.extend_from_slice(&[7; 32]);
    body.push(32);
    body.extend_from_slice(&[9; 32]);
    body.extend_from_slice(&((2 * ciphers) as u16).to_be_bytes());
    body.extend(std::iter::repeat_n(0x13, 2 * ciphers));
    body.extend_from_slice(&[1, 0]);
    let mut ext = Vec::new();
    for (kind, data) in exts {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = std::vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = std::vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// An ALPN extension naming `protos`.
fn alpn(protos: &[&str]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for p in protos {
        list.push(p.len() as u8);
        list.extend_from_slice(p.as_bytes());
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    (16, data)
}

/// Walks `data` as the kernel does: four bytes at a time, at most [`HELLO_STEPS`] steps.
/// Returns the verdict and the steps taken ([`HELLO_STEPS`] + 1: the bound stopped it).
fn walk(data: &[u8]) -> (bool, usize) {
    walk_at(first8(data), data.len() as u64, data, 0)
}

/// The first 8 bytes of `data` (zeros past its end).
fn first8(data: &[u8]) -> [u8; 8] {
    let mut head = [0u8; 8];
    for (h, b) in head.iter_mut().zip(data) {
        *h = *b;
    }
    head
}

/// [`walk`] over `data` that holds the record from its offset `skip` on (a body read alone:
/// 5), the walk told `head` and `len` as the kernel's read program tells it.
fn walk_at(head: [u8; 8], len: u64, data: &[u8], skip: usize) -> (bool, usize) {
    let mut w = HelloWalk::new(&head, len);
    let mut steps = 0;
    while let Some(at) = w.next() {
        if steps == HELLO_STEPS {
            return (w.h2_only(), steps + 1);
        }
        let at = at as usize - skip;
        let b = data.get(at..at + 4);
        let mut four = [0u8; 4];
        if let Some(b) = b {
            four.copy_from_slice(b);
        }
        w.feed(four, b.is_some());
        steps += 1;
    }
    (w.h2_only(), steps)
}

fn sni() -> (u16, Vec<u8>) {
    (
        0,
        std::vec![0, 12, 0, 0, 9, b'o', b'u', b't', b'b', b'o', b'u', b'n', b'd', b'.'],
    )
}

#[test]
fn h2_alone_is_http2_inside() {
    let h = hello(
        3,
        &[
            sni(),
            (10, std::vec![0, 2, 0, 29]),
            alpn(&["h2"]),
            (43, std::vec![2, 3, 4]),
        ],
    );
    assert!(walk(&h).0);
}

#[test]
fn h2_beside_http1_concludes_nothing() {
    for protos in [
        &["h2", "http/1.1"][..],
        &["http/1.1", "h2"],
        &["http/1.0", "h2"],
    ] {
        let h = hello(16, &[sni(), alpn(protos)]);
        assert!(!walk(&h).0, "{protos:?}");
    }
}

#[test]
fn http1_alone_or_no_alpn_is_not_http2() {
    assert!(!walk(&hello(2, &[alpn(&["http/1.1"])])).0);
    assert!(!walk(&hello(2, &[sni(), (43, std::vec![2, 3, 4])])).0);
}

#[test]
fn other_names_beside_h2_keep_it_http2() {
    // Istio's sidecars offer their own names beside the protocol.
    let h = hello(8, &[alpn(&["istio-peer-exchange", "istio", "h2"])]);
    assert!(walk(&h).0);
}

#[test]
fn istio_names_say_the_protocol() {
    // Istio's sidecars offer the upstream's protocol under their own names (the `istio.alpn`
    // filter), with or without the plain name beside it.
    for (protos, h2) in [
        (&["istio-h2", "istio"][..], true),
        (&["istio-h2", "istio", "h2"], true),
        (&["istio-peer-exchange", "istio-h2", "istio"], true),
        (&["istio-http/1.1", "istio"], false),
        (&["istio-http/1.0", "istio", "http/1.0"], false),
        (&["istio-h2", "istio-http/1.1"], false),
        // Opaque TCP: nothing to conclude.
        (&["istio-peer-exchange", "istio"], false),
        (&["istio"], false),
    ] {
        let h = hello(4, &[sni(), alpn(protos)]);
        assert_eq!(walk(&h).0, h2, "{protos:?}");
    }
}

#[test]
fn h2_ending_the_data_is_read() {
    // ALPN the last extension, `h2` its last name: the hello's last three bytes.
    let h = hello(1, &[sni(), alpn(&["h2"])]);
    assert_eq!(&h[h.len() - 3..], &[2, b'h', b'2']);
    assert!(walk(&h).0);
}

#[test]
fn a_hello_cut_before_its_alpn_concludes_nothing() {
    let h = hello(4, &[(10, std::vec![0; 300]), alpn(&["h2"])]);
    assert!(!walk(&h[..200]).0);
    // The record's own length bounds the walk, whatever follows it in the data.
    let mut two = hello(4, &[sni()]);
    two.extend_from_slice(&hello(4, &[alpn(&["h2"])]));
    assert!(!walk(&two).0);
}

#[test]
fn not_a_hello_is_not_walked() {
    let mut h = hello(2, &[alpn(&["h2"])]);
    h[5] = 0x02; // a ServerHello
    assert_eq!(walk(&h), (false, 0));
    h[0] = 0x17;
    h[5] = 0x01;
    assert_eq!(walk(&h), (false, 0));
}

#[test]
fn many_extensions_end_within_the_step_bound() {
    let mut exts: Vec<(u16, Vec<u8>)> = (0..60).map(|i| (100 + i, std::vec![0; 3])).collect();
    exts.push(alpn(&["h2"]));
    let (h2, steps) = walk(&hello(2, &exts));
    // The offer beyond the bound is not seen: nothing concluded, and the walk stops.
    assert_eq!((h2, steps), (false, HELLO_STEPS + 1));
    // Within it, seen.
    let mut exts: Vec<(u16, Vec<u8>)> = (0..30).map(|i| (100 + i, std::vec![0; 3])).collect();
    exts.push(alpn(&["h2"]));
    assert!(walk(&hello(2, &exts)).0);
}

#[test]
fn hostile_lengths_end_the_walk() {
    // Lengths pointing past the data, or zero-length names forever: it ends, concluding
    // nothing it did not read.
    let mut h = hello(2, &[alpn(&["h2"])]);
    h[44 + 32] = 0xff; // cipher suites' length
    assert_eq!(walk(&h), (false, 2));
    // An ALPN extension claiming 200 bytes of zero-length names: bounded by the data.
    let zeros = hello(2, &[(16, std::vec![0, 200, 0, 0, 0, 0])]);
    let (h2, steps) = walk(&zeros);
    assert!(!h2 && steps < HELLO_STEPS, "{steps}");
}

/// A server's TLS library that reads the record's 5-byte header alone, then its body (OpenSSL,
/// BoringSSL: Envoy): the body's walk, told the header's length, concludes what the whole
/// record's does.
#[test]
fn a_body_read_after_its_header_walks_as_the_whole_record() {
    for (protos, want) in [
        (&["h2"][..], true),
        (&["istio", "h2"], true),
        (&["h2", "http/1.1"], false),
    ] {
        let h = hello(3, &[sni(), alpn(protos)]);
        let header = first8(&h[..5]);
        let body = &h[5..];
        let head = body_head(record_len(&header), &first8(body));
        assert_eq!(head, first8(&h), "{protos:?}");
        let whole = walk(&h);
        assert_eq!(whole.0, want, "{protos:?}");
        assert_eq!(
            walk_at(head, 5 + body.len() as u64, body, 5),
            whole,
            "{protos:?}"
        );
        // The body cut short by the read's length: nothing concluded past it.
        assert!(!walk_at(head, 5 + 60, &body[..60], 5).0, "{protos:?}");
    }
    // A body that is no ClientHello (another handshake message) is not walked.
    let head = body_head(200, &[0x02, 0, 0, 196, 3, 3, 0, 0]);
    assert_eq!(walk_at(head, 205, &[0; 200], 5), (false, 0));
}
