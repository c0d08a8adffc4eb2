//! Hop latency aggregation: exchanges from the kernel → HdrHistograms per
//! (proxy, sidecar direction, leg). The pairing counters are `smp_common::hop::HopCounts`.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
pub use smp_common::hop::TcpRtt;

/// Endpoints of one connection as the proxy sees it, and what the kernel saw it speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Conn {
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub tls: bool,
    /// Plain HTTP/2 (the client's preface seen): its messages are streams, told apart by
    /// their frames.
    pub h2: bool,
}

impl Conn {
    /// What this side of the proxy speaks, as far as the kernel can tell.
    pub fn protocol(&self) -> WireProtocol {
        match (self.tls, self.h2) {
            (true, _) => WireProtocol::Tls,
            (false, true) => WireProtocol::H2c,
            (false, false) => WireProtocol::Http1,
        }
    }
}

/// What one side of a hop speaks, as the kernel sees its bytes (docs/hops.md, Protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireProtocol {
    /// Plaintext other than HTTP/2: HTTP/1.x, one message at a time in each direction.
    Http1,
    /// Plaintext HTTP/2: each stream paired on its own, by its frames.
    H2c,
    /// Encrypted: HTTP/1.1 or HTTP/2 inside, paired by record alternation.
    Tls,
}

impl WireProtocol {
    /// Lower-case name, as in details.json, the reports and the metrics' labels.
    pub const fn name(self) -> &'static str {
        match self {
            WireProtocol::Http1 => "http1",
            WireProtocol::H2c => "h2c",
            WireProtocol::Tls => "tls",
        }
    }
}

/// The protocols of an exchange's two sides: downstream (where the request came from) and
/// upstream (where it went).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sides {
    pub downstream: WireProtocol,
    pub upstream: WireProtocol,
}

impl fmt::Display for Sides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}→{}", self.downstream.name(), self.upstream.name())
    }
}

/// One exchange through a proxy, as paired in the kernel (CLOCK_MONOTONIC ns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exchange {
    pub tgid: u32,
    pub tid: u32,
    pub req_in_ns: u64,
    pub req_out_ns: u64,
    pub resp_in_ns: u64,
    pub resp_out_ns: u64,
    /// When the request / response reached the proxy's socket (before it read them); equal
    /// to `req_in_ns` / `resp_in_ns` when unknown.
    pub req_arrival_ns: u64,
    pub resp_arrival_ns: u64,
    /// Exit of the write that forwarded the request (0: unknown). The response's comes apart
    /// (`ProbeEvent::SendDone`).
    pub req_sent_ns: u64,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    pub downstream: Conn,
    pub upstream: Conn,
    /// How the kernel found the response this exchange forwards.
    pub paired_by: PairedBy,
    /// TCP's estimate of the upstream connection's round trip when the response arrived
    /// (zero: unknown, e.g. an HTTP/2 stream).
    pub upstream_rtt: TcpRtt,
}

/// How the kernel found the response a response write forwards (docs/hops.md, Pairing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairedBy {
    /// The upstream whose request forward followed this downstream's request read on the
    /// same thread.
    Hint,
    /// The response the writing thread had just read.
    Adjacency,
    /// The oldest fitting response the writing thread read since its last response write.
    Batch,
    /// The oldest fitting response on the thread's queue.
    Oldest,
    /// The only fitting response among those the process read last, on any thread.
    Sole,
    /// HTTP/2 inside TLS, by the causal rule: the last read, before the response's write, of
    /// the upstream whose write forwarded the request (docs/hops.md).
    Causal,
    /// Not said (an older kernel object, a test fixture).
    #[default]
    Unknown,
}

