//! Host tests of the pairing rules: each test names the state it covers.

extern crate std;
use std::vec::Vec;

use super::*;
use crate::hop::{
    DIR_NONE, DIR_OUT, HINT_GUESSED, SOCK_AGED, SOCK_H2, SOCK_MUX, SOCK_STREAM, SOCK_TLS,
};

/// Socket states by inode (the test's `SOCK_STATE`).
struct Socks(Vec<(u64, SockState)>);

impl SockStates for Socks {
    fn get(&self, ino: u64) -> Option<&SockState> {
        self.0.iter().find(|(i, _)| *i == ino).map(|(_, s)| s)
    }
}

/// The downstream writing the response, its request read at `D_IN`, the write at `T_OUT`.
const D: u64 = 100;
const D_IN: u64 = 10;
const T_OUT: u64 = 100;
/// The downstream's namespace: unknown (every test but the namespace ones).
const NET: u64 = 0;

/// An upstream whose request forward entered at `out_start` and whose response read
/// returned at `in_start` (current, not forwarded).
fn up(out_start: u64, in_start: u64) -> SockState {
    SockState {
        role: ROLE_UPSTREAM,
        last_dir: DIR_IN,
        out_start,
        in_start,
        ..SockState::default()
    }
}

fn slot(ino: u64, t_in: u64, hint: u64) -> FwdSlot {
    FwdSlot { ino, t_in, hint }
}

/// A queue holding `slots` from index `base`, its batch starting at `base + batch`.
fn queue(base: u32, slots: &[FwdSlot], batch: u32) -> FwdQueue {
    let mut q = FwdQueue {
        head: base,
        tail: base,
        batch: base,
        ..FwdQueue::default()
    };
    for s in slots {
        if let Some(x) = q.slots.get_mut(q.tail as usize & (FWD_SLOTS - 1)) {
            *x = *s;
        }
        q.tail = q.tail.wrapping_add(1);
    }
    q.batch = base.wrapping_add(batch);
    q
}

/// Upstreams 1..=n, each fitting `D`'s write: forward at 20 + i, response at 40 + i.
fn fitting(n: u64) -> Socks {
    Socks((1..=n).map(|i| (i, up(20 + i, 40 + i))).collect())
}

fn s(i: u64) -> FwdSlot {
    slot(i, 40 + i, 0)
}

fn hinted(i: u64) -> FwdSlot {
    slot(i, 40 + i, D)
}

fn no_adjacency() -> Option<FwdSlot> {
    None
}

#[test]
fn classify_first_bytes() {
    let b = |s: &[u8]| {
        let mut out = [0u8; 8];
        out[..s.len()].copy_from_slice(s);
        out
    };
    let cases: [(&[u8], u64, Class); 17] = [
        (b"GET / HT", 100, Class::HttpRequest),
        (b"POST /x ", 100, Class::HttpRequest),
        (b"PUT /x H", 100, Class::HttpRequest),
        (b"HEAD / H", 100, Class::HttpRequest),
        (b"DELETE /", 100, Class::HttpRequest),
        (b"PATCH /x", 100, Class::HttpRequest),
        (b"OPTIONS ", 100, Class::HttpRequest),
        (b"HTTP/1.1", 100, Class::HttpResponse),
        (b"PRI * HT", 24, Class::H2Preface),
        (b"GET", 3, Class::Other),
        (b"{\"a\":1}", 7, Class::Other),
        // TLS records: handshake with a ClientHello (type 1), another handshake message,
        // a header read alone (5 bytes: taken for a ClientHello), CCS, alert.
        (
            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01],
            517,
            Class::TlsControl(true),
        ),
        (
            &[0x16, 0x03, 0x03, 0x00, 0x7a, 0x02],
            127,
            Class::TlsControl(false),
        ),
        (&[0x16, 0x03, 0x03, 0x00, 0x7a], 5, Class::TlsControl(true)),
        (
            &[0x14, 0x03, 0x03, 0x00, 0x01, 0x01],
            6,
            Class::TlsControl(false),
        ),
        // Application data (also a TLS 1.3 session ticket, encrypted) is not a control
        // record, but says the connection is TLS; a header shorter than 5 bytes is not a
        // record.
        (&[0x17, 0x03, 0x03, 0x00, 0x20], 37, Class::TlsData),
        (&[0x17, 0x03, 0x03, 0x00], 4, Class::Other),
    ];
    for (bytes, len, want) in cases {
        assert_eq!(classify(&b(bytes), len), want, "{bytes:?} len {len}");
    }
    assert_eq!(
        classify(&b(&[0x15, 0x03, 0x03, 0, 2]), 7),
        Class::TlsControl(false)
    );
    assert_eq!(classify(&b(&[0x16, 0x03, 0x01, 0]), 4), Class::Other);
}

#[test]
fn roles_from_first_bytes() {
    use Class::*;
    let cases = [
        (HttpRequest, true, ROLE_DOWNSTREAM),
        (H2Preface, true, ROLE_DOWNSTREAM),
        (HttpResponse, false, ROLE_DOWNSTREAM),
        (HttpRequest, false, ROLE_UPSTREAM),
        (H2Preface, false, ROLE_UPSTREAM),
        (HttpResponse, true, ROLE_UPSTREAM),
        (Other, true, ROLE_UNKNOWN),
        (Other, false, ROLE_UNKNOWN),
    ];
    for (class, ingress, want) in cases {
        assert_eq!(
            role_from_http(class, ingress),
            want,
            "{class:?} ingress {ingress}"
        );
    }
    assert_eq!(role_from_tls(true, true), ROLE_DOWNSTREAM);
    assert_eq!(role_from_tls(true, false), ROLE_UPSTREAM);
    assert_eq!(role_from_tls(false, true), ROLE_UNKNOWN);
    assert_eq!(role_from_tls(false, false), ROLE_UNKNOWN);
}

#[test]
fn fit_of_a_queued_response_per_upstream_state() {
    let current = up(20, 40);
    let cases: [(&str, Option<SockState>, u64, u64, Fit); 9] = [
        (
            "upstream state gone (evicted or closed)",
            None,
            D_IN,
            T_OUT,
            Fit::Dead,
        ),
        (
            "upstream read a newer response",
            Some(SockState {
                in_start: 45,
                ..current
            }),
            D_IN,
            T_OUT,
            Fit::Dead,
        ),
        (
            "upstream wrote since (next request)",
            Some(SockState {
                last_dir: DIR_OUT,
                ..current
            }),
            D_IN,
            T_OUT,
            Fit::Dead,
        ),
        (
            "response already forwarded by another thread",
            Some(SockState {
                fwd_in: 40,
                ..current
            }),
            D_IN,
            T_OUT,
            Fit::Dead,
        ),
        // The ordering that mis-paired: the response's request was forwarded before this
        // downstream's request was read, so it is another downstream's.
        (
            "request forwarded before this downstream's request read",
            Some(current),
            25,
            T_OUT,
            Fit::Other,
        ),
        // A TLS 1.3 server writing session tickets: its downstream read no request yet.
        (
            "downstream read no request (session tickets)",
            Some(current),
            0,
            T_OUT,
            Fit::Other,
        ),
        (
            "response read after this write entered",
            Some(current),
            D_IN,
            39,
            Fit::Other,
        ),
        (
            "upstream forwarded a request after this response was read",
            Some(up(50, 40)),
            D_IN,
            T_OUT,
            Fit::Other,
        ),
        ("current and in order", Some(current), D_IN, T_OUT, Fit::Yes),
    ];
    for (what, u, d_in, t_out, want) in cases {
        let got = fit(&slot(1, 40, 0), u.as_ref(), d_in, t_out);
        assert_eq!(got, want, "{what}");
    }
    assert!(waiting(&slot(1, 40, 0), Some(&current)));
    assert!(!waiting(&slot(0, 40, 0), Some(&current)), "taken slot");
    assert!(!waiting(&slot(1, 40, 0), None), "gone upstream");
}

#[test]
fn adjacency_per_state() {
    let u = up(20, 40);
    let want = Some(slot(7, 40, 0));
    assert_eq!(
        adjacent(7, Some(&u), D, D_IN, T_OUT, NET),
        want,
        "current, in order"
    );
    assert_eq!(
        adjacent(0, Some(&u), D, D_IN, T_OUT, NET),
        None,
        "thread read no response"
    );
    assert_eq!(
        adjacent(D, Some(&u), D, D_IN, T_OUT, NET),
        None,
        "its own downstream"
    );
    assert_eq!(
        adjacent(7, None, D, D_IN, T_OUT, NET),
        None,
        "upstream state gone"
    );
    let wrote = SockState {
        last_dir: DIR_OUT,
        ..u
    };
    assert_eq!(
        adjacent(7, Some(&wrote), D, D_IN, T_OUT, NET),
        None,
        "upstream wrote since"
    );
    let fwd = SockState { fwd_in: 40, ..u };
    assert_eq!(
        adjacent(7, Some(&fwd), D, D_IN, T_OUT, NET),
        None,
        "already forwarded"
    );
    assert_eq!(
        adjacent(7, Some(&u), D, 25, T_OUT, NET),
        None,
        "another downstream's request"
    );
    let with_hint = SockState { hint: 55, ..u };
    assert_eq!(
        adjacent(7, Some(&with_hint), D, D_IN, T_OUT, NET),
        Some(slot(7, 40, 55))
    );
}

#[test]
fn request_read_at_per_downstream_state() {
    let plain = SockState {
        in_start: 10,
        ..SockState::default()
    };
    assert_eq!(request_read_at(&plain), 10, "request read");
    let none = SockState::default();
    assert_eq!(
        request_read_at(&none),
        0,
        "no request read: forwards nothing"
    );
    // The client's last handshake flight and its first request in one read.
    let tls_first = SockState {
        flags: SOCK_TLS,
        hs_read: 7,
        ..SockState::default()
    };
    assert_eq!(
        request_read_at(&tls_first),
        7,
        "TLS, first request hidden in handshake read"
    );
    let tls_later = SockState {
        exchanges: 1,
        ..tls_first
    };
    assert_eq!(
        request_read_at(&tls_later),
        0,
        "TLS after its first exchange"
    );
    let tls_read = SockState {
        in_start: 12,
        ..tls_first
    };
    assert_eq!(request_read_at(&tls_read), 12, "TLS with a request read");
}

