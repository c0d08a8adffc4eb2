//! The lab's proxy-independent exchange check (`lab::ends`) run on a live lab: the test client
//! and the lab app record each request (id, connection, CLOCK_MONOTONIC times), the probes
//! track both sidecars, and each sidecar's exchanges are held against those records. Shared by
//! the integration tests (`tests/ends.rs`) and `cargo xtask bench pairing`.

use std::{collections::BTreeMap, time::Duration};

use smp_common::hop::HopCounts;

use smp_agent::{
    aggregate::hops::{self, Direction, HopPercentiles, Leg},
    lab::{
        config::{ProxyKind, Side},
        ends, truth, Lab, LabConfig,
    },
};

use crate::{
    cpu_limit::{CpuLimit, Throttled},
    drive_recorded,
    hop_session::Session,
    lab_config, meshed_addr, process_tree, with_lab,
};

/// What one sidecar's exchanges gave.
#[derive(Debug)]
pub struct SideFigures {
    pub side: Side,
    pub requests: u64,
    /// Of the requests less the first exchange of each TLS connection (dropped by design).
    pub paired_pct: f64,
    /// First exchanges of TLS connections (dropped by design, counted).
    pub tls_first_dropped: u64,
    /// Requests the kernel saw that no exchange record carries, at most the client's less the
    /// paired (on HTTP/2 inside TLS the kernel takes a flow-control record read after a
    /// response for a request too), and those its unpaired reasons account for
    /// (`HopCounts::UNPAIRED_REASONS`).
    pub unpaired: u64,
    pub unpaired_by_reason: u64,
    pub verdict: truth::Verdict,
    pub directions: Vec<(Direction, Leg)>,
    /// Its hops' latency, per direction and leg.
    pub hops: BTreeMap<(Direction, Leg), HopPercentiles>,
    /// Its pairing counters over the run.
    pub counts: HopCounts,
}

impl SideFigures {
    pub fn right_pct(&self) -> f64 {
        100.0 * self.verdict.right as f64 / self.requests.max(1) as f64
    }
    pub fn wrong_pct(&self) -> f64 {
        100.0 * self.verdict.wrong() as f64 / self.verdict.checked.max(1) as f64
    }
}

/// A lab of `kind` in both slots (`workers` threads each, `mtls`), driven at `rate` over
/// `conns` connections for `secs`; returns the figures of (outbound, inbound).
pub fn measure(
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
    measure_lab(&cfg, rate, conns, secs)
}

/// [`measure`] on a lab configured by the caller.
pub fn measure_lab(cfg: &LabConfig, rate: f64, conns: usize, secs: u64) -> [SideFigures; 2] {
    measure_lab_aged(cfg, rate, conns, secs, Opened::Measured)
}

/// When the sidecars' connections to each other opened, as [`measure_lab_aged`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// By the measured load, the probes tracking both sidecars.
    Measured,
    /// Before the probes attached (a few requests through the mesh first, which the app does
    /// not record), as a node agent finds a mesh's long-lived connections: their
    /// ClientHellos are never seen, nor their accepts and connects.
    BeforeProbes,
    /// While the probes ran but before the sidecars were tracked (the same requests, then
    /// both tracked), as the daemon finds a sidecar started after it: its connections'
    /// accepts were seen (every accepted socket is marked, whoever accepts it), their
    /// handshakes not.
    BeforeTracking,
}

/// [`measure_lab`] with the sidecars' connections to each other opened as `opened` says.
pub fn measure_lab_aged(
    cfg: &LabConfig,
    rate: f64,
    conns: usize,
    secs: u64,
    opened: Opened,
) -> [SideFigures; 2] {
    measure_lab_with(cfg, rate, conns, secs, opened, [None, None])
}

/// [`measure_lab`] with the sidecars under CPU limits while the load runs (`limits`:
/// outbound, inbound; [`Throttled`]).
pub fn measure_lab_limited(
    cfg: &LabConfig,
    rate: f64,
    conns: usize,
    secs: u64,
    limits: [Option<CpuLimit>; 2],
) -> [SideFigures; 2] {
    measure_lab_with(cfg, rate, conns, secs, Opened::Measured, limits)
}

