//! A synthetic but realistic node for tests and demos: three proxies (two Envoy sidecars in
//! Kubernetes pods, one nginx gateway on the host) with known CPU rates, request rates, hop
//! latencies and byte rates, so what Prometheus computes from our exposition can be checked
//! against the inputs. Deterministic: no randomness, no clock of its own.

use smp_common::hop::HopCounts;
use std::time::Duration;

use super::{AgentUsage, HopSample, LegSample, NodeSnapshot, ProxySample};
use crate::{
    aggregate::{
        hops::{Direction, Leg, Sides, WireProtocol},
        LossCounters,
    },
    proxy::{
        cgroup::CgroupAttribution,
        discovery::{ProxyId, ProxyKind},
        kube::PodRef,
    },
};

/// One hop kind of a synthetic proxy: its latencies per tick, as (nanoseconds, how many).
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticHop {
    pub direction: Direction,
    pub leg: Leg,
    /// Observations added on every tick: `count` messages of `ns` each.
    pub per_tick: Vec<(u64, u64)>,
}

/// One synthetic proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticProxy {
    pub id: ProxyId,
    pub pod: Option<PodRef>,
    /// CPU cores it keeps busy (CPU seconds per second).
    pub cpu_cores: f64,
    pub rss_bytes: u64,
    /// Requests per tick.
    pub requests_per_tick: u64,
    pub bytes_per_request: u64,
    pub hops: Vec<SyntheticHop>,
    /// What its two sides speak (every request is paired into one exchange of these).
    pub sides: Sides,
    /// Times its process was replaced (the identity and its totals continue).
    pub restarts: u32,
    /// Ticks since the feed started.
    ticks: u64,
}

/// The synthetic node. Call [`SyntheticNode::tick`] at a fixed period.
#[derive(Debug, Clone)]
pub struct SyntheticNode {
    pub proxies: Vec<SyntheticProxy>,
    /// Ring-buffer drops per tick (to see `smp_events_lost_total` move).
    pub ringbuf_drops_per_tick: u64,
    ticks: u64,
}

fn pod_proxy(kind: ProxyKind, uid: &str, args: &[&str]) -> ProxyId {
    let attribution = CgroupAttribution {
        pod_uid: Some(uid.to_string()),
        ..CgroupAttribution::unknown(format!("/kubepods.slice/kubepods-pod{uid}.slice"))
    };
    let cmdline: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    ProxyId::for_leader(kind, &attribution, &cmdline)
}

impl Default for SyntheticNode {
    fn default() -> Self {
        Self::new()
    }
}

impl SyntheticNode {
    /// The standard node (figures per 100 ms tick):
    /// * `productpage` Envoy, outbound: 0.25 cores, 20 requests; request hop 14 × 120 µs and
    ///   6 × 1.5 ms, response hop 20 × 40 µs.
    /// * `reviews` Envoy, inbound: 0.10 cores, 20 requests; request hop 20 × 250 µs, response
    ///   hop 20 × 45 µs.
    /// * host nginx, gateway: 0.05 cores, 10 requests; both hops 10 × 80 µs.
    /// * productpage → reviews on one node: every request joined, network legs 20 × 60 µs
    ///   (request) and 20 × 70 µs (response); the gateway's upstreams off the node, TCP's
    ///   estimates 10 × 400 µs (srtt) and 10 × 150 µs (min RTT).
    pub fn new() -> Self {
        let envoy_args = ["envoy", "-c", "/etc/istio/proxy/envoy-rev.json"];
        let outbound = SyntheticProxy {
            id: pod_proxy(
                ProxyKind::Envoy,
                "0b6a1c52-7d1e-4f0e-9a57-3c2b1f0e9d01",
                &envoy_args,
            ),
            pod: Some(PodRef {
                namespace: "bookinfo".into(),
                name: "productpage-v1-6f8d7b9c4-x2x7q".into(),
            }),
            cpu_cores: 0.25,
            rss_bytes: 64 << 20,
            requests_per_tick: 20,
            bytes_per_request: 900,
            hops: vec![
                SyntheticHop {
                    direction: Direction::Outbound,
                    leg: Leg::Request,
                    per_tick: vec![(120_000, 14), (1_500_000, 6)],
                },
                SyntheticHop {
                    direction: Direction::Outbound,
                    leg: Leg::Response,
                    per_tick: vec![(40_000, 20)],
                },
            ],
            sides: Sides {
                downstream: WireProtocol::Http1,
                upstream: WireProtocol::Tls,
            },
            restarts: 0,
            ticks: 0,
        };
        let inbound = SyntheticProxy {
            id: pod_proxy(
                ProxyKind::Envoy,
                "5d2e8f3a-1c4b-4a6e-8b7d-2f9e0a1b3c02",
                &envoy_args,
            ),
            pod: Some(PodRef {
                namespace: "bookinfo".into(),
                name: "reviews-v1-5b9d7c8f6-k4j2m".into(),
            }),
            cpu_cores: 0.10,
            rss_bytes: 48 << 20,
            requests_per_tick: 20,
            bytes_per_request: 700,
            hops: vec![
                SyntheticHop {
                    direction: Direction::Inbound,
                    leg: Leg::Request,
                    per_tick: vec![(250_000, 20)],
                },
                SyntheticHop {
                    direction: Direction::Inbound,
                    leg: Leg::Response,
                    per_tick: vec![(45_000, 20)],
                },
            ],
            sides: Sides {
                downstream: WireProtocol::Tls,
                upstream: WireProtocol::Http1,
            },
            restarts: 0,
            ticks: 0,
        };
        let gateway = SyntheticProxy {
            id: ProxyId::for_leader(
                ProxyKind::Nginx,
                &CgroupAttribution::unknown("/system.slice/nginx.service"),
                &["nginx".to_string()],
            ),
            pod: None,
            cpu_cores: 0.05,
            rss_bytes: 12 << 20,
            requests_per_tick: 10,
            bytes_per_request: 500,
            hops: vec![
                SyntheticHop {
                    direction: Direction::Gateway,
                    leg: Leg::Request,
                    per_tick: vec![(80_000, 10)],
                },
                SyntheticHop {
                    direction: Direction::Gateway,
                    leg: Leg::Response,
                    per_tick: vec![(80_000, 10)],
                },
            ],
            sides: Sides {
                downstream: WireProtocol::Http1,
                upstream: WireProtocol::Http1,
            },
            restarts: 0,
            ticks: 0,
        };
        Self {
            proxies: vec![outbound, inbound, gateway],
            ringbuf_drops_per_tick: 1,
            ticks: 0,
        }
    }