#[test]
fn exchange_rules() {
    assert!(in_order(1, 2, 3, 4));
    assert!(in_order(1, 1, 1, 1), "equal times are in order");
    assert!(!in_order(0, 2, 3, 4), "no request read");
    assert!(!in_order(2, 1, 3, 4), "forward before read");
    assert!(!in_order(1, 3, 2, 4), "response before forward");
    assert!(!in_order(1, 2, 4, 3), "written before read");
    let tls = SockState {
        flags: SOCK_TLS,
        ..SockState::default()
    };
    let tls_done = SockState {
        exchanges: 1,
        ..tls
    };
    let plain = SockState::default();
    let h2 = SockState {
        flags: SOCK_H2,
        ..SockState::default()
    };
    assert!(
        first_tls_exchange(&tls, &plain),
        "TLS downstream, first exchange"
    );
    assert!(
        first_tls_exchange(&plain, &tls),
        "TLS upstream, first exchange"
    );
    assert!(
        !first_tls_exchange(&tls_done, &tls_done),
        "TLS both sides done"
    );
    assert!(!first_tls_exchange(&plain, &h2), "no TLS");
}

#[test]
fn claimable_per_downstream_state() {
    let d = SockState {
        last_dir: DIR_IN,
        in_start: 10,
        ..SockState::default()
    };
    assert!(claimable(&d, 20), "waiting, unclaimed");
    assert!(
        !claimable(&SockState { claimed: 10, ..d }, 20),
        "claimed by a forward"
    );
    assert!(
        !claimable(
            &SockState {
                last_dir: DIR_OUT,
                ..d
            },
            20
        ),
        "answered"
    );
    assert!(
        !claimable(
            &SockState {
                last_dir: DIR_NONE,
                ..d
            },
            20
        ),
        "handshake read last"
    );
    assert!(!claimable(&d, 9), "read after this forward");
}

/// A TLS downstream shows HTTP/2 inside when a second forward finds its request in flight
/// claimed; not when that request was answered, not yet claimed, or the connection is known
/// for what it is.
#[test]
fn a_second_forward_of_a_claimed_tls_request_shows_multiplexing() {
    let d = SockState {
        role: ROLE_DOWNSTREAM,
        flags: SOCK_TLS,
        last_dir: DIR_IN,
        in_start: 10,
        claimed: 10,
        net: 7,
        ..SockState::default()
    };
    assert!(
        overlap_shows_mux(&d, 20, 7),
        "two requests in flight inside TLS"
    );
    assert!(overlap_shows_mux(&d, 20, 0), "upstream's namespace unknown");
    let not = [
        (
            SockState { claimed: 0, ..d },
            7,
            "its request not claimed yet",
        ),
        (
            SockState {
                last_dir: DIR_OUT,
                ..d
            },
            7,
            "answered since",
        ),
        (
            SockState { flags: 0, ..d },
            7,
            "plaintext: its requests are seen",
        ),
        (
            SockState {
                flags: SOCK_TLS | SOCK_MUX,
                ..d
            },
            7,
            "known already",
        ),
        (
            SockState {
                flags: SOCK_TLS | SOCK_H2,
                ..d
            },
            7,
            "HTTP/2 by its frames",
        ),
        (
            SockState {
                flags: SOCK_TLS | SOCK_STREAM,
                ..d
            },
            7,
            "a stream's state",
        ),
        (
            SockState {
                role: ROLE_UPSTREAM,
                ..d
            },
            7,
            "an upstream",
        ),
        (
            SockState {
                in_start: 0,
                claimed: 0,
                ..d
            },
            7,
            "nothing read",
        ),
        (d, 8, "another pod's namespace"),
    ];
    for (s, net, why) in not {
        assert!(!overlap_shows_mux(&s, 20, net), "{why}");
    }
    assert!(!overlap_shows_mux(&d, 9, 7), "read after this forward");
    // The thread's last request survives the claim that takes it from the list.
    let mut l = ThreadLast::default();
    l.push_request(5);
    l.push_request(6);
    assert_eq!(claim_all(&mut l), [5, 6]);
    assert_eq!(l.last_req, 6);
}

/// A TLS upstream shows HTTP/2 inside when a write that record alternation would take for
/// more of its request in flight is the writing thread's forward of another downstream's
/// waiting request; not when it is more of the same request's, or that request was claimed.
#[test]
fn a_write_forwarding_another_downstreams_request_shows_multiplexing() {
    let u = SockState {
        role: ROLE_UPSTREAM,
        flags: SOCK_TLS,
        last_dir: DIR_OUT,
        out_start: 15,
        hint: 1,
        ..SockState::default()
    };
    let d = SockState {
        role: ROLE_DOWNSTREAM,
        last_dir: DIR_IN,
        in_start: 18,
        ..SockState::default()
    };
    assert!(
        up_overlap_shows_mux(&u, 2, &d, 20),
        "a second request in flight"
    );
    let not = [
        (
            u,
            1,
            d,
            "more of the request in flight (its own downstream)",
        ),
        (u, 0, d, "the thread read no request"),
        (
            u,
            2,
            SockState { claimed: 18, ..d },
            "that request was forwarded",
        ),
        (
            u,
            2,
            SockState {
                last_dir: DIR_OUT,
                ..d
            },
            "that request was answered",
        ),
        (
            SockState {
                last_dir: DIR_IN,
                ..u
            },
            2,
            d,
            "a read since: a new request",
        ),
        (
            SockState { hint: 0, ..u },
            2,
            d,
            "its request's downstream unknown",
        ),
        (
            SockState { flags: 0, ..u },
            2,
            d,
            "plaintext: its requests are seen",
        ),
        (
            SockState {
                flags: SOCK_TLS | SOCK_MUX,
                ..u
            },
            2,
            d,
            "known already",
        ),
        (
            SockState {
                role: ROLE_DOWNSTREAM,
                ..u
            },
            2,
            d,
            "a downstream",
        ),
        (
            u,
            2,
            SockState {
                flags: SOCK_H2,
                ..d
            },
            "an HTTP/2 stream's request",
        ),
        (
            SockState { net: 7, ..u },
            2,
            SockState { net: 9, ..d },
            "another pod's request",
        ),
    ];
    for (u, d_ino, d, why) in not {
        assert!(!up_overlap_shows_mux(&u, d_ino, &d, 20), "{why}");
    }
    assert!(
        !up_overlap_shows_mux(&u, 2, &d, 17),
        "read after this write"
    );
}

/// Claims everything the thread read, oldest first.
fn claim_all(l: &mut ThreadLast) -> Vec<u64> {
    core::iter::from_fn(|| Some(l.claim(|_| ReqFit::Take).0).filter(|d| *d != 0)).collect()
}

#[test]
fn request_fifo_keeps_the_newest_in_order() {
    let mut l = ThreadLast::default();
    assert_eq!(l.claim(|_| ReqFit::Take).0, 0, "empty");
    let n = REQ_SLOTS as u64;
    for ino in 1..=n + 2 {
        l.push_request(ino);
    }
    let newest: Vec<u64> = (3..=n + 2).collect();
    assert_eq!(claim_all(&mut l), newest, "full: the oldest went");
    assert_eq!(l.req_head, l.req_tail, "claimed: the list is empty");
    // Indices wrap.
    let mut l = ThreadLast {
        req_head: u32::MAX - 1,
        req_tail: u32::MAX - 1,
        ..l
    };
    l.push_request(8);
    l.push_request(9);
    l.push_request(10);
    assert_eq!(claim_all(&mut l), [8, 9, 10]);
}

#[test]
fn a_forward_claims_the_oldest_waiting_request_of_its_namespace() {
    // Requests 1 (dead: already answered), 2 (another pod's), 3 and 4 (this pod's).
    let mut l = ThreadLast::default();
    for ino in 1..=4 {
        l.push_request(ino);
    }
    let fit = |d: u64| match d {
        1 => ReqFit::Dead,
        2 => ReqFit::Elsewhere,
        _ => ReqFit::Take,
    };
    assert_eq!(
        l.claim(fit).0,
        3,
        "the dead one passed, the other pod's kept"
    );
    assert_eq!(
        l.req_head, 1,
        "the list starts at the request still waiting"
    );
    assert_eq!(l.claim(fit).0, 4);
    // The other pod's forward finds its request, in order.
    assert_eq!(
        l.claim(|d| if d == 2 { ReqFit::Take } else { ReqFit::Dead })
            .0,
        2
    );
    assert_eq!(l.req_head, l.req_tail);
    // Nothing of this namespace: nothing claimed, nothing lost.
    l.push_request(7);
    assert_eq!(l.claim(|_| ReqFit::Elsewhere).0, 0);
    assert_eq!(l.claim(|_| ReqFit::Take).0, 7);
}

#[test]
fn a_claim_is_a_guess_while_another_request_waits_with_it() {
    let mut l = ThreadLast::default();
    l.push_request(1);
    assert_eq!(
        l.claim(|_| ReqFit::Take),
        (1, false),
        "one waiting: no choice"
    );
    // Two held at once: the first claim chose, and the second inherits its choice.
    l.push_request(2);
    l.push_request(3);
    assert_eq!(l.claim(|_| ReqFit::Take), (2, true), "3 waits with it");
    assert_eq!(l.claim(|_| ReqFit::Take), (3, true), "alone, after a guess");
    // The list was empty: the next request alone is sure again.
    l.push_request(4);
    assert_eq!(l.claim(|_| ReqFit::Take), (4, false));
    // A forward that finds nothing ends the guessing too.
    l.push_request(5);
    l.push_request(6);
    assert_eq!(l.claim(|_| ReqFit::Take), (5, true));
    assert_eq!(
        l.claim(|_| ReqFit::Dead),
        (0, false),
        "6 answered elsewhere"
    );
    l.push_request(7);
    assert_eq!(l.claim(|_| ReqFit::Take), (7, false));
}

#[test]
fn a_guessed_hint_is_marked_on_its_slot_unless_hints_are_trusted() {
    let u = SockState {
        hint: 0x7fff_ffff_0000_0042,
        hint_guessed: 1,
        ..SockState::default()
    };
    let s = FwdSlot::read(9, 3, &u, 0);
    assert!(s.guessed());
    assert_eq!(s.hinted_to(), u.hint, "a stream key's hint survives");
    // The hinted search never takes it.
    let socks = Socks(std::vec![(9, up(1, 3))]);
    let mut q = queue(0, &[s], 0);
    assert_eq!(q.find(0, 4, u.hint, 1, 5, true, &socks), None);
    assert_eq!(q.find(0, 4, u.hint, 1, 5, false, &socks), Some(0));
    // Trusted hints are taken as claimed; a claim with no choice is no guess.
    let trusted = FwdSlot::read(9, 3, &u, 1);
    assert_eq!((trusted.guessed(), trusted.hint), (false, u.hint));
    let sure = FwdSlot::read(
        9,
        3,
        &SockState {
            hint_guessed: 0,
            ..u
        },
        0,
    );
    assert_eq!((sure.guessed(), sure.hint), (false, u.hint));
}

