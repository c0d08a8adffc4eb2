//! A request's path through two proxies on one node, joined from their exchanges: the
//! network leg between them and the per-request breakdown of the mesh's time
//! (docs/hops.md, Where the time goes).
//!
//! Proxy A's exchange forwarded the request on its upstream U; proxy B's exchange read it on
//! its downstream D. U and D are the two ends of one TCP connection: U's local address is D's
//! remote one (the connecting end's address and port, unique on a node). On that connection
//! HTTP/1.x carries one exchange at a time, so B's exchange is the one that read its request
//! after A wrote it and wrote its response before A read it. The kernel's clock is the same
//! for both, so the time between A's write and B's socket receiving the bytes is the request's
//! network leg (the copy, the stack, the wire and the receiver's softirq), and back for the
//! response.
//!
//! Nothing is dropped unseen: every exchange that faced a peer but found no partner, or found
//! more than one, is counted under its reason ([`PathCounts`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::hops::{self, Direction, Exchange, Leg, TcpRtt};

/// A part of a request's time in the mesh, in the order the request meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// In the outbound sidecar's sockets before it read the request and the response.
    OutboundWait,
    /// Inside the outbound sidecar: request hop + response hop.
    OutboundHop,
    /// The outbound sidecar's write of the response to its app.
    OutboundSend,
    /// From the outbound sidecar's request write to the inbound sidecar's socket receiving it.
    NetworkRequest,
    /// From the inbound sidecar's response write to the outbound sidecar's socket receiving it.
    NetworkResponse,
    /// In the inbound sidecar's sockets before it read the request and the response.
    InboundWait,
    /// Inside the inbound sidecar: request hop + response hop.
    InboundHop,
    /// The inbound sidecar's write of the request to its app.
    InboundSend,
}

impl Part {
    pub const ALL: [Part; 8] = [
        Part::OutboundWait,
        Part::OutboundHop,
        Part::OutboundSend,
        Part::NetworkRequest,
        Part::NetworkResponse,
        Part::InboundWait,
        Part::InboundHop,
        Part::InboundSend,
    ];

    /// Which of the three places the part is in.
    pub const fn place(self) -> Place {
        match self {
            Part::OutboundWait | Part::OutboundHop | Part::OutboundSend => Place::Outbound,
            Part::NetworkRequest | Part::NetworkResponse => Place::Network,
            Part::InboundWait | Part::InboundHop | Part::InboundSend => Place::Inbound,
        }
    }
}

/// Where a part of the time is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    Outbound,
    Network,
    Inbound,
}

/// Where an upstream exchange's peer is, for TCP's round-trip estimate of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    /// A tracked proxy of this node read it (joined or ambiguous): the network leg is
    /// measured; the estimate is kept to compare.
    OnNode,
    /// No tracked proxy of this node read it (`no_peer`): another node, or an untracked
    /// process; TCP's estimate is all there is.
    NotOnNode,
}

impl Peer {
    pub const fn name(self) -> &'static str {
        match self {
            Peer::OnNode => "on_node",
            Peer::NotOnNode => "not_on_node",
        }
    }
}

/// TCP's round-trip estimates of the connections of a proxy's upstream exchanges, one value
/// per exchange (ns; the kernel keeps µs): the network leg's estimate where it is not
/// measured. A round trip: both legs, plus whatever delayed the peer's acknowledgement.
#[derive(Debug, Clone)]
pub struct RttEstimates {
    /// Smoothed RTT.
    pub srtt: Histogram<u64>,
    /// Its mean deviation (`rttvar`).
    pub rttvar: Histogram<u64>,
    /// The connection's windowed minimum RTT.
    pub min_rtt: Histogram<u64>,
    /// Exchanges whose connection's estimate was unknown (an HTTP/2 stream, a kernel whose
    /// `tcp_sock` layout the agent could not read, no RTT sample yet).
    pub unknown: u64,
}

impl Default for RttEstimates {
    fn default() -> Self {
        Self {
            srtt: hops::new_histogram(),
            rttvar: hops::new_histogram(),
            min_rtt: hops::new_histogram(),
            unknown: 0,
        }
    }
}

impl RttEstimates {
    fn record(&mut self, r: &TcpRtt) {
        if r.srtt_us == 0 {
            self.unknown += 1;
            return;
        }
        let ns = |us: u32| (u64::from(us) * 1_000).max(1);
        self.srtt.saturating_record(ns(r.srtt_us));
        self.rttvar.saturating_record(ns(r.rttvar_us));
        if r.min_rtt_us != 0 {
            self.min_rtt.saturating_record(ns(r.min_rtt_us));
        }
    }
}