impl PairedBy {
    /// From the kernel's `PAIRED_BY_*` value.
    pub fn from_wire(v: u32) -> PairedBy {
        use smp_common::hop::{
            PAIRED_BY_ADJACENCY, PAIRED_BY_BATCH, PAIRED_BY_CAUSAL, PAIRED_BY_HINT,
            PAIRED_BY_OLDEST, PAIRED_BY_SOLE,
        };
        match v {
            PAIRED_BY_HINT => PairedBy::Hint,
            PAIRED_BY_ADJACENCY => PairedBy::Adjacency,
            PAIRED_BY_BATCH => PairedBy::Batch,
            PAIRED_BY_OLDEST => PairedBy::Oldest,
            PAIRED_BY_SOLE => PairedBy::Sole,
            PAIRED_BY_CAUSAL => PairedBy::Causal,
            _ => PairedBy::Unknown,
        }
    }
}

impl Exchange {
    /// Time the request spent inside the proxy (t_out − t_in).
    pub fn request_hop_ns(&self) -> u64 {
        self.req_out_ns - self.req_in_ns
    }

    /// Time the response spent inside the proxy.
    pub fn response_hop_ns(&self) -> u64 {
        self.resp_out_ns - self.resp_in_ns
    }

    /// Time the request waited in the proxy's socket before the proxy read it (wake-up and
    /// event-loop delay): `t_in − arrival`. 0 when the arrival is unknown.
    pub fn request_wait_ns(&self) -> u64 {
        self.req_in_ns.saturating_sub(self.req_arrival_ns)
    }

    /// Time inside the write that forwarded the request (delivery to the next socket on
    /// this host). 0 when unknown.
    pub fn request_send_ns(&self) -> u64 {
        self.req_sent_ns.saturating_sub(self.req_out_ns)
    }

    /// Time the response waited in the proxy's upstream socket before the proxy read it.
    pub fn response_wait_ns(&self) -> u64 {
        self.resp_in_ns.saturating_sub(self.resp_arrival_ns)
    }

    /// What its two sides speak.
    pub fn sides(&self) -> Sides {
        Sides {
            downstream: self.downstream.protocol(),
            upstream: self.upstream.protocol(),
        }
    }
}

/// Which side of an app a sidecar serves (docs/design.md). The one definition: the reports
/// (`report::details`) and the metrics use it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Serves its app as a client: app → proxy → network.
    Outbound,
    /// Fronts its app as a server: network → proxy → app.
    Inbound,
    /// Neither side is local: a proxy between two networks (a gateway, or a sidecar whose
    /// addresses did not say which side its app is on).
    Gateway,
}

impl Direction {
    /// Lower-case name, as in details.json, the reports and the metrics' labels.
    pub const fn name(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::Gateway => "gateway",
        }
    }

    /// Why [`direction`] gives this class, in words for the reports.
    pub const fn reason(self) -> &'static str {
        match self {
            Direction::Outbound => {
                "its clients reach it over loopback or from its own address (the app's redirected connections)"
            }
            Direction::Inbound => {
                "it reaches its upstream over loopback or at its own address (the app it fronts)"
            }
            Direction::Gateway => {
                "neither its clients nor its upstreams are on loopback or its own address: a proxy between networks"
            }
        }
    }
}

/// A message's way through a proxy: which message of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    Request,
    Response,
}

impl Leg {
    pub const fn name(self) -> &'static str {
        match self {
            Leg::Request => "request",
            Leg::Response => "response",
        }
    }
}

/// The one form an address takes once it enters userspace: an IPv4-mapped IPv6 address
/// (`::ffff:127.0.0.1`, what a dual-stack `[::]` socket reports for an IPv4 peer) becomes the
/// IPv4 address it carries; every other address is returned as is. Everything that turns a
/// kernel tuple or a procfs entry into an address goes through here, so directions, reports,
/// metric labels and `top` never see the mapped form.
pub fn canonical_ip(a: IpAddr) -> IpAddr {
    a.to_canonical()
}

/// [`canonical_ip`] of a socket address (the port is kept).
pub fn canonical_addr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(a.ip()), a.port())
}

fn is_local(a: IpAddr) -> bool {
    canonical_ip(a).is_loopback()
}