#[test]
fn a_response_read_in_another_pod_is_not_forwarded_here() {
    // A node proxy: upstream 1 is in this downstream's pod (namespace A), upstream 2 in
    // another's (B); both responses are current and in order for the write.
    const A: u64 = 0xffff_8880_0000_1000;
    const B: u64 = 0xffff_8880_0000_2000;
    let mut socks = fitting(2);
    socks.0[0].1.net = A;
    socks.0[1].1.net = B;
    assert_eq!(adjacent(2, socks.get(2), D, D_IN, T_OUT, A), None);
    assert!(adjacent(1, socks.get(1), D, D_IN, T_OUT, A).is_some());
    assert!(
        adjacent(2, socks.get(2), D, D_IN, T_OUT, 0).is_some(),
        "unknown: no constraint"
    );
    // The other pod's response, the batch's oldest, is not this write's: the write stays
    // unpaired and the response waits for its own downstream.
    let mut q = queue(0, &[s(2), s(1)], 0);
    let (got, _) = pick(&mut q, D, D_IN, T_OUT, A, false, &socks, no_adjacency);
    assert_eq!(got, None);
    assert_eq!(q.slots[0], s(2), "kept for its own downstream");
    let (got, by) = pick(&mut q, D, D_IN, T_OUT, B, false, &socks, no_adjacency);
    assert_eq!(
        (got, by),
        (Some(s(2)), PAIRED_BY_BATCH),
        "its own pod's write takes it"
    );
    // Across threads: the one fitting response is another pod's: none.
    assert_eq!(sole(&pool(&[s(2)]), D, D_IN, T_OUT, A, &socks), Sole::None);
    assert_eq!(
        sole(&pool(&[s(1)]), D, D_IN, T_OUT, A, &socks),
        Sole::One(s(1))
    );
}

#[test]
fn a_socket_older_than_the_probes_takes_its_role_from_its_ports() {
    let role = |local, remote| role_from_ports(local, remote, 32768, 60999);
    // ztunnel's HBONE: the client pod's end connected from an ephemeral port to 15008; the
    // server pod's end accepted it.
    assert_eq!(role(41234, 15008), ROLE_UPSTREAM);
    assert_eq!(role(15008, 41234), ROLE_DOWNSTREAM);
    assert_eq!(role(60999, 443), ROLE_UPSTREAM, "the range's last port");
    assert_eq!(role(8080, 32768), ROLE_DOWNSTREAM, "the range's first port");
    // Both or neither ephemeral: no guess.
    assert_eq!(role(40000, 41000), ROLE_UNKNOWN);
    assert_eq!(role(8080, 15006), ROLE_UNKNOWN);
    // A range not known: no guess.
    assert_eq!(role_from_ports(41234, 15008, 0, 0), ROLE_UNKNOWN);
}

#[test]
fn a_first_read_naming_nothing_says_the_handshake_was_unseen() {
    use Class::*;
    let flags = |flags, in_start, class, new_msg| {
        let s = SockState {
            role: ROLE_DOWNSTREAM,
            flags,
            in_start,
            last_dir: if in_start == 0 { DIR_NONE } else { DIR_IN },
            ..SockState::default()
        };
        unseen_handshake_flags(&s, class, true, new_msg)
    };
    // Accepted while its process was not tracked yet (its role known, nothing else), or
    // opened before the probes: its first read a record of application data.
    assert_eq!(flags(0, 0, TlsData, true), SOCK_AGED | SOCK_TLS);
    // Its first read a record's body after the header (BoringSSL reads them apart): aged;
    // TLS at its next message, not at the next record's header read that continues it.
    assert_eq!(flags(0, 0, Other, true), SOCK_AGED);
    assert_eq!(flags(SOCK_AGED, 10, TlsData, false), SOCK_AGED);
    assert_eq!(flags(SOCK_AGED, 10, TlsData, true), SOCK_AGED | SOCK_TLS);
    assert_eq!(flags(SOCK_AGED, 10, Other, true), SOCK_AGED);
    // Its handshake seen: TLS already, nothing to add.
    assert_eq!(flags(SOCK_TLS, 0, TlsData, true), 0);
    // HTTP in the clear first: later bytes starting 0x17 0x03 are not a record.
    assert_eq!(flags(0, 0, HttpRequest, true), 0);
    for new_msg in [false, true] {
        assert_eq!(flags(0, 10, TlsData, new_msg), 0);
        assert_eq!(flags(0, 10, Other, new_msg), 0);
    }
    // Writes are not classified (every one is `Other`): a client's ClientHello, a request
    // in the clear, or a response written before the socket's first read tell nothing.
    let written = SockState {
        role: ROLE_UPSTREAM,
        last_dir: DIR_OUT,
        ..SockState::default()
    };
    assert_eq!(unseen_handshake_flags(&written, Other, false, true), 0);
    assert_eq!(
        unseen_handshake_flags(&SockState::default(), Other, false, true),
        0
    );
    // A first read after writes only (an accepted socket tracked as it wrote a response).
    assert_eq!(
        unseen_handshake_flags(&written, TlsData, true, true),
        SOCK_AGED | SOCK_TLS
    );
    // Plain HTTP/2 (its preface seen): a frame whose length starts 0x17 0x03 (1.5 MB, a
    // raised SETTINGS_MAX_FRAME_SIZE) is not a record.
    assert_eq!(flags(SOCK_H2, 0, TlsData, true), 0);
    assert_eq!(flags(SOCK_H2, 0, Other, true), 0);
}

#[test]
fn namespaces_match_when_equal_or_unknown() {
    assert!(same_netns(0xffff_8880_0000_1000, 0xffff_8880_0000_1000));
    assert!(!same_netns(0xffff_8880_0000_1000, 0xffff_8880_0000_2000));
    assert!(
        same_netns(0, 0xffff_8880_0000_2000),
        "unknown: no constraint"
    );
    assert!(same_netns(0xffff_8880_0000_1000, 0));
}

#[test]
fn queue_push_starts_a_batch_after_a_write() {
    let socks = fitting(3);
    let mut q = FwdQueue::default();
    assert!(!q.push(s(1), &socks));
    assert_eq!((q.head, q.tail, q.batch), (0, 1, 0));
    q.wrote = 1;
    assert!(!q.push(s(2), &socks));
    assert_eq!(
        (q.batch, q.wrote),
        (1, 0),
        "first read after a write: new batch"
    );
    assert!(!q.push(s(3), &socks));
    assert_eq!((q.batch, q.tail), (1, 3), "same batch");
    assert!(q.in_batch(1, q.batch_start()) && q.in_batch(2, q.batch_start()));
    assert!(!q.in_batch(0, q.batch_start()) && !q.in_batch(3, q.batch_start()));
}

#[test]
fn queue_overflow_counts_only_a_waiting_response() {
    let socks = fitting(1);
    // Full of responses of upstream 1, all current (same t_in): the oldest is lost.
    let mut q = queue(0, &[s(1); FWD_SLOTS], 0);
    assert!(q.push(s(1), &socks), "full, oldest still waiting: lost");
    assert_eq!((q.head, q.tail), (1, FWD_SLOTS as u32 + 1));
    // Full, the oldest taken: nothing lost.
    let mut slots = [s(1); FWD_SLOTS];
    slots[0].ino = 0;
    let mut q = queue(0, &slots, 0);
    assert!(!q.push(s(1), &socks), "oldest taken");
    // Full, the oldest superseded (its upstream read a newer response).
    slots[0] = slot(1, 5, 0);
    let mut q = queue(0, &slots, 0);
    assert!(!q.push(s(1), &socks), "oldest superseded");
    // The batch is dropped past: it is empty.
    let mut q = queue(0, &[s(1); FWD_SLOTS], 0);
    q.head = 3;
    assert_eq!(q.batch_start(), q.tail, "batch dropped past: empty");
}

#[test]
fn pick_hinted_in_batch_by_hint() {
    let socks = fitting(2);
    let mut q = queue(0, &[s(1), hinted(2)], 0);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (Some(hinted(2)), PAIRED_BY_HINT));
    assert_eq!(q.wrote, 1);
    assert_eq!(q.head, 0, "the oldest still waits");
}

#[test]
fn pick_hinted_before_batch_trusted_by_hint() {
    let socks = fitting(2);
    let mut q = queue(0, &[hinted(1), s(2)], 1);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, true, &socks, || unreachable!());
    assert_eq!(got, (Some(hinted(1)), PAIRED_BY_HINT));
    assert_eq!(q.head, 1, "taken slot dropped at the head");
}

/// [`hinted`], the claim behind the hint a guess ([`ThreadLast::claim`]).
fn guessed(i: u64) -> FwdSlot {
    slot(i, 40 + i, D | HINT_GUESSED)
}

#[test]
fn pick_guessed_hint_in_batch_untrusted_takes_batch_oldest() {
    let socks = fitting(2);
    let mut q = queue(0, &[s(1), guessed(2)], 0);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (Some(s(1)), PAIRED_BY_BATCH));
}

#[test]
fn pick_guessed_hint_alone_in_batch_untrusted_by_batch() {
    let socks = fitting(2);
    let mut q = queue(0, &[s(1), guessed(2)], 1);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (Some(guessed(2)), PAIRED_BY_BATCH));
}

#[test]
fn pick_hinted_before_batch_untrusted_takes_batch_oldest() {
    let socks = fitting(3);
    let mut q = queue(0, &[hinted(1), s(2), s(3)], 1);
    let got = pick(
        &mut q,
        D,
        D_IN,
        T_OUT,
        NET,
        false,
        &socks,
        || unreachable!(),
    );
    assert_eq!(got, (Some(s(2)), PAIRED_BY_BATCH));
    assert_eq!(q.head, 0, "the hinted one stays");
}

#[test]
fn pick_empty_batch_trusted_stays_unpaired() {
    let socks = fitting(1);
    let mut q = queue(0, &[s(1)], 1);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, true, &socks, || unreachable!());
    assert_eq!(got, (None, PAIRED_BY_OLDEST));
    assert_eq!((q.head, q.tail), (0, 1), "the response stays queued");
}