fn measure_lab_with(
    cfg: &LabConfig,
    rate: f64,
    conns: usize,
    secs: u64,
    opened: Opened,
    limits: [Option<CpuLimit>; 2],
) -> [SideFigures; 2] {
    let (name, kind, mtls) = (cfg.name.as_str(), cfg.proxy, cfg.mtls);
    let workers = cfg.outbound.workers;
    let family = if cfg.network.is_ipv6() {
        "IPv6"
    } else {
        "IPv4"
    };
    with_lab(cfg, |info| {
        let pids = [info.outbound.pid, info.inbound.pid];
        let early = (opened == Opened::BeforeTracking).then(|| Session::start(&[]));
        if opened != Opened::Measured {
            let url = format!("http://{}/", meshed_addr(info));
            for _ in 0..5 {
                let out = std::process::Command::new("ip")
                    .args(["netns", "exec", &info.client_netns, "curl", "-sf", "-o"])
                    .args(["/dev/null", "--max-time", "5", &url])
                    .output()
                    .expect("curl");
                assert!(
                    out.status.success(),
                    "{name}: a request before the probes failed"
                );
            }
        }
        let session = match early {
            Some(mut s) => {
                s.track(&pids);
                s
            }
            None => Session::start(&pids),
        };
        let throttled: Vec<(Side, Throttled)> = [Side::Outbound, Side::Inbound]
            .into_iter()
            .zip(pids.iter().zip(limits))
            .filter_map(|(side, (pid, limit))| {
                let limit = limit?;
                let t = Throttled::start(&format!("{name}-{side}"), &process_tree(*pid), limit)
                    .unwrap_or_else(|e| panic!("{name}: the {side} sidecar's CPU limit: {e}"));
                Some((side, t))
            })
            .collect();
        let (ok, failed, client) = drive_recorded(
            Some(&info.client_netns),
            meshed_addr(info),
            conns,
            rate,
            Duration::from_secs(secs),
            |_| None,
        );
        for (side, t) in throttled {
            let n = t.throttled_periods();
            eprintln!("{name}: the {side} sidecar throttled in {n} periods");
            // Else the run measured no stall, whatever it says.
            assert!(
                n > 0,
                "{name}: the {side} sidecar's CPU limit never throttled it"
            );
        }
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
        // One node proxy (a shared ztunnel) serves both sides: each side is its exchanges of
        // that side's direction, and its counters cover both (each request read twice).
        let shared = pids[0] == pids[1];
        let crossings = if shared { 2 } else { 1 };
        let direction_of = |side: Side| match side {
            Side::Outbound => Direction::Outbound,
            Side::Inbound => Direction::Inbound,
        };
        // A sidecar is its process tree: nginx's worker processes carry the traffic.
        let figures = |side: Side, pid: u32| {
            let tree = process_tree(pid);
            let mut c = HopCounts::default();
            for t in &tree {
                c.add(&seen.pairing.get(t).copied().unwrap_or_default());
            }
            // The requests the client sent, less the first of each TLS connection (dropped by
            // design, counted): the kernel's own count differs by what TLS handshakes look
            // like (a client's last flight and its request in one read count once).
            let eligible = (crossings * client.len() as u64)
                .saturating_sub(c.tls_first_dropped)
                .max(1);
            let exchanges: Vec<_> = tree
                .iter()
                .flat_map(|t| seen.exchanges_of(*t))
                .filter(|x| !shared || hops::direction(x) == direction_of(side))
                .collect();
            let verdict = ends::check(&exchanges, side, &client, &app);
            let mut hops = seen.hops.group_summary(&tree);
            if shared {
                hops.retain(|(d, _), _| *d == direction_of(side));
            }
            let directions: Vec<_> = hops.keys().copied().collect();
            let f = SideFigures {
                side,
                requests: client.len() as u64,
                paired_pct: 100.0 * c.paired as f64 / eligible as f64,
                tls_first_dropped: c.tls_first_dropped,
                unpaired: c.unpaired().min(eligible.saturating_sub(c.paired)),
                unpaired_by_reason: HopCounts::UNPAIRED_REASONS.iter().map(|(_, n)| n(&c)).sum(),
                verdict,
                directions,
                hops,
                counts: c,
            };
            eprintln!(
                "{name} {kind} {family} workers {workers} mtls {mtls} {side}: {} requests, {:.2} % paired, \
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
pub fn assert_four_hops(figs: &[SideFigures; 2]) {
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