/// Derives a sidecar's direction from the exchange's connections:
/// - the app reached the proxy over loopback (a redirect to 127.0.0.1, or the app and the proxy
///   share the pod address: downstream remote == downstream local address) → outbound;
/// - the proxy reaches its app over loopback (upstream remote is a loopback or the proxy's own
///   address) → inbound;
/// - otherwise a gateway. Outbound wins when both hold (a sidecar relaying app→app locally).
pub fn direction(e: &Exchange) -> Direction {
    let ip = |a: Option<SocketAddr>| a.map(|a| canonical_ip(a.ip()));
    let d_local = ip(e.downstream.local);
    let d_remote = ip(e.downstream.remote);
    let u_local = ip(e.upstream.local);
    let u_remote = ip(e.upstream.remote);
    let from_app = d_local.is_some_and(is_local) || (d_local.is_some() && d_local == d_remote);
    let to_app = u_remote.is_some_and(is_local) || (u_remote.is_some() && u_remote == u_local);
    match (from_app, to_app) {
        (true, _) => Direction::Outbound,
        (false, true) => Direction::Inbound,
        (false, false) => Direction::Gateway,
    }
}

/// The workload an exchange served and the one at its other end, by pod address, for a
/// proxy that serves several pods (a node proxy: Istio's ztunnel in ambient mode serves every
/// pod of its node from sockets inside each pod's network namespace).
/// - Outbound: the pod whose app connected, which is the address the proxy's upstream
///   connection leaves from (or, when unknown, the app's own address), for the pod it
///   reaches (the upstream's remote address).
/// - Inbound: the pod the connection was addressed to (the downstream's local address), for
///   the pod that connected (its remote address).
///
/// `None` for a gateway, or when the served pod's address is unknown or a loopback (which
/// names no pod).
pub fn workloads(e: &Exchange, direction: Direction) -> Option<(IpAddr, IpAddr)> {
    let ip = |a: Option<SocketAddr>| a.map(|a| canonical_ip(a.ip()));
    let pod = |a: Option<IpAddr>| a.filter(|a| !a.is_loopback() && !a.is_unspecified());
    let (served, peer) = match direction {
        Direction::Outbound => (
            pod(ip(e.upstream.local)).or(pod(ip(e.downstream.remote))),
            ip(e.upstream.remote),
        ),
        Direction::Inbound => (pod(ip(e.downstream.local)), ip(e.downstream.remote)),
        Direction::Gateway => return None,
    };
    Some((served?, peer?))
}

/// Key of a hop histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct HopKey {
    pub tgid: u32,
    pub direction: Direction,
    pub leg: Leg,
}

/// Latency percentiles of one hop, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HopPercentiles {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// Creates the histogram every hop uses: 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant bounds are valid")
}