#[test]
fn pick_empty_batch_untrusted_takes_adjacency() {
    let socks = fitting(1);
    let mut q = queue(0, &[s(1)], 1);
    let adj = slot(9, 50, 0);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, || Some(adj));
    assert_eq!(got, (Some(adj), PAIRED_BY_ADJACENCY));
    assert_eq!((q.head, q.tail), (0, 1), "queue untouched");
    assert_eq!(q.slots[0], s(1));
}

#[test]
fn pick_empty_batch_no_adjacency_takes_hint_outside_batch() {
    let socks = fitting(2);
    let mut q = queue(0, &[s(1), hinted(2)], 2);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (Some(hinted(2)), PAIRED_BY_HINT));
}

#[test]
fn pick_empty_batch_no_adjacency_guessed_hint_takes_queue_oldest() {
    let socks = fitting(2);
    let mut q = queue(0, &[s(1), guessed(2)], 2);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (Some(s(1)), PAIRED_BY_OLDEST));
}

#[test]
fn pick_empty_batch_no_adjacency_no_hint_takes_queue_oldest() {
    let socks = fitting(2);
    let mut q = queue(0, &[s(1), s(2)], 2);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (Some(s(1)), PAIRED_BY_OLDEST));
    assert_eq!(q.head, 1);
}

#[test]
fn pick_nothing_fits_leaves_others_queued() {
    // Upstream 1's request was forwarded before D's request was read: another's response.
    let socks = Socks([(1, up(5, 41))].into());
    let mut q = queue(0, &[s(1)], 0);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (None, PAIRED_BY_OLDEST));
    assert_eq!(q.slots[0], s(1), "left for its own downstream");
    assert_eq!(q.head, 0);
}

#[test]
fn pick_no_request_read_forwards_nothing() {
    // A TLS 1.3 server's session tickets written on a downstream that read no request.
    let socks = fitting(1);
    let mut q = queue(0, &[s(1)], 0);
    let got = pick(&mut q, D, 0, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (None, PAIRED_BY_OLDEST));
    assert_eq!(
        q.slots[0],
        s(1),
        "the real response stays for the real write"
    );
}

#[test]
fn pick_clears_dead_slots_and_drops_them_at_the_head() {
    let mut socks = fitting(3);
    socks.0.retain(|(i, _)| *i != 1); // upstream 1 gone
    socks.0[0].1.fwd_in = 42; // upstream 2's response forwarded elsewhere
    let mut q = queue(0, &[s(1), s(2), s(3)], 0);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (Some(s(3)), PAIRED_BY_BATCH));
    assert_eq!((q.head, q.tail), (3, 3), "dead and taken slots dropped");
}

#[test]
fn pick_skips_its_own_downstream() {
    let socks = Socks([(D, up(20, 41)), (2, up(22, 42))].into());
    let mut q = queue(0, &[slot(D, 41, 0), s(2)], 0);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (Some(s(2)), PAIRED_BY_BATCH));
}

#[test]
fn pick_windows_bound_each_search() {
    // 20 responses that fit nobody (forwarded before D's request), then one hinted to D
    // and one fitting: beyond the hint window (16) and the oldest window (16).
    let mut socks: Vec<(u64, SockState)> = (1..=20).map(|i| (i, up(5, 40 + i))).collect();
    socks.push((21, up(41, 61)));
    socks.push((22, up(42, 62)));
    let socks = Socks(socks);
    let mut slots: Vec<FwdSlot> = (1..=20).map(s).collect();
    slots.push(slot(21, 61, D));
    slots.push(slot(22, 62, 0));
    // The batch starts at the hinted one: its window (4) sees it... but only as the batch's
    // oldest, since the hinted search (16 from the head) does not reach it.
    let mut q = queue(0, &slots, 20);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, true, &socks, || unreachable!());
    assert_eq!(got, (Some(slot(21, 61, D)), PAIRED_BY_BATCH));
    // A batch starting 5 before a fitting slot does not reach it (window 4), nor does the
    // oldest search from the head (16): unpaired.
    let mut q = queue(0, &slots, 16);
    q.slots[20].hint = 0;
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (None, PAIRED_BY_OLDEST));
}

#[test]
fn pick_indices_wrap() {
    let socks = fitting(3);
    let base = u32::MAX - 1;
    let mut q = queue(base, &[s(1), s(2), s(3)], 1);
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (Some(s(2)), PAIRED_BY_BATCH), "batch across the wrap");
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(got, (Some(s(3)), PAIRED_BY_BATCH));
    let got = pick(&mut q, D, D_IN, T_OUT, NET, false, &socks, no_adjacency);
    assert_eq!(
        got,
        (Some(s(1)), PAIRED_BY_OLDEST),
        "batch done: the queue's oldest"
    );
    assert_eq!(q.head, q.tail);
    assert_eq!(q.tail, 1);
}

/// A pool holding `slots`, pushed in order.
fn pool(slots: &[FwdSlot]) -> RespPool {
    let mut p = RespPool::default();
    for s in slots {
        p.push(*s);
    }
    p
}

#[test]
fn sole_takes_the_only_response_that_fits() {
    // Upstream 1 fits D; 2 was forwarded already; 3's request went out before D's request
    // was read (another downstream's); 4 is superseded (its current response is newer).
    let mut forwarded = up(22, 42);
    forwarded.fwd_in = 42;
    let mut socks = fitting(1);
    socks.0.push((2, forwarded));
    socks.0.push((3, up(5, 43)));
    socks.0.push((4, up(24, 60)));
    let p = pool(&[s(1), s(2), s(3), s(4)]);
    assert_eq!(sole(&p, D, D_IN, T_OUT, NET, &socks), Sole::One(s(1)));
    // Its own downstream's slot is never taken, gone upstreams fit nothing.
    assert_eq!(
        sole(&pool(&[s(9)]), D, D_IN, T_OUT, NET, &socks),
        Sole::None
    );
    assert_eq!(
        sole(&pool(&[slot(D, 40, 0)]), D, D_IN, T_OUT, NET, &socks),
        Sole::None
    );
    // A downstream that has read no request forwards nothing.
    assert_eq!(sole(&p, D, 0, T_OUT, NET, &socks), Sole::None);
    // The response read after the write began is not the one it forwards.
    assert_eq!(sole(&p, D, D_IN, 40, NET, &socks), Sole::None);
}

/// An HTTP/2-inside-TLS upstream's current message is any stream's: never the sole fit.
#[test]
fn sole_takes_no_response_of_a_multiplexed_upstream() {
    let mut socks = fitting(1);
    socks.0[0].1.flags |= SOCK_TLS | SOCK_MUX;
    assert_eq!(
        sole(&pool(&[s(1)]), D, D_IN, T_OUT, NET, &socks),
        Sole::None
    );
    // Beside a plain upstream's, it still makes two that fit: no guess.
    let mut two = fitting(2);
    two.0[0].1.flags |= SOCK_TLS | SOCK_MUX;
    assert_eq!(
        sole(&pool(&[s(1), s(2)]), D, D_IN, T_OUT, NET, &two),
        Sole::Ambiguous
    );
}

#[test]
fn sole_refuses_to_guess_between_two() {
    let socks = fitting(2);
    assert_eq!(
        sole(&pool(&[s(1), s(2)]), D, D_IN, T_OUT, NET, &socks),
        Sole::Ambiguous
    );
    // One response remembered twice is still one.
    assert_eq!(
        sole(&pool(&[s(1), s(1)]), D, D_IN, T_OUT, NET, &fitting(1)),
        Sole::One(s(1))
    );
}

#[test]
fn pool_keeps_the_newest_and_wraps() {
    let socks = fitting(POOL_SLOTS as u64 + 1);
    let all: Vec<FwdSlot> = (1..=POOL_SLOTS as u64 + 1).map(s).collect();
    let mut p = RespPool {
        tail: u32::MAX,
        ..RespPool::default()
    };
    for x in &all {
        p.push(*x);
    }
    assert_eq!(p.tail, POOL_SLOTS as u32);
    // Slot 1 was overwritten by the last push: only 2..=17 remain.
    assert!(p.slots.iter().all(|x| x.ino != 1));
    assert!(p.slots.iter().any(|x| x.ino == POOL_SLOTS as u64 + 1));
    let only_last = Socks(
        socks
            .0
            .into_iter()
            .map(|(i, mut st)| {
                if i != POOL_SLOTS as u64 + 1 {
                    st.fwd_in = st.in_start;
                }
                (i, st)
            })
            .collect(),
    );
    assert_eq!(
        sole(&p, D, D_IN, T_OUT, NET, &only_last),
        Sole::One(s(POOL_SLOTS as u64 + 1))
    );
}

#[test]
fn a_response_followed_by_the_next_without_a_forward_is_unforwarded() {
    // No response read yet on this upstream: nothing to miss.
    assert!(!unforwarded(&SockState::default()));
    // Its current response read at 50 and taken by a response write (`fwd_in`).
    let mut u = up(40, 50);
    u.fwd_in = 50;
    assert!(!unforwarded(&u), "forwarded");
    // An older response was forwarded, the current one not: the next one's read counts it.
    u.fwd_in = 30;
    assert!(unforwarded(&u), "current response never taken");
}

/// A Go `http.Transport` puts its upstream connection back in the pool once it has read the
/// response, before the handler writes the response on: the next request can go out on it
/// first. The overtaken response is held and still forwarded, with its own times.
#[test]
fn a_response_overtaken_by_the_next_request_is_held_and_still_forwarded() {
    // Request forwarded at 20 (returned at 23), response read at 40 (arrived 38, 300 bytes).
    let mut u = up(20, 40);
    u.out_sent = 23;
    u.in_arrival = 38;
    u.in_bytes = 300;
    let want = UpstreamTimes {
        req_out: 20,
        req_sent: 23,
        resp_in: 40,
        resp_arrival: 38,
        resp_bytes: 300,
        run_before: 0,
    };
    assert_eq!(waiting_response(&u, 40), Some(want));
    // The next request goes out at 50 before any write forwarded it: held, nothing given up.
    assert!(!hold_response(&mut u));
    u.out_start = 50;
    u.out_sent = 0;
    u.last_dir = DIR_OUT;
    assert!(!unforwarded(&u), "held, not lost");
    assert_eq!(
        waiting_response(&u, 40),
        Some(want),
        "its own times, not the next's"
    );
    let socks = Socks(std::vec![(1, u)]);
    let slot1 = slot(1, 40, D);
    assert_eq!(fit(&slot1, socks.get(1), D_IN, T_OUT), Fit::Yes);
    assert_eq!(
        adjacent(1, socks.get(1), D, D_IN, T_OUT, NET),
        Some(slot(1, 40, 0)),
        "the thread that read it forwards it"
    );
    assert_eq!(
        sole(&pool(&[slot1]), D, D_IN, T_OUT, NET, &socks),
        Sole::One(slot1)
    );
    // Its order still binds: a downstream whose request came after its forward cannot take it.
    assert_eq!(fit(&slot1, socks.get(1), 21, T_OUT), Fit::Other);
    // The next response arrives (read at 60); the held one is still waiting.
    u.last_dir = DIR_IN;
    u.in_start = 60;
    assert_eq!(waiting_response(&u, 40).map(|r| r.req_out), Some(20));
    assert_eq!(waiting_response(&u, 60).map(|r| r.req_out), Some(50));
    // Taken: dead everywhere, and the current response is untouched.
    mark_forwarded(&mut u, 40);
    assert_eq!(waiting_response(&u, 40), None);
    assert_eq!(fit(&slot1, Some(&u), D_IN, T_OUT), Fit::Dead);
    assert!(waiting_response(&u, 60).is_some());
    assert_eq!(u.fwd_in, 0);
}