    /// Replaces proxy `i`'s process. As the tracker reports it, the identity's figures continue
    /// and its restart count goes up.
    pub fn restart(&mut self, i: usize) {
        self.proxies[i].restarts += 1;
    }

    /// One tick at `elapsed` since the feed started: figures cumulative per identity and this
    /// tick's hop observations.
    pub fn tick(&mut self, elapsed: Duration) -> NodeSnapshot {
        self.ticks += 1;
        let mut snap = NodeSnapshot {
            loss: LossCounters {
                ringbuf_dropped: self.ticks * self.ringbuf_drops_per_tick,
                ..LossCounters::default()
            },
            agent: AgentUsage::current(),
            ..NodeSnapshot::default()
        };
        for p in &mut self.proxies {
            p.ticks += 1;
            let requests = p.ticks * p.requests_per_tick;
            let mut s = ProxySample::new(p.id.clone());
            s.pod = p.pod.clone();
            s.restarts = p.restarts;
            s.cpu_seconds = p.cpu_cores * elapsed.as_secs_f64();
            s.rss_bytes = p.rss_bytes;
            s.pairing = HopCounts {
                requests,
                responses: requests,
                paired: requests,
                tls_first_dropped: p.ticks / 10,
                ..HopCounts::default()
            };
            s.received_bytes = requests * p.bytes_per_request;
            s.sent_bytes = requests * p.bytes_per_request;
            if let Some(h) = p.hops.first() {
                s.sides.insert((h.direction, p.sides), requests);
            }
            snap.proxies.push(s);
            for h in &p.hops {
                let values: Vec<u64> = h
                    .per_tick
                    .iter()
                    .flat_map(|(ns, n)| std::iter::repeat_n(*ns, *n as usize))
                    .collect();
                snap.hops.push(HopSample::from_ns(
                    p.id.clone(),
                    h.direction,
                    h.leg,
                    &values,
                ));
            }
        }
        let (from, to) = (&self.proxies[0], &self.proxies[1]);
        let leg = |source: &SyntheticProxy, destination: &SyntheticProxy, leg, ns| {
            let mut histogram = crate::aggregate::hops::new_histogram();
            histogram.saturating_record_n(ns, from.requests_per_tick);
            LegSample {
                source: source.id.clone(),
                destination: destination.id.clone(),
                leg,
                histogram,
            }
        };
        snap.legs = vec![
            leg(from, to, Leg::Request, 60_000),
            leg(to, from, Leg::Response, 70_000),
        ];
        // The gateway's upstreams are on other nodes: TCP's estimates, 10 × 400 µs srtt and
        // 10 × 150 µs minimum.
        let gw = &self.proxies[2];
        let mut e = crate::aggregate::path::RttEstimates::default();
        e.srtt.saturating_record_n(400_000, gw.requests_per_tick);
        e.rttvar.saturating_record_n(50_000, gw.requests_per_tick);
        e.min_rtt.saturating_record_n(150_000, gw.requests_per_tick);
        snap.estimates = vec![(gw.id.clone(), crate::aggregate::path::Peer::NotOnNode, e)];
        snap.paths.no_peer = gw.ticks * gw.requests_per_tick;
        snap.paths.joined = from.ticks * from.requests_per_tick;
        snap.paths.breakdown = snap.paths.joined;
        snap
    }

    /// Every hop latency of one tick, seconds, optionally only of one (direction, leg).
    pub fn tick_latencies(&self, filter: Option<(Direction, Leg)>) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .proxies
            .iter()
            .flat_map(|p| &p.hops)
            .filter(|h| filter.is_none_or(|f| f == (h.direction, h.leg)))
            .flat_map(|h| {
                h.per_tick
                    .iter()
                    .flat_map(|(ns, n)| std::iter::repeat_n(*ns as f64 / 1e9, *n as usize))
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// The `(lower, upper]` bucket bounds (seconds) that hold quantile `q` of `sorted` values:
/// where Prometheus' `histogram_quantile` over our buckets must land.
pub fn bucket_around_quantile(sorted: &[f64], q: f64) -> (f64, f64) {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    let v = sorted[rank];
    let bounds = super::HOP_BUCKETS_SECONDS;
    let i = bounds.partition_point(|b| *b < v);
    let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
    let upper = bounds.get(i).copied().unwrap_or(f64::INFINITY);
    (lower, upper)
}