/// One joined request's parts, ns (saturated at `u32::MAX`, 4.3 s).
pub type PathSample = [u32; 8];

/// Why exchanges facing a peer were not joined, and how many were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCounts {
    /// Exchanges of two proxies joined into one path (any directions).
    pub joined: u64,
    /// Of those, outbound → inbound paths in the breakdown.
    pub breakdown: u64,
    /// An upstream exchange whose connection no tracked proxy's exchange read on this node:
    /// its peer is on another node, or not tracked, or its exchange was not paired.
    pub no_peer: u64,
    /// An upstream exchange that more than one waiting exchange fitted (HTTP/2 streams
    /// overlapping on the connection): not joined rather than guessed.
    pub ambiguous: u64,
    /// A downstream exchange from a peer address that no upstream exchange took: the peer is
    /// off-node or untracked, or its exchange was not paired.
    pub unclaimed: u64,
    /// Downstream exchanges given up unclaimed because [`WAITING_CAP`] were waiting.
    pub overflow: u64,
    /// Outbound → inbound paths whose response write's return was never seen (left out of
    /// the breakdown; their network legs are recorded).
    pub send_unseen: u64,
    /// Breakdown samples kept ([`SAMPLES_CAP`] at most; beyond, a uniform sample of all).
    pub sampled: u64,
}

/// Downstream exchanges waiting for their upstream partner, at most.
pub const WAITING_CAP: usize = 65_536;
/// A waiting exchange older than this (its response written that long before the newest
/// exchange's) is given up: its partner would have come within milliseconds.
pub const WAIT_NS: u64 = 5_000_000_000;
/// How often waiting exchanges are looked at for expiry (kernel time).
const EXPIRE_EVERY_NS: u64 = 100_000_000;
/// Breakdown samples kept at most (32 bytes each).
pub const SAMPLES_CAP: usize = 131_072;
/// Outbound paths waiting for their response write's return, at most.
const PENDING_CAP: usize = 65_536;

/// A downstream exchange from a peer, waiting for the upstream exchange that sent it.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    proxy: usize,
    direction: Direction,
    x: Exchange,
}

/// The network leg histograms, per (source proxy, destination proxy, leg), ns: the source
/// wrote the message (the request's sender for a request, its receiver for the response).
pub type LegHistograms = BTreeMap<(usize, usize, Leg), Histogram<u64>>;

/// The joiner (see the module docs). Proxies are indices the caller gives.
#[derive(Debug)]
pub struct PathJoiner {
    waiting: HashMap<SocketAddr, VecDeque<Waiting>>,
    waiting_len: usize,
    newest_ns: u64,
    next_expire_ns: u64,
    /// Joined outbound → inbound paths waiting for the outbound's response send, by (thread,
    /// response write entry).
    /// One HTTP/2 write may forward several responses: each its own path.
    pending: HashMap<(u32, u64), Vec<PathSample>>,
    /// Paths in `pending`.
    pending_len: usize,
    pub legs: LegHistograms,
    /// TCP's round-trip estimates per (proxy whose upstream it is, where the peer is).
    pub estimates: BTreeMap<(usize, Peer), RttEstimates>,
    /// Each part's distribution over the breakdown's paths, ns.
    pub parts: BTreeMap<Part, Histogram<u64>>,
    pub samples: Vec<PathSample>,
    rng: u64,
    pub counts: PathCounts,
}

impl Default for PathJoiner {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
            waiting_len: 0,
            newest_ns: 0,
            next_expire_ns: 0,
            pending: HashMap::new(),
            pending_len: 0,
            legs: BTreeMap::new(),
            estimates: BTreeMap::new(),
            parts: BTreeMap::new(),
            samples: Vec::new(),
            rng: 0x9e37_79b9_7f4a_7c15,
            counts: PathCounts::default(),
        }
    }
}

/// The connecting end's address of a connection between two hosts' (or pods') addresses;
/// `None` for loopback or a connection within one address (a sidecar and its app).
fn peer_facing(local: Option<SocketAddr>, remote: Option<SocketAddr>) -> Option<()> {
    let (l, r) = (local?, remote?);
    let (li, ri) = (hops::canonical_ip(l.ip()), hops::canonical_ip(r.ip()));
    (!li.is_loopback() && !ri.is_loopback() && li != ri).then_some(())
}