/// A held response ages by one request forward on its connection; overtaken by more than
/// [`HELD_RESPONSES`] requests, it is given up (counted), whatever became of those after it.
#[test]
fn a_held_response_overtaken_too_often_is_given_up_and_counted() {
    let mut u = up(20, 40);
    assert!(!hold_response(&mut u));
    // Responses 2, 3, … are read and forwarded, each before its connection's next request:
    // response 1 stays held until the requests after it outnumber the holds.
    for k in 1..=HELD_RESPONSES as u64 {
        let (req, resp) = (20 + 40 * k, 40 + 40 * k);
        u.out_start = req;
        u.in_start = resp;
        u.last_dir = DIR_IN;
        mark_forwarded(&mut u, resp);
        assert_eq!(
            waiting_response(&u, 40).map(|r| r.req_out),
            Some(20),
            "held after {k} more requests"
        );
        let given_up = hold_response(&mut u);
        assert_eq!(given_up, k == HELD_RESPONSES as u64, "given up after {k}");
    }
    assert_eq!(
        u.held,
        [HeldResponse::default(); HELD_RESPONSES],
        "nothing else held"
    );
    assert_eq!(waiting_response(&u, 40), None);
    // A response forwarded before its upstream's next request is never held.
    let mut v = up(20, 40);
    mark_forwarded(&mut v, 40);
    assert!(!hold_response(&mut v));
    assert_eq!(v.held, [HeldResponse::default(); HELD_RESPONSES]);
    // Taken while it is still the socket's latest read: marked on both, never taken twice.
    let mut w = up(20, 40);
    hold_response(&mut w);
    w.last_dir = DIR_OUT;
    mark_forwarded(&mut w, 40);
    assert_eq!(waiting_response(&w, 40), None);
    assert!(!unforwarded(&w));
}

/// An event loop catching up after a stall reads a response, hands its connection to a
/// waiting request, reads that one's response and hands the connection on again, all before
/// the turn's one write forwards both responses: each keeps its own request, claim and times,
/// and the write takes both by the causal rule, in the order read.
#[test]
fn responses_overtaken_in_turn_on_one_connection_are_all_held_with_their_claims() {
    const M: u64 = 50;
    let mut u = SockState {
        mux_peer: M,
        mux_in: 10,
        mux_arrival: 9,
        ..up(20, 40)
    };
    let mut q = FwdQueue::default();
    q.push(slot(1, 40, 0), &Socks(std::vec![(1, u)]));
    let mut want = std::vec![(40, 20, 10)];
    for k in 1..=HELD_RESPONSES as u64 {
        // The next request (read at `read`) goes out at `req`, its response is read at `resp`.
        let (read, req, resp) = (10 + 40 * k, 20 + 40 * k, 40 + 40 * k);
        assert!(!hold_response(&mut u));
        u.out_start = req;
        u.mux_in = read;
        u.mux_arrival = read - 1;
        u.in_start = resp;
        u.last_dir = DIR_IN;
        q.push(slot(1, resp, 0), &Socks(std::vec![(1, u)]));
        want.push((resp, req, read));
    }
    let socks = Socks(std::vec![(1, u)]);
    for (resp, req, read) in want {
        assert_eq!(waiting_response(&u, resp).map(|r| r.req_out), Some(req));
        assert_eq!(
            mux_request(&u, resp),
            Some(MuxRequest {
                peer: M,
                read,
                arrival: read - 1
            })
        );
        // The turn's write, after them all.
        let i = q.find_causal(M, 0, 1_000, &socks);
        assert_eq!(
            q.take(i).map(|s| s.t_in),
            Some(resp),
            "taken in the order read"
        );
    }
}

#[test]
fn a_held_response_saturates_what_does_not_fit_its_fields() {
    let mut u = up(1, 10_000_000_000);
    u.in_arrival = 1;
    u.out_sent = 9_000_000_000;
    u.in_bytes = u64::MAX;
    hold_response(&mut u);
    u.last_dir = DIR_OUT;
    let r = waiting_response(&u, 10_000_000_000).expect("held");
    assert_eq!(r.resp_arrival, 10_000_000_000 - u64::from(u32::MAX));
    assert_eq!(r.req_sent, 1 + u64::from(u32::MAX));
    assert_eq!(r.resp_bytes, u64::from(u32::MAX));
}

/// A TLS 1.3 client can read the server's session tickets before its first request goes out:
/// they are no response, and held they could be taken by any downstream.
#[test]
fn a_tls_upstream_holds_nothing_before_its_first_exchange() {
    let mut u = up(20, 40);
    u.flags |= SOCK_TLS;
    assert!(!hold_response(&mut u));
    assert_eq!(
        u.held,
        [HeldResponse::default(); HELD_RESPONSES],
        "session tickets are not held"
    );
    u.exchanges = 1;
    assert!(!hold_response(&mut u));
    assert_eq!(
        u.held[0].in_start, 40,
        "after its first exchange, a response is"
    );
}

#[test]
fn an_arrival_is_its_stamp_unless_unknown_or_after_the_read() {
    assert_eq!(arrival(90, 100), 90);
    assert_eq!(arrival(100, 100), 100);
    assert_eq!(arrival(0, 100), 100, "unknown");
    assert_eq!(arrival(110, 100), 100, "the next message's stamp");
}

/// The causal rule of HTTP/2 inside TLS: a downstream whose request a write on the upstream
/// forwarded at 200 takes the upstream's last read, if it came after.
#[test]
fn mux_response_is_the_upstreams_last_read_after_the_forward() {
    let mut d = SockState {
        mux_peer: 7,
        mux_out: 200,
        ..SockState::default()
    };
    let mut u = SockState {
        mux_in: 350,
        mux_arrival: 340,
        in_bytes: 90,
        ..SockState::default()
    };
    assert_eq!(
        mux_response(&u, &d),
        Some(UpstreamTimes {
            req_out: 200,
            req_sent: 0,
            resp_in: 350,
            resp_arrival: 340,
            resp_bytes: 90,
            run_before: 0,
        })
    );
    // An arrival stamp after the read (another segment's) is no earlier than the read.
    u.mux_arrival = 400;
    assert_eq!(mux_response(&u, &d).map(|r| r.resp_arrival), Some(350));
    // Nothing read since the forward: no response yet.
    u.mux_in = 150;
    assert_eq!(mux_response(&u, &d), None);
    // No forward recorded: nothing to take.
    u.mux_in = 350;
    d.mux_out = 0;
    assert_eq!(mux_response(&u, &d), None);
}

/// The writes of an HTTP/2-inside-TLS upstream remember their return, the last
/// [`MUX_WRITES`] of them: a request forwarded by one of those is sent when it returned.
#[test]
fn a_mux_requests_send_is_its_writes_return_while_remembered() {
    let mut u = SockState {
        mux_in: 900,
        ..SockState::default()
    };
    let d = |out| SockState {
        mux_peer: 7,
        mux_out: out,
        ..SockState::default()
    };
    mux_write(&mut u, 100);
    mux_write(&mut u, 200);
    mux_write_returned(&mut u, 200, 230);
    // Not returned yet: unknown.
    assert_eq!(mux_response(&u, &d(100)).map(|r| r.req_sent), Some(0));
    assert_eq!(mux_response(&u, &d(200)).map(|r| r.req_sent), Some(230));
    mux_write_returned(&mut u, 100, 140);
    assert_eq!(mux_response(&u, &d(100)).map(|r| r.req_sent), Some(140));
    // A write returning at its entry still counts as returned (1 ns after: 0 means not yet).
    mux_write(&mut u, 300);
    mux_write_returned(&mut u, 300, 300);
    assert_eq!(mux_response(&u, &d(300)).map(|r| r.req_sent), Some(301));
    // Pushed out by MUX_WRITES later writes: forgotten.
    for t in 0..MUX_WRITES as u64 {
        mux_write(&mut u, 400 + t);
    }
    assert_eq!(mux_response(&u, &d(200)).map(|r| r.req_sent), Some(0));
    // A return of a write it never saw changes nothing.
    mux_write_returned(&mut u, 999, 1000);
    assert!(u.mux_sent_after.iter().all(|a| *a == 0));
}