/// Percentiles of a nanosecond histogram, in microseconds.
pub fn percentiles(h: &Histogram<u64>) -> HopPercentiles {
    let us = |ns: u64| ns as f64 / 1e3;
    if h.is_empty() {
        return HopPercentiles::default();
    }
    HopPercentiles {
        count: h.len(),
        p50_us: us(h.value_at_quantile(0.50)),
        p90_us: us(h.value_at_quantile(0.90)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
        mean_us: h.mean() / 1e3,
    }
}

/// Histograms per hop, and what could not be paired.
#[derive(Debug, Clone, Default)]
pub struct HopAggregator {
    pub hops: BTreeMap<HopKey, Histogram<u64>>,
    /// Exchanges received.
    pub exchanges: u64,
}

impl HopAggregator {
    /// Adds one exchange to the request and response histograms of its proxy.
    pub fn record(&mut self, e: &Exchange) {
        let direction = direction(e);
        self.exchanges += 1;
        for (leg, ns) in [
            (Leg::Request, e.request_hop_ns()),
            (Leg::Response, e.response_hop_ns()),
        ] {
            let h = self
                .hops
                .entry(HopKey {
                    tgid: e.tgid,
                    direction,
                    leg,
                })
                .or_insert_with(new_histogram);
            // Values beyond the range are clamped rather than lost.
            h.saturating_record(ns.max(1));
        }
    }

    /// Percentiles of every hop.
    pub fn summary(&self) -> BTreeMap<HopKey, HopPercentiles> {
        self.hops
            .iter()
            .map(|(k, h)| (*k, percentiles(h)))
            .collect()
    }

    /// Percentiles per (direction, leg) over a group of processes, histograms merged.
    pub fn group_summary(&self, tgids: &[u32]) -> BTreeMap<(Direction, Leg), HopPercentiles> {
        let mut merged: BTreeMap<(Direction, Leg), Histogram<u64>> = BTreeMap::new();
        for (k, h) in self.hops.iter().filter(|(k, _)| tgids.contains(&k.tgid)) {
            let m = merged
                .entry((k.direction, k.leg))
                .or_insert_with(new_histogram);
            // Same bounds on both sides: adding cannot fail.
            let _ = m.add(h);
        }
        merged.iter().map(|(k, h)| (*k, percentiles(h))).collect()
    }

    /// The histogram of one proxy's hop, if any.
    pub fn hop(&self, tgid: u32, leg: Leg) -> Option<&Histogram<u64>> {
        self.hops
            .iter()
            .find(|(k, _)| k.tgid == tgid && k.leg == leg)
            .map(|(_, h)| h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(local: &str, remote: &str) -> Conn {
        Conn {
            local: Some(local.parse().unwrap()),
            remote: Some(remote.parse().unwrap()),
            ..Conn::default()
        }
    }

    fn exchange(down: Conn, up: Conn, req: (u64, u64), resp: (u64, u64)) -> Exchange {
        Exchange {
            tgid: 9,
            tid: 9,
            req_in_ns: req.0,
            req_out_ns: req.1,
            resp_in_ns: resp.0,
            resp_out_ns: resp.1,
            req_bytes: 100,
            resp_bytes: 200,
            downstream: down,
            upstream: up,
            ..Exchange::default()
        }
    }

    #[test]
    fn direction_follows_where_the_app_is() {
        // Outbound: the app's connection was redirected to 127.0.0.1:15001.
        let out = exchange(
            conn("127.0.0.1:15001", "10.0.0.1:40000"),
            conn("10.0.0.1:40001", "10.0.0.2:8080"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(direction(&out), Direction::Outbound);
        // Inbound: the peer reached the pod address; the proxy calls its app on loopback.
        let inb = exchange(
            conn("10.0.0.2:15006", "10.0.0.1:40001"),
            conn("127.0.0.1:40002", "127.0.0.1:8080"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(direction(&inb), Direction::Inbound);
        // Inbound via the pod address of its own app.
        let inb2 = exchange(
            conn("10.0.0.2:15006", "10.0.0.1:40001"),
            conn("10.0.0.2:40002", "10.0.0.2:8080"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(direction(&inb2), Direction::Inbound);
        let gw = exchange(
            conn("10.0.0.3:80", "10.0.0.1:40001"),
            conn("10.0.0.3:40002", "10.0.0.2:8080"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(direction(&gw), Direction::Gateway);
    }

    #[test]
    fn a_node_proxys_exchange_names_the_pod_it_served_and_its_peer() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // ztunnel on the node, outbound for the client pod 10.0.0.1: the app's connection was
        // redirected to 127.0.0.1:15001 inside the pod; HBONE leaves from the pod's address.
        let out = exchange(
            conn("127.0.0.1:15001", "10.0.0.1:40000"),
            conn("10.0.0.1:40001", "10.0.0.2:15008"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(
            workloads(&out, direction(&out)),
            Some((ip("10.0.0.1"), ip("10.0.0.2")))
        );
        // Inbound for the server pod 10.0.0.2: HBONE reached its 15008 from the client pod.
        let inb = exchange(
            conn("10.0.0.2:15008", "10.0.0.1:40001"),
            conn("10.0.0.2:40002", "10.0.0.2:8080"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(
            workloads(&inb, direction(&inb)),
            Some((ip("10.0.0.2"), ip("10.0.0.1")))
        );
        // IPv4-mapped addresses of a dual-stack socket name the same pod.
        let mapped = exchange(
            conn("[::ffff:10.0.0.2]:15008", "[::ffff:10.0.0.1]:40001"),
            conn("10.0.0.2:40002", "10.0.0.2:8080"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(
            workloads(&mapped, Direction::Inbound),
            Some((ip("10.0.0.2"), ip("10.0.0.1")))
        );
        // A loopback names no pod; a gateway serves none.
        let lo = exchange(
            conn("127.0.0.1:15001", "127.0.0.1:40000"),
            conn("127.0.0.1:40001", "10.0.0.2:15008"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(workloads(&lo, Direction::Outbound), None);
        assert_eq!(workloads(&out, Direction::Gateway), None);
        // Unknown addresses: none.
        let unknown = exchange(Conn::default(), Conn::default(), (0, 1), (2, 3));
        assert_eq!(workloads(&unknown, Direction::Inbound), None);
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_address() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:15001".parse().unwrap();
        assert_eq!(canonical_addr(mapped), "127.0.0.1:15001".parse().unwrap());
        let v6: SocketAddr = "[fd77::2]:8080".parse().unwrap();
        assert_eq!(canonical_addr(v6), v6, "a real IPv6 address stays");
        assert_eq!(
            canonical_ip("::1".parse().unwrap()),
            "::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_dual_stack_listener_gets_the_directions_of_an_ipv4_one() {
        // The same four hops as in `direction_follows_where_the_app_is`, as a proxy listening
        // on `[::]` sees its IPv4 peers: every address IPv4-mapped.
        let m = |s: &str| {
            let a: SocketAddr = s.parse().unwrap();
            let IpAddr::V4(v4) = a.ip() else {
                unreachable!()
            };
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port())
        };
        let c = |l: &str, r: &str| Conn {
            local: Some(m(l)),
            remote: Some(m(r)),
            ..Conn::default()
        };
        let out = exchange(
            c("127.0.0.1:15001", "10.0.0.1:40000"),
            c("10.0.0.1:40001", "10.0.0.2:8080"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(direction(&out), Direction::Outbound);
        let inb = exchange(
            c("10.0.0.2:15006", "10.0.0.1:40001"),
            c("127.0.0.1:40002", "127.0.0.1:8080"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(direction(&inb), Direction::Inbound);
        let gw = exchange(
            c("10.0.0.3:80", "10.0.0.1:40001"),
            c("10.0.0.3:40002", "10.0.0.2:8080"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(direction(&gw), Direction::Gateway);
    }

    #[test]
    fn ipv6_pods_get_their_directions() {
        let out = exchange(
            conn("[::1]:15001", "[fd77::1]:40000"),
            conn("[fd77::1]:40001", "[fd77::2]:8080"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(direction(&out), Direction::Outbound);
        let inb = exchange(
            conn("[fd77::2]:15006", "[fd77::1]:40001"),
            conn("[::1]:40002", "[::1]:8080"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(direction(&inb), Direction::Inbound);
        let gw = exchange(
            conn("[fd77::3]:80", "[fd77::1]:40001"),
            conn("[fd77::3]:40002", "[fd77::2]:8080"),
            (0, 1),
            (2, 3),
        );
        assert_eq!(direction(&gw), Direction::Gateway);
    }

    #[test]
    fn aggregates_request_and_response_hops() {
        let mut agg = HopAggregator::default();
        for i in 0..100u64 {
            let t = i * 1_000_000;
            agg.record(&exchange(
                conn("127.0.0.1:15001", "10.0.0.1:40000"),
                conn("10.0.0.1:40001", "10.0.0.2:8080"),
                (t, t + 200_000),           // 200 µs request hop
                (t + 500_000, t + 530_000), // 30 µs response hop
            ));
        }
        let s = agg.summary();
        let req = s[&HopKey {
            tgid: 9,
            direction: Direction::Outbound,
            leg: Leg::Request,
        }];
        let resp = s[&HopKey {
            tgid: 9,
            direction: Direction::Outbound,
            leg: Leg::Response,
        }];
        assert_eq!((req.count, resp.count), (100, 100));
        assert!((req.p50_us - 200.0).abs() < 0.5, "{req:?}");
        assert!((resp.p99_us - 30.0).abs() < 0.1, "{resp:?}");
        assert_eq!(agg.exchanges, 100);
    }
}