fn ns32(ns: u64) -> u32 {
    u32::try_from(ns).unwrap_or(u32::MAX)
}

impl PathJoiner {
    /// One exchange of proxy `proxy`, in the order the kernel emitted them.
    pub fn exchange(&mut self, proxy: usize, direction: Direction, x: &Exchange) {
        self.newest_ns = self.newest_ns.max(x.resp_out_ns);
        if peer_facing(x.upstream.local, x.upstream.remote).is_some() {
            self.join(proxy, direction, x);
        }
        if peer_facing(x.downstream.local, x.downstream.remote).is_some() {
            if let Some(from) = x.downstream.remote {
                self.wait(
                    from,
                    Waiting {
                        proxy,
                        direction,
                        x: *x,
                    },
                );
            }
        }
        self.expire();
    }

    /// The write that forwarded a response (thread `tid`, entered at `out_ns`) returned at
    /// `sent_ns`: completes the outbound path waiting for it.
    pub fn sent(&mut self, tid: u32, out_ns: u64, sent_ns: u64) {
        for mut parts in self.pending.remove(&(tid, out_ns)).unwrap_or_default() {
            self.pending_len -= 1;
            parts[Part::OutboundSend as usize] = ns32(sent_ns.saturating_sub(out_ns));
            self.sample(parts);
        }
    }

    fn wait(&mut self, from: SocketAddr, w: Waiting) {
        if self.waiting_len >= WAITING_CAP {
            // Bounded: every waiting exchange is given up, counted (a node with this many
            // unanswered exchanges facing peers within seconds has bigger trouble).
            self.counts.overflow += self.waiting_len as u64;
            self.waiting.clear();
            self.waiting_len = 0;
        }
        self.waiting
            .entry(hops::canonical_addr(from))
            .or_default()
            .push_back(w);
        self.waiting_len += 1;
    }

    /// Gives up waiting exchanges [`WAIT_NS`] older than the newest (counted), every
    /// [`EXPIRE_EVERY_NS`] of the kernel's time at most.
    fn expire(&mut self) {
        if self.newest_ns < self.next_expire_ns || self.waiting_len == 0 {
            return;
        }
        self.next_expire_ns = self.newest_ns + EXPIRE_EVERY_NS;
        let horizon = self.newest_ns.saturating_sub(WAIT_NS);
        let mut gone = 0;
        self.waiting.retain(|_, q| {
            while q.front().is_some_and(|w| w.x.resp_out_ns < horizon) {
                q.pop_front();
                gone += 1;
            }
            !q.is_empty()
        });
        self.waiting_len -= gone;
        self.counts.unclaimed += gone as u64;
    }

    /// Proxy `proxy`'s exchange `x` sent its request on a connection to a peer: the waiting
    /// exchange that read it, if exactly one fits.
    fn join(&mut self, proxy: usize, direction: Direction, x: &Exchange) {
        let Some(key) = x.upstream.local.map(hops::canonical_addr) else {
            return;
        };
        let Some(q) = self.waiting.get_mut(&key) else {
            self.counts.no_peer += 1;
            self.estimate(proxy, Peer::NotOnNode, x);
            return;
        };
        // The peer read the request after it was written and wrote the response before it
        // was read: HTTP/1.x's one exchange at a time on the connection.
        let fits = |w: &Waiting| {
            w.x.req_in_ns >= x.req_out_ns
                && w.x.req_arrival_ns >= x.req_out_ns
                && w.x.resp_out_ns <= x.resp_in_ns
                && w.x.resp_out_ns <= x.resp_arrival_ns
        };
        let mut found = q.iter().enumerate().filter(|(_, w)| fits(w));
        let (Some((i, _)), None) = (found.next(), found.next()) else {
            if q.iter().any(fits) {
                self.counts.ambiguous += 1;
                self.estimate(proxy, Peer::OnNode, x);
            } else {
                self.counts.no_peer += 1;
                self.estimate(proxy, Peer::NotOnNode, x);
            }
            return;
        };
        let peer = q.remove(i).expect("index from the queue");
        if q.is_empty() {
            self.waiting.remove(&key);
        }
        self.waiting_len -= 1;
        self.counts.joined += 1;
        self.estimate(proxy, Peer::OnNode, x);
        let y = &peer.x;
        let net_req = y.req_arrival_ns.saturating_sub(x.req_out_ns);
        let net_resp = x.resp_arrival_ns.saturating_sub(y.resp_out_ns);
        for (key, ns) in [
            ((proxy, peer.proxy, Leg::Request), net_req),
            ((peer.proxy, proxy, Leg::Response), net_resp),
        ] {
            self.legs
                .entry(key)
                .or_insert_with(hops::new_histogram)
                .saturating_record(ns.max(1));
        }
        if direction != Direction::Outbound || peer.direction != Direction::Inbound {
            return;
        }
        let mut parts = [0u32; 8];
        let mut set = |p: Part, ns: u64| parts[p as usize] = ns32(ns);
        set(
            Part::OutboundWait,
            x.request_wait_ns() + x.response_wait_ns(),
        );
        set(Part::OutboundHop, x.request_hop_ns() + x.response_hop_ns());
        set(Part::NetworkRequest, net_req);
        set(Part::NetworkResponse, net_resp);
        set(
            Part::InboundWait,
            y.request_wait_ns() + y.response_wait_ns(),
        );
        set(Part::InboundHop, y.request_hop_ns() + y.response_hop_ns());
        set(Part::InboundSend, y.request_send_ns());
        if self.pending_len >= PENDING_CAP {
            self.finish();
        }
        self.pending
            .entry((x.tid, x.resp_out_ns))
            .or_default()
            .push(parts);
        self.pending_len += 1;
    }