/// The causal rule on an HTTP/2-inside-TLS downstream: a thread's reads of such downstreams
/// and its blocks say whether its next request forward is of the same turn as its last read.
#[test]
fn a_forward_in_the_turn_of_a_mux_read_claims_that_read() {
    const M: u64 = 50;
    let d = SockState {
        role: ROLE_DOWNSTREAM,
        flags: SOCK_MUX,
        mux_in: 300,
        ..SockState::default()
    };
    // A request forward on a connection that carried one before, in namespace `net`, its
    // alternation hint `hint`.
    let fwd = |net: u64, hint: u64| SockState {
        net,
        hint,
        out_start: 1,
        ..SockState::default()
    };
    let mut l = ThreadLast::default();
    assert_eq!(
        l.mux_claim(Some(&d), 0, 400, &fwd(NET, 0)),
        MuxClaim::NotJudged,
        "no read"
    );
    l.mux_read(M, 300, 7);
    assert_eq!(
        l.mux_claim(Some(&d), 7, 400, &fwd(NET, 0)),
        MuxClaim::Agrees(M)
    );
    // Its alternation hint naming the same downstream agrees; another one's is not judged
    // (a request read in the clear, forwarded by alternation).
    assert_eq!(
        l.mux_claim(Some(&d), 7, 400, &fwd(NET, M)),
        MuxClaim::Agrees(M)
    );
    assert_eq!(
        l.mux_claim(Some(&d), 7, 400, &fwd(NET, 9)),
        MuxClaim::NotJudged
    );
    // The thread blocked since its read: a later turn's forward. Not judged on a
    // connection's first request (its forward waits for the connection to open).
    assert_eq!(
        l.mux_claim(Some(&d), 8, 400, &fwd(NET, 0)),
        MuxClaim::Disagrees
    );
    let first = SockState {
        out_start: 0,
        ..fwd(NET, 0)
    };
    assert_eq!(l.mux_claim(Some(&d), 8, 400, &first), MuxClaim::NotJudged);
    assert_eq!(l.mux_claim(Some(&d), 7, 400, &first), MuxClaim::Agrees(M));
    // Another thread read the downstream since.
    let later = SockState { mux_in: 350, ..d };
    assert_eq!(
        l.mux_claim(Some(&later), 7, 400, &fwd(NET, 0)),
        MuxClaim::Disagrees
    );
    // A forward before the read (its entry raced the read's exit), a plain downstream, a
    // gone one, one in another namespace: not the rule's.
    assert_eq!(
        l.mux_claim(Some(&d), 7, 250, &fwd(NET, 0)),
        MuxClaim::NotJudged
    );
    let plain = SockState {
        flags: SOCK_TLS,
        ..d
    };
    assert_eq!(
        l.mux_claim(Some(&plain), 7, 400, &fwd(NET, 0)),
        MuxClaim::NotJudged
    );
    assert_eq!(l.mux_claim(None, 7, 400, &fwd(NET, 0)), MuxClaim::NotJudged);
    let away = SockState { net: 1, ..d };
    assert_eq!(
        l.mux_claim(Some(&away), 7, 400, &fwd(2, 0)),
        MuxClaim::NotJudged
    );
    // Two such downstreams read in one turn: ambiguous until the thread blocks.
    l.mux_read(M + 1, 300, 7);
    let d2 = SockState { mux_in: 300, ..d };
    assert_eq!(
        l.mux_claim(Some(&d2), 7, 400, &fwd(NET, 0)),
        MuxClaim::Disagrees
    );
    l.mux_read(M + 1, 300, 7);
    assert_eq!(
        l.mux_claim(Some(&d2), 7, 400, &fwd(NET, 0)),
        MuxClaim::Disagrees,
        "still that turn"
    );
    l.mux_read(M + 1, 300, 8);
    assert_eq!(
        l.mux_claim(Some(&d2), 8, 400, &fwd(NET, 0)),
        MuxClaim::Agrees(M + 1)
    );
    // Reads of one downstream in one turn are one turn's.
    l.mux_read(M + 1, 320, 8);
    let d3 = SockState { mux_in: 320, ..d };
    assert_eq!(
        l.mux_claim(Some(&d3), 8, 400, &fwd(NET, 0)),
        MuxClaim::Agrees(M + 1)
    );
}

/// A write on an HTTP/2-inside-TLS downstream finds, in its thread's queue, the responses
/// whose requests the causal rule claimed from it: each in order after its request's read,
/// the others left.
#[test]
fn a_mux_downstream_write_finds_the_responses_claimed_from_it() {
    const M: u64 = 50;
    let claimed = |peer: u64, t_req: u64, out: u64, t_in: u64| SockState {
        mux_peer: peer,
        mux_in: t_req,
        mux_arrival: t_req - 5,
        ..up(out, t_in)
    };
    let socks = Socks(std::vec![
        (1, claimed(M + 1, 20, 30, 40)), // another downstream's
        (2, claimed(M, 20, 30, 45)),
        (3, claimed(M, 20, 32, 50)),
        (4, claimed(M, 20, 33, 150)), // its response read after the write
        (5, up(30, 40)),              // not claimed by the rule
    ]);
    let mut q = FwdQueue::default();
    for (ino, t_in) in [(1, 40), (2, 45), (5, 40), (3, 50), (4, 150), (9, 60)] {
        q.push(slot(ino, t_in, 0), &socks);
    }
    let mut q2 = q;
    let i = q.find_causal(M, 0, T_OUT, &socks);
    assert_eq!(q.take(i).map(|s| s.ino), Some(2));
    let i = q.find_causal(M, 0, T_OUT, &socks);
    assert_eq!(q.take_slot(i).ino, 3);
    assert_eq!(q.find_causal(M, 0, T_OUT, &socks), None);
    // The dead slot (its upstream gone) was cleared on the way; the others stay queued.
    let left: Vec<u64> = q.slots[..6].iter().map(|s| s.ino).collect();
    assert_eq!(left, [1, 0, 5, 0, 4, 0]);
    // Read before the downstream's previous write: that write's, which left it (more than
    // it could pair): not this one's, and dropped on the way, another downstream's kept.
    assert_eq!(q2.find_causal(M, 46, T_OUT, &socks), Some(3));
    let left: Vec<u64> = q2.slots[..4].iter().map(|s| s.ino).collect();
    assert_eq!(left, [1, 0, 5, 3]);
    let req = |peer, read, arrival| {
        Some(MuxRequest {
            peer,
            read,
            arrival,
        })
    };
    assert_eq!(mux_request(socks.get(2).unwrap(), 45), req(M, 20, 15));
    // Not that response's, or not claimed.
    assert_eq!(mux_request(socks.get(2).unwrap(), 44), None);
    assert_eq!(mux_request(socks.get(5).unwrap(), 40), None);
}

/// An event loop that gives a freed app connection to a waiting request before it writes the
/// response it read there (Envoy's pool, all its connections busy) holds that response; its
/// claim is kept with it, so the downstream's write still finds it, with its own request's
/// read, not the next one's. (Until 2026-12-07 the next request's claim took its place: the
/// response was left in the queue, unforwarded, and, at the head, kept the search's window
/// from the responses behind it: under CPU contention 2-3 % of Envoy's inbound exchanges.)
#[test]
fn a_held_response_keeps_its_causal_claim() {
    const M: u64 = 50;
    let mut u = SockState {
        mux_peer: M,
        mux_in: 20,
        mux_arrival: 15,
        ..up(30, 40)
    };
    let socks = |u: &SockState| Socks(std::vec![(1, *u)]);
    // The response read at 40 waits; the next request (read at 42 from another
    // downstream) goes out on the connection at 44.
    assert!(!hold_response(&mut u));
    u.out_start = 44;
    u.last_dir = DIR_OUT;
    u.mux_peer = M + 1;
    u.mux_in = 42;
    u.mux_arrival = 41;
    let held = MuxRequest {
        peer: M,
        read: 20,
        arrival: 15,
    };
    assert_eq!(mux_request(&u, 40), Some(held));
    // The current exchange has no response yet: nothing claimed at its socket's `in_start`
    // but the held one.
    assert_eq!(mux_request(&u, 41), None);
    let mut q = FwdQueue::default();
    q.push(slot(1, 40, 0), &socks(&u));
    assert_eq!(q.find_causal(M + 1, 0, T_OUT, &socks(&u)), None);
    let mut q2 = q;
    assert_eq!(q.find_causal(M, 0, T_OUT, &socks(&u)), Some(0));
    assert_eq!(
        q2.find_causal(M, 41, T_OUT, &socks(&u)),
        None,
        "read before the write before"
    );
    assert_eq!(q2.slots[0].ino, 0);
    // Its next response read: the held one is still the claim's until given up.
    u.in_start = 60;
    u.last_dir = DIR_IN;
    assert_eq!(mux_request(&u, 40), Some(held));
    assert_eq!(
        mux_request(&u, 60),
        Some(MuxRequest {
            peer: M + 1,
            read: 42,
            arrival: 41
        })
    );
    // Marked forwarded, the held claim is gone with it.
    mark_forwarded(&mut u, 40);
    assert_eq!(mux_request(&u, 40), None);
}

/// A claim whose read lies more than `u32::MAX` ns before the forward is not kept (the held
/// response stays, unclaimed), nor is one on a response no rule claimed.
#[test]
fn a_held_response_keeps_no_claim_it_cannot_store() {
    let mut u = SockState {
        mux_peer: 50,
        mux_in: 1,
        ..up(1 << 33, (1 << 33) + 10)
    };
    hold_response(&mut u);
    // The next request's forward.
    u.last_dir = DIR_OUT;
    u.out_start = (1 << 33) + 20;
    assert_eq!(u.held[0].in_start, (1 << 33) + 10);
    assert_eq!(u.held[0].mux_peer, 0);
    assert_eq!(mux_request(&u, (1 << 33) + 10), None);
    let mut v = up(30, 40);
    hold_response(&mut v);
    assert_eq!((v.held[0].in_start, v.held[0].mux_peer), (40, 0));
}

/// The same search over the responses the process read on any thread ([`RespPool`]): a
/// connection task's write finds what stream tasks read elsewhere (ztunnel's HBONE server),
/// the first that fits, and nothing once it is forwarded.
#[test]
fn a_mux_downstream_write_finds_a_response_claimed_from_it_across_threads() {
    const M: u64 = 50;
    let claimed = |peer: u64, out: u64, t_in: u64| SockState {
        mux_peer: peer,
        mux_in: 20,
        mux_arrival: 15,
        ..up(out, t_in)
    };
    let mut socks = Socks(std::vec![
        (1, claimed(M + 1, 30, 40)), // another downstream's
        (2, claimed(M, 30, 45)),     // read before the downstream's previous write
        (3, up(30, 48)),             // not claimed by the rule
        (4, claimed(M, 32, 150)),    // read after this write
        (5, claimed(M, 33, 60)),
        (6, claimed(M, 34, 70)),
    ]);
    let slots: Vec<FwdSlot> = [
        (1, 40),
        (2, 45),
        (3, 48),
        (4, 150),
        (5, 60),
        (9, 65),
        (6, 70),
    ]
    .into_iter()
    .map(|(ino, t_in)| slot(ino, t_in, 0))
    .collect();
    let pool = pool(&slots);
    let found = |socks: &Socks| find_causal_across(&pool, M, 46, T_OUT, socks).ino;
    assert_eq!(found(&socks), 5);
    // Taken by a write (any thread's): its copies are dead, the next one fits.
    mark_forwarded(&mut socks.0[4].1, 60);
    assert_eq!(found(&socks), 6);
    mark_forwarded(&mut socks.0[5].1, 70);
    assert_eq!(found(&socks), 0);
    assert_eq!(
        find_causal_across(&pool, M, 0, T_OUT, &socks).ino,
        2,
        "with no write before"
    );
    assert_eq!(
        find_causal_across(&RespPool::default(), M, 0, T_OUT, &socks).ino,
        0
    );
}

