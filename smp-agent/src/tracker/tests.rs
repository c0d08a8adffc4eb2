//! Unit tests of `tracker` (kept apart so the module reads as what it does).

use super::*;
use crate::proxy::{discovery::ProxyScope, ProxyKind};

fn view(elapsed_s: u64, cpu_ns: u64, requests: u64, restarts: u32) -> TrackerView {
    let proxy = ProxyId {
        kind: ProxyKind::from_name("envoy"),
        scope: ProxyScope::Cgroup("/lab".into()),
        fingerprint: 7 << 32,
    };
    TrackerView {
        elapsed: Duration::from_secs(elapsed_s),
        proxies: vec![ProxyView {
            id: proxy.to_string(),
            proxy,
            kind: "envoy".into(),
            attribution: CgroupAttribution::unknown("/lab"),
            leader: Some(10),
            pids: vec![10],
            pids_seen: vec![9, 10],
            restarts,
            cpu_ns,
            pairing: HopCounts {
                requests,
                paired: requests,
                ..Default::default()
            },
            received_bytes: 0,
            sent_bytes: 0,
            rss_bytes: 0,
            memory: None,
            perf: None,
        }],
        ..TrackerView::default()
    }
}

#[test]
fn window_takes_differences_per_identity() {
    let w = window(
        &view(2, 1_000_000_000, 1000, 0),
        &view(12, 3_000_000_000, 5000, 1),
    );
    assert_eq!(w.len(), 1);
    let p = &w[0];
    assert_eq!(p.requests, 4000);
    assert_eq!(p.restarts, 1);
    assert_eq!(p.pid, Some(10));
    assert!((p.cpu.cpu_seconds - 2.0).abs() < 1e-9);
    assert!((p.cpu.mcores - 200.0).abs() < 1e-9, "{}", p.cpu.mcores);
    assert!((p.cpu.cpu_us_per_request.unwrap() - 500.0).abs() < 1e-9);
}

#[test]
fn socket_bytes_survive_lru_evictions_and_closed_sockets() {
    use smp_common::sock::SyscallKind;

    use crate::aggregate::SocketSample;
    let s = |tgid, fd, kind, bytes| SocketSample {
        tgid,
        fd,
        ino: 100 + u64::from(fd),
        kind,
        calls: 1,
        bytes,
        errors: 0,
        ns: 0,
    };
    let mut last = HashMap::new();
    let g = socket_gains(
        &mut last,
        &[
            s(1, 3, SyscallKind::Read, 100),
            s(1, 3, SyscallKind::Writev, 40),
            s(1, 4, SyscallKind::Recvfrom, 10),
            s(2, 3, SyscallKind::Sendmsg, 7),
        ],
    );
    assert_eq!(g[&1], (110, 40));
    assert_eq!(g[&2], (0, 7));
    // fd 4 closed and its entry evicted; fd 3's read grew; the write entry was evicted and
    // created again (smaller than before): counted in full.
    let g = socket_gains(
        &mut last,
        &[
            s(1, 3, SyscallKind::Read, 150),
            s(1, 3, SyscallKind::Writev, 5),
        ],
    );
    assert_eq!(g[&1], (50, 5));
    assert!(!g.contains_key(&2));
    assert_eq!(last.len(), 2, "vanished entries are forgotten");
    assert!(socket_gains(&mut last, &[]).is_empty());
    assert!(last.is_empty());
}

#[test]
fn hop_book_files_each_measure_under_its_hop() {
    let mut book = HopBook::default();
    let a = (0, Direction::Outbound, Leg::Request);
    let b = (1, Direction::Inbound, Leg::Response);
    book.record(Measure::Hop, a, 1_000);
    book.record(Measure::Hop, a, 3_000);
    book.record(Measure::Wait, b, 70);
    book.record(Measure::Send, a, 5);
    book.record(Measure::Hop, b, u64::MAX);
    assert_eq!(book.hops[&a].len(), 2);
    assert_eq!(
        book.hops[&b].len(),
        1,
        "beyond the range: clamped, not lost"
    );
    assert_eq!((book.waits.len(), book.waits[&b].len()), (1, 1));
    assert_eq!((book.sends.len(), book.sends[&a].max()), (1, 5));
}

#[test]
fn a_proxy_found_mid_window_counts_from_when_it_was_found() {
    let mut start = view(0, 0, 0, 0);
    start.proxies.clear();
    let w = window(&start, &view(10, 500_000_000, 100, 0));
    assert_eq!(w[0].requests, 100);
    assert!((w[0].cpu.cpu_seconds - 0.5).abs() < 1e-9);
}

/// [`PerWorkload::NodeProxies`]: a proxy serving one pod (a sidecar) is never a node proxy,
/// however many exchanges; one serving a second pod is from then on, and its exchanges for
/// the first pod before that are counted, not lost silently.
#[test]
fn a_proxy_is_a_node_proxy_from_its_second_pod_on() {
    let mut book = HopBook::default();
    let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    for _ in 0..3 {
        assert!(!book.node_proxy(0, a), "a sidecar's one pod");
    }
    assert!(!book.node_proxy(1, b), "another proxy's first pod");
    assert_eq!(book.workload_unbooked, 0);
    assert!(book.node_proxy(0, b), "its second pod");
    assert_eq!(
        book.workload_unbooked, 3,
        "the first pod's exchanges before"
    );
    assert!(book.node_proxy(0, a) && book.node_proxy(0, b));
    assert_eq!(book.workload_unbooked, 3);
}