    fn estimate(&mut self, proxy: usize, peer: Peer, x: &Exchange) {
        self.estimates
            .entry((proxy, peer))
            .or_default()
            .record(&x.upstream_rtt);
    }

    /// A complete outbound → inbound path: into the parts' histograms and the samples.
    fn sample(&mut self, parts: PathSample) {
        self.counts.breakdown += 1;
        for p in Part::ALL {
            self.parts
                .entry(p)
                .or_insert_with(hops::new_histogram)
                .saturating_record(u64::from(parts[p as usize]));
        }
        // Reservoir sampling (Algorithm R): every path equally likely to be kept.
        let n = self.counts.breakdown;
        if self.samples.len() < SAMPLES_CAP {
            self.samples.push(parts);
        } else {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let j = self.rng % n;
            if let Some(s) = self.samples.get_mut(j as usize) {
                *s = parts;
            }
        }
        self.counts.sampled = self.samples.len() as u64;
    }

    /// Paths joined but still waiting for their response send (at the end of a window:
    /// counted as `send_unseen` by [`PathJoiner::finish`]).
    pub fn finish(&mut self) {
        self.counts.send_unseen += self.pending_len as u64;
        self.pending.clear();
        self.pending_len = 0;
    }
}

/// The parts of the paths around one quantile of their total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartsAt {
    /// Quantile of the total (0.5, 0.9, 0.99).
    pub quantile: f64,
    /// Mean of each part over the paths whose total lies within ±0.5 % of ranks of the
    /// quantile, ns; they sum to `total_ns`.
    pub parts_ns: BTreeMap<Part, f64>,
    pub total_ns: f64,
    /// Paths averaged.
    pub paths: usize,
}

/// The breakdown at `quantile`: the parts of the requests whose total time in the mesh lies
/// at that quantile (mean over a band of ±0.5 % of the paths' ranks, at least one path).
/// `None` without samples.
pub fn parts_at(samples: &[PathSample], quantile: f64) -> Option<PartsAt> {
    if samples.is_empty() {
        return None;
    }
    let total = |s: &PathSample| s.iter().map(|&v| u64::from(v)).sum::<u64>();
    let mut ranked: Vec<&PathSample> = samples.iter().collect();
    ranked.sort_by_key(|s| total(s));
    let n = ranked.len();
    let at = ((quantile.clamp(0.0, 1.0) * n as f64).ceil() as usize).clamp(1, n) - 1;
    let half = n / 200;
    let (lo, hi) = (at.saturating_sub(half), (at + half).min(n - 1));
    let band = &ranked[lo..=hi];
    let mut parts_ns = BTreeMap::new();
    for p in Part::ALL {
        let sum: u64 = band.iter().map(|s| u64::from(s[p as usize])).sum();
        parts_ns.insert(p, sum as f64 / band.len() as f64);
    }
    Some(PartsAt {
        quantile,
        total_ns: parts_ns.values().sum(),
        parts_ns,
        paths: band.len(),
    })
}

#[cfg(test)]
mod tests;