/// A causal claim on an HTTP/2-inside-TLS upstream agrees when the writer last read that
/// upstream, or read it in this turn (an event loop that read several upstreams before
/// writing their responses); not when it was read in another turn, by another thread, or
/// never (an unset turn).
#[test]
fn a_causal_claim_agrees_when_its_upstream_was_read_last_or_in_the_writers_turn() {
    const U: u64 = 7;
    let now = turn(3, 10);
    let asked = core::cell::Cell::new(false);
    assert!(
        causal_agrees(U, U, || {
            asked.set(true);
            (0, now)
        }),
        "read last"
    );
    assert!(
        !asked.get(),
        "the turns are not looked up when the last read tells"
    );
    assert!(
        causal_agrees(8, U, || (now, now)),
        "read in this turn, another read since"
    );
    assert!(
        !causal_agrees(8, U, || (turn(3, 9), now)),
        "an earlier turn"
    );
    assert!(
        !causal_agrees(8, U, || (turn(4, 10), now)),
        "another thread's turn"
    );
    assert!(!causal_agrees(8, U, || (0, 0)), "no turn noted");
    assert!(!causal_agrees(0, U, || (0, now)));
}

/// An HTTP/2-inside-TLS downstream's request, when alternation pairs its response: the read in
/// the turn of the request's forward, and only that turn's (haproxy reads a request and
/// forwards it in one turn; a flow-control record read turns before starts alternation's
/// message), for the upstream's current response only.
#[test]
fn the_read_in_the_forwards_turn() {
    let mut d = SockState {
        role: ROLE_DOWNSTREAM,
        flags: SOCK_TLS | SOCK_MUX,
        // Past its first exchange (a TLS connection's first is dropped, never held).
        exchanges: 1,
        ..SockState::default()
    };
    let (t1, t2) = (turn(7, 3), turn(7, 4));
    assert_ne!(t1, t2);
    assert_ne!(turn(7, 3), turn(8, 3), "another thread's turn");
    // The upstream's request forwarded at `out` in turn `fwd`, its response read at 2 000.
    let u = |out: u64, fwd: u64| SockState {
        fwd_turn: fwd,
        ..up(out, 2_000)
    };
    assert_eq!(read_in_turn(&d, &u(1_000, t1), 2_000), 0, "no read yet");
    note_mux_read(&mut d, 500, t1);
    assert_eq!(read_in_turn(&d, &u(1_000, t1), 2_000), 500);
    assert_eq!(
        read_in_turn(&d, &u(500, t1), 2_000),
        500,
        "a forward entered as the read returned"
    );
    assert_eq!(
        read_in_turn(&d, &u(499, t1), 2_000),
        0,
        "a read after the forward"
    );
    assert_eq!(
        read_in_turn(&d, &u(1_000, t2), 2_000),
        0,
        "forwarded in a later turn (held)"
    );
    assert_eq!(
        read_in_turn(&d, &u(1_000, turn(8, 3)), 2_000),
        0,
        "by another thread"
    );
    assert_eq!(
        read_in_turn(&d, &u(1_000, 0), 2_000),
        0,
        "a forward whose thread read no such downstream"
    );
    // Not the upstream's current response (one it holds, read at 1 500): `fwd_turn` is the
    // turn of the request that overtook it.
    assert_eq!(read_in_turn(&d, &u(1_000, t1), 1_500), 0, "a held response");
    let mut forwarded = u(1_000, t1);
    forwarded.last_dir = DIR_OUT;
    assert_eq!(
        read_in_turn(&d, &forwarded, 2_000),
        0,
        "a request forward since"
    );
    // A later read of the downstream takes the place of the request's.
    note_mux_read(&mut d, 900, t2);
    assert_eq!(read_in_turn(&d, &u(1_000, t1), 2_000), 0);
    assert_eq!(read_in_turn(&d, &u(1_000, t2), 2_000), 900);
}

/// A connection's first request forward waits for its connect to complete (haproxy reads a
/// request, connects to the app, and writes the request a turn or more later): its turn is
/// the connect's, the one in which its request was read; every later forward's its own.
#[test]
fn a_connections_first_forward_takes_its_connects_turn() {
    let (connect, now) = (turn(7, 3), turn(7, 5));
    let fresh = SockState {
        role: ROLE_UPSTREAM,
        ..SockState::default()
    };
    assert_eq!(forward_turn(&fresh, connect, now), connect);
    assert_eq!(
        forward_turn(&fresh, 0, now),
        now,
        "its connect unseen (opened before the probes)"
    );
    assert_eq!(
        forward_turn(&up(1_000, 2_000), connect, now),
        now,
        "a later forward"
    );
    // With it, the read in the connect's turn is the first request's.
    let mut d = SockState {
        role: ROLE_DOWNSTREAM,
        flags: SOCK_TLS | SOCK_MUX,
        // Past its first exchange (a TLS connection's first is dropped, never held).
        exchanges: 1,
        ..SockState::default()
    };
    note_mux_read(&mut d, 500, connect);
    let first = SockState {
        out_start: 1_000,
        in_start: 2_000,
        last_dir: DIR_IN,
        fwd_turn: forward_turn(&fresh, connect, now),
        ..fresh
    };
    assert_eq!(read_in_turn(&d, &first, 2_000), 500);
}

/// The causal rule's forward of a request read on an HTTP/1.x downstream: the reading
/// thread's first write on an HTTP/2-inside-TLS upstream in its namespace after the read,
/// however many requests the thread read before it (an Envoy worker catching up after a
/// stall reads dozens; a list of them marked at the write held 4), while the log holds it.
#[test]
fn a_request_goes_out_in_its_threads_first_mux_write_after_its_read() {
    const NET: u64 = 0x4000_0001;
    let mut log = MuxLog::default();
    assert_eq!(forward_of(&log, 0, 10, 100, NET, 0), None, "no write yet");
    // 40 requests read at 10..50, the log's count 0 for each; then one write at 60.
    log.push(7, 60, NET);
    for read in 10..50 {
        assert_eq!(forward_of(&log, 0, read, 100, NET, 0), Some((7, 60)));
    }
    // A response written before the write (a local reply): not forwarded by it.
    assert_eq!(forward_of(&log, 0, 10, 59, NET, 0), None);
    // A request read after that write (count 1) goes out in the next.
    assert_eq!(forward_of(&log, 1, 61, 100, NET, 0), None, "not yet");
    log.push(8, 70, NET);
    assert_eq!(forward_of(&log, 1, 61, 100, NET, 0), Some((8, 70)));
    assert_eq!(
        forward_of(&log, 0, 10, 100, NET, 0),
        Some((7, 60)),
        "the first after the read"
    );
    // Its write is written over once the thread has made MUX_LOG_SLOTS more.
    for k in 0..MUX_LOG_SLOTS as u64 - 2 {
        log.push(9, 80 + k, NET);
    }
    assert_eq!(
        forward_of(&log, 0, 10, 1000, NET, 0),
        Some((7, 60)),
        "still held"
    );
    log.push(9, 200, NET);
    assert_eq!(forward_of(&log, 0, 10, 1000, NET, 0), None, "written over");
    assert_eq!(forward_of(&log, 1, 61, 1000, NET, 0), Some((8, 70)));
    // The count wraps.
    let mut log = MuxLog {
        seq: u32::MAX,
        ..MuxLog::default()
    };
    log.push(5, 300, NET);
    log.push(6, 310, NET);
    assert_eq!(log.seq, 1);
    assert_eq!(forward_of(&log, u32::MAX, 290, 400, NET, 0), Some((5, 300)));
    assert_eq!(forward_of(&log, 0, 305, 400, NET, 0), Some((6, 310)));
}

/// A node proxy's thread serves several pods: a request's forward is the thread's first
/// write after the read on an upstream in the request's namespace, among the next
/// [`MUX_LOG_SCAN`].
#[test]
fn a_requests_mux_forward_is_in_its_own_namespace() {
    let (a, b) = (0x4000_0001, 0x4000_0002);
    let mut log = MuxLog::default();
    log.push(7, 60, b);
    log.push(8, 70, b);
    log.push(9, 80, a);
    assert_eq!(forward_of(&log, 0, 10, 100, a, 0), Some((9, 80)));
    assert_eq!(forward_of(&log, 0, 10, 100, b, 0), Some((7, 60)));
    assert_eq!(forward_of(&log, 2, 75, 100, b, 0), None, "none since in b");
    // Beyond the scan: not found.
    let mut log = MuxLog::default();
    for k in 0..u64::from(MUX_LOG_SCAN) {
        log.push(7, 60 + k, b);
    }
    log.push(9, 90, a);
    assert_eq!(forward_of(&log, 0, 10, 100, a, 0), None);
    assert_eq!(forward_of(&log, 1, 10, 100, a, 0), Some((9, 90)));
}

/// An event loop sharing its upstream connections writes a turn's requests in its
/// connections' order: of the writes after the read, the one on the connection its response
/// came back on is the request's, not the first.
#[test]
fn a_requests_mux_forward_is_on_the_connection_its_response_came_back_on() {
    const NET: u64 = 0x4000_0001;
    let mut log = MuxLog::default();
    // Requests of clients A and B read at 10 and 20; written to connection 8, then 7.
    log.push(8, 30, NET);
    log.push(7, 40, NET);
    // A's response came back on 7: its forward is the write to 7, not the first write.
    assert_eq!(forward_of(&log, 0, 10, 100, NET, 7), Some((7, 40)));
    assert_eq!(forward_of(&log, 0, 20, 100, NET, 8), Some((8, 30)));
    // A connection none of the next writes went to (the writer's last read another's): the
    // first write stands.
    assert_eq!(forward_of(&log, 0, 10, 100, NET, 9), Some((8, 30)));
    // Not a write after the response's (a later forward on the same connection).
    assert_eq!(forward_of(&log, 0, 10, 35, NET, 7), Some((8, 30)));
}

/// An HTTP/2-inside-TLS upstream past its first exchange (a TLS connection's first is
/// dropped, never held).
fn mux_upstream() -> SockState {
    SockState {
        role: ROLE_UPSTREAM,
        flags: SOCK_TLS | SOCK_MUX,
        exchanges: 1,
        ..SockState::default()
    }
}

