//! The proxy-independent exchange check (`lab::ends`) on every lab proxy kind: the test client
//! and the lab app record each request (id, connection, CLOCK_MONOTONIC times), and every
//! exchange the probes emit for either sidecar is held against those records. Also the
//! per-hop directions of proxies we never tuned to: Traefik (Go) listens on a dual-stack
//! `[::]` socket, so its IPv4 peers reach userspace as `::ffff:a.b.c.d` and must still give
//! an outbound and an inbound sidecar.
//!
//! Each test prints, per sidecar: requests, paired %, the check's verdict (right, wrong),
//! so the numbers behind docs/hops.md's table can be read from `--nocapture` output.

use std::time::Duration;

use smp_common::hop::HopCounts;

use smp_agent::{
    aggregate::hops::{Direction, HopKey, Leg},
    lab::{
        config::{ProxyKind, Side},
        ends, truth, Lab,
    },
};
use smp_tests::{
    drive_recorded, hop_session::Session, lab_config, meshed_addr, require_root, with_lab,
};

/// What one sidecar's exchanges gave.
#[derive(Debug)]
struct SideFigures {
    side: Side,
    requests: u64,
    paired_pct: f64,
    /// Requests the kernel saw that no exchange record carries, and those its unpaired
    /// reasons account for (`HopCounts::UNPAIRED_REASONS`).
    unpaired: u64,
    unpaired_by_reason: u64,
    verdict: truth::Verdict,
    directions: Vec<(Direction, Leg)>,
}

impl SideFigures {
    fn right_pct(&self) -> f64 {
        100.0 * self.verdict.right as f64 / self.requests.max(1) as f64
    }
    fn wrong_pct(&self) -> f64 {
        100.0 * self.verdict.wrong() as f64 / self.verdict.checked.max(1) as f64
    }
}

/// A lab of `kind` in both slots (`workers` threads each, `mtls`), driven at `rate` over
/// `conns` connections for `secs`; returns the figures of (outbound, inbound).
fn measure(
    name: &str,
    kind: ProxyKind,
    workers: u32,
    mtls: bool,
    rate: f64,
    conns: usize,
    secs: u64,
) -> [SideFigures; 2] {
    let mut cfg = lab_config(name, kind, mtls);
    cfg.outbound.workers = workers;
    cfg.inbound.workers = workers;
    with_lab(&cfg, |info| {
        let pids = [info.outbound.pid, info.inbound.pid];
        let session = Session::start(&pids);
        let (ok, failed, client) = drive_recorded(
            Some(&info.client_netns),
            meshed_addr(info),
            conns,
            rate,
            Duration::from_secs(secs),
            |_| None,
        );
        std::thread::sleep(Duration::from_millis(300));
        let seen = session.finish();
        assert_eq!(failed, 0, "{name}: {failed} requests failed");
        let (app, dropped) = Lab::app_records(info).expect("app records");
        assert_eq!(dropped, 0, "{name}: the app dropped records");
        assert_eq!(
            app.len(),
            client.len(),
            "{name}: the app recorded {} requests, the client {} ({} ok)",
            app.len(),
            client.len(),
            ok.len()
        );
        let figures = |side: Side, pid: u32| {
            let c = seen.pairing.get(&pid).copied().unwrap_or_default();
            let eligible = c.requests.saturating_sub(c.tls_first_dropped).max(1);
            let verdict = ends::check(&seen.exchanges_of(pid), side, &client, &app);
            let directions = seen
                .hops
                .summary()
                .keys()
                .filter(|k: &&HopKey| k.tgid == pid)
                .map(|k| (k.direction, k.leg))
                .collect();
            let f = SideFigures {
                side,
                requests: client.len() as u64,
                paired_pct: 100.0 * c.paired as f64 / eligible as f64,
                unpaired: c.unpaired(),
                unpaired_by_reason: HopCounts::UNPAIRED_REASONS.iter().map(|(_, n)| n(&c)).sum(),
                verdict,
                directions,
            };
            eprintln!(
                "{name} {kind} workers {workers} mtls {mtls} {side}: {} requests, {:.2} % paired, \
                 {:.2} % right, {:.2} % wrong ({} checked), hops {:?}; pairing {c:?}; verdict {:?}",
                f.requests,
                f.paired_pct,
                f.right_pct(),
                f.wrong_pct(),
                f.verdict.checked,
                f.directions,
                f.verdict
            );
            f
        };
        [
            figures(Side::Outbound, pids[0]),
            figures(Side::Inbound, pids[1]),
        ]
    })
}

/// Both sidecars show both legs, each with its own direction (four hops).
fn assert_four_hops(figs: &[SideFigures; 2]) {
    for (f, d) in figs.iter().zip([Direction::Outbound, Direction::Inbound]) {
        assert_eq!(
            f.directions,
            [(d, Leg::Request), (d, Leg::Response)],
            "{}: hops {:?}",
            f.side,
            f.directions
        );
    }
}

/// Our ground-truth proxy, which the pairing is tuned on: the check must find it right, which
/// proves the check itself (no proxy log involved).
#[test]
fn ends_check_on_our_proxy() {
    if !require_root("ends_check_on_our_proxy") {
        return;
    }
    let figs = measure("h3ours", ProxyKind::Ours, 1, false, 400.0, 16, 3);
    assert_four_hops(&figs);
    for f in &figs {
        assert!(f.right_pct() >= 97.0, "{}: {f:?}", f.side);
        assert!(f.wrong_pct() <= 1.0, "{}: {f:?}", f.side);
    }
}

/// What holds today for Traefik at 1 000 rps over 64 connections (docs/hops.md, "Proxies we
/// never tuned to"): every sidecar with its four hops, at most 2 % of the exchanges wrong
/// (measured 0.0–0.6 %), and every request the kernel saw and did not pair counted under a
/// reason (never silently missing). How many pair is not stable yet: 62–97 % per side over
/// runs (Go writes a response from another goroutine than the one that read it, often on
/// another thread, where the per-thread queue does not find it: `unmatched_write`); the bound
/// here, half, is a regression floor below every run measured, not the goal. The goal
/// (≥ 99 % paired, ≤ 0.5 % wrong) is not reached yet.
fn assert_traefik_today(figs: &[SideFigures; 2]) {
    assert_four_hops(figs);
    for f in figs {
        assert!(f.right_pct() >= 50.0, "{}: {f:?}", f.side);
        assert!(f.wrong_pct() <= 2.0, "{}: {f:?}", f.side);
        assert!(
            f.unpaired_by_reason >= f.unpaired,
            "{}: {} unpaired, {} counted under a reason: {f:?}",
            f.side,
            f.unpaired,
            f.unpaired_by_reason
        );
    }
}

/// Traefik (Go, `GOMAXPROCS=2`) in both slots, plain HTTP/1.1, 1 000 rps over 64 connections.
#[test]
fn traefik_plain_at_1000_rps() {
    if !require_root("traefik_plain_at_1000_rps") {
        return;
    }
    let figs = measure("h3tkp", ProxyKind::Traefik, 2, false, 1000.0, 64, 4);
    assert_traefik_today(&figs);
}

/// Traefik in both slots with mTLS between them, 1 000 rps over 64 connections.
#[test]
fn traefik_mtls_at_1000_rps() {
    if !require_root("traefik_mtls_at_1000_rps") {
        return;
    }
    let figs = measure("h3tkm", ProxyKind::Traefik, 2, true, 1000.0, 64, 4);
    assert_traefik_today(&figs);
}