/// An HTTP/2-inside-TLS upstream's write at `t` as the kernel sees it: remembered, and when
/// it follows a read, a new run that holds any response still waiting.
fn mux_upstream_write(u: &mut SockState, t: u64) {
    mux_write(u, t);
    if u.last_dir != DIR_OUT {
        hold_response(u);
        mux_run_starts(u);
        u.out_start = t;
        u.last_dir = DIR_OUT;
    }
}

/// A read of it at `t`: a new response.
fn mux_upstream_read(u: &mut SockState, t: u64) {
    u.in_start = t;
    u.last_dir = DIR_IN;
}

/// Record alternation times a request's forward at the upstream's last run of writes before
/// its response; when another run followed the request's read too, either may have carried
/// it (streams in flight at once), and the exchange is not timed from a guess.
#[test]
fn a_forward_by_alternation_is_known_only_when_one_run_of_writes_followed_the_read() {
    let mut u = mux_upstream();
    // Run A: writes at 100 and 110; another stream's response read at 150; run B at 200.
    mux_upstream_write(&mut u, 100);
    mux_upstream_write(&mut u, 110);
    mux_upstream_read(&mut u, 150);
    mux_upstream_write(&mut u, 200);
    assert_eq!(u.run_before, 110, "run A's last write");
    // The response read at 300 is timed from run B.
    mux_upstream_read(&mut u, 300);
    let r = waiting_response(&u, 300).expect("waiting");
    assert_eq!((r.req_out, r.run_before), (200, 110));
    // A request read at 120, after run A: only run B can have carried it.
    assert!(forward_known(&r, 120));
    // Read at 105 or at 90: run A (its write at 110, or both) could have carried it too.
    assert!(!forward_known(&r, 110));
    assert!(!forward_known(&r, 90));

    // Run C at 400 overtakes the response before any write forwarded it: held, with run A's
    // last write kept for it (run C's run_before is run B's).
    mux_upstream_write(&mut u, 400);
    assert_eq!(u.run_before, 200);
    let held = waiting_response(&u, 300).expect("held");
    assert_eq!((held.req_out, held.run_before), (200, 110));
    assert!(forward_known(&held, 120));
    assert!(!forward_known(&held, 105));

    // A run before more than 4.3 s back (an idle connection) is kept as that far back: a
    // request read since is known, one read before still is not.
    let mut idle = mux_upstream();
    let t = 10_000_000_000;
    mux_upstream_write(&mut idle, 100);
    mux_upstream_read(&mut idle, 150);
    mux_upstream_write(&mut idle, t);
    mux_upstream_read(&mut idle, t + 100);
    mux_upstream_write(&mut idle, t + 200);
    let held = waiting_response(&idle, t + 100).expect("held");
    assert_eq!(held.req_out, t);
    assert!(forward_known(&held, t - 1_000));
    assert!(!forward_known(&held, 90));
}

/// The first run of an upstream has no run before it; nor has a plain upstream (only
/// HTTP/2-inside-TLS upstreams keep it), nor the causal rule's forward (it names its write).
#[test]
fn a_forward_with_no_run_before_it_is_known() {
    let mut u = mux_upstream();
    mux_upstream_write(&mut u, 100);
    mux_upstream_read(&mut u, 150);
    let r = waiting_response(&u, 150).expect("waiting");
    assert_eq!(r.run_before, 0);
    assert!(forward_known(&r, 1));
    let plain = up(100, 150);
    assert!(forward_known(
        &waiting_response(&plain, 150).expect("waiting"),
        1
    ));
    // A held response whose run had none before it keeps none.
    mux_upstream_write(&mut u, 200);
    assert_eq!(waiting_response(&u, 150).map(|r| r.run_before), Some(0));
}

/// Two writes in the run alternation times a forward from: either may have carried the
/// request (another stream's forward went first in the same run, no read between).
#[test]
fn a_forward_in_a_run_of_two_writes_is_not_known() {
    let mut u = mux_upstream();
    mux_upstream_write(&mut u, 200);
    mux_upstream_write(&mut u, 260);
    mux_upstream_read(&mut u, 300);
    let r = waiting_response(&u, 300).expect("waiting");
    assert_eq!(r.req_out, 200);
    assert!(!forward_known(&r, 150));
    // One write in the run: known.
    let mut one = mux_upstream();
    mux_upstream_write(&mut one, 200);
    mux_upstream_read(&mut one, 300);
    mux_upstream_write(&mut one, 400);
    // A write after the response (the next run) is not of its run.
    let held = waiting_response(&one, 300).expect("held");
    assert!(forward_known(&held, 150));
}

#[test]
fn claims_are_trusted_from_32_judgments_at_31_in_32() {
    use crate::hop::{Trust, TRUST_WINDOW};
    for checks in 0..TRUST_WINDOW {
        for agrees in 0..=checks {
            let want = checks >= 32 && agrees * 32 >= checks * 31;
            assert_eq!(
                Trust {
                    checks,
                    agrees,
                    ..Trust::default()
                }
                .trusted(),
                want,
                "{agrees} of {checks}"
            );
        }
    }
}

#[test]
fn trust_lost_to_a_burst_comes_back_after_a_clean_run() {
    use crate::hop::{Trust, CLEAN_RUN, TRUST_WINDOW};
    let mut t = Trust::default();
    let judge = |t: &mut Trust, agree: u32, n: u32| (0..n).for_each(|_| t.judge(agree));
    judge(&mut t, 1, 31);
    assert!(!t.trusted(), "31 judgments: not yet");
    judge(&mut t, 1, 1);
    assert!(t.trusted());
    // A long run, then a burst of 80 wrong claims: lost.
    judge(&mut t, 1, 10_000);
    assert!(t.checks <= TRUST_WINDOW && t.trusted());
    judge(&mut t, 0, 80);
    assert!(!t.trusted());
    // Won back by a clean run, not before.
    judge(&mut t, 1, CLEAN_RUN - 1);
    assert!(!t.trusted(), "{t:?}");
    judge(&mut t, 1, 1);
    assert!(t.trusted(), "{t:?}");
    // Claims wrong 1 in 16 are never trusted.
    let mut t = Trust::default();
    for i in 0..10_000 {
        t.judge(u32::from(i % 16 != 0));
        assert!(!t.trusted(), "trusted at {i}: {t:?}");
    }
}

/// haproxy's causal claims disagree 8–17 times in each CPU's first 64 judgments (while it
/// opens its upstream connections), right all the same, and seldom after: trusted again
/// once 64 have agreed in a row, not after 32 judgments per disagreement.
#[test]
fn a_burst_at_the_start_is_forgiven_by_a_clean_run() {
    use crate::hop::{Trust, CLEAN_RUN};
    let mut t = Trust::default();
    for i in 0..64u32 {
        t.judge(u32::from(i % 4 != 1));
    }
    assert!(!t.trusted(), "16 of 64 disagreed: {t:?}");
    let mut n = 0;
    while !t.trusted() {
        t.judge(1);
        n += 1;
    }
    assert_eq!(
        n,
        CLEAN_RUN - 2,
        "the burst's last agreeing judgments count: {t:?}"
    );
    // A lone disagreement after the forgiving run costs no trust once the run has gone on.
    (0..32).for_each(|_| t.judge(1));
    t.judge(0);
    assert!(t.trusted(), "{t:?}");
}

/// Claims that agree at random: the share of judgments after which they are trusted.
#[test]
fn random_claims_are_trusted_by_how_often_they_agree() {
    use crate::hop::Trust;
    let share = |agree_per_mille: u64| {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut t = Trust::default();
        let mut trusted = 0u32;
        let n = 200_000;
        for _ in 0..n {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t.judge(u32::from(x % 1000 < agree_per_mille));
            trusted += u32::from(t.trusted());
        }
        f64::from(trusted) / f64::from(n)
    };
    let (s900, s9375, s970, s980, s994) =
        (share(900), share(937), share(970), share(980), share(994));
    std::eprintln!(
        "trusted at 90 %: {s900}, 93.7 %: {s9375}, 97 %: {s970}, 98 %: {s980}, 99.4 %: {s994}"
    );
    assert!(s900 < 0.01 && s9375 < 0.1 && s994 > 0.999);
    assert!(s900 < s9375 && s9375 < s970 && s970 < s980 && s980 <= s994);
}

/// A multiplexed downstream remembers its writes and their returns: a write searches the
/// responses read since the write before its last, those read before its last being that
/// write's (its chain of pairings spent), to be sent again with that write's return. Without
/// both writes' records, only its own.
#[test]
fn a_write_pairs_what_the_write_before_it_left_as_that_ones() {
    let mut d = SockState::default();
    remember_write(&mut d, 100);
    mux_write_returned(&mut d, 100, 105);
    remember_write(&mut d, 200);
    // Its return not seen yet: nothing is late.
    let none = |after| CausalSearch {
        from: after,
        late_sent: 0,
    };
    remember_write(&mut d, 300);
    assert_eq!(causal_search(&d, 200), none(200));
    mux_write_returned(&mut d, 200, 207);
    assert_eq!(
        causal_search(&d, 200),
        CausalSearch {
            from: 100,
            late_sent: 207
        }
    );
    // The first write remembered has none before it; no write before: nothing either.
    assert_eq!(causal_search(&d, 100), none(100));
    assert_eq!(causal_search(&d, 0), none(0));
    // Four writes on, the oldest is forgotten.
    for t in [400, 500, 600] {
        remember_write(&mut d, t);
        mux_write_returned(&mut d, t, t + 1);
    }
    assert_eq!(causal_search(&d, 500).from, 400);
    assert_eq!(
        causal_search(&d, 300),
        none(300),
        "the write before it is forgotten"
    );

    // The search takes a claimed response read between the two writes, drops one read before.
    const M: u64 = 50;
    let claimed = |out, resp| SockState {
        mux_peer: M,
        mux_in: out - 1,
        ..up(out, resp)
    };
    let socks = Socks(std::vec![(1, claimed(80, 90)), (2, claimed(140, 150))]);
    let mut q = FwdQueue::default();
    q.push(slot(1, 90, 0), &socks);
    q.push(slot(2, 150, 0), &socks);
    let w = CausalSearch {
        from: 100,
        late_sent: 207,
    };
    let i = q.find_causal(M, w.from, 300, &socks);
    assert_eq!(q.take(i).map(|s| s.t_in), Some(150));
    assert_eq!(
        q.slots[0].ino, 0,
        "read before the write before the last: dropped"
    );
}
