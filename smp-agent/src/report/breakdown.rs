//! Where the time goes: the per-request breakdown of the mesh's overhead in details.json
//! (outbound sidecar, network leg, inbound sidecar, unexplained) and its summary lines
//! (docs/hops.md, Where the time goes). Built from the paths the tracker joined
//! ([`crate::aggregate::path`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::details::{Distribution, HistogramCodecError};
use crate::aggregate::{
    hops::Leg,
    path::{Part, PartsAt, PathCounts, Peer, Place, RttEstimates},
};

/// The quantiles of the breakdown (`profile` prints them; the report draws a bar for each).
pub const QUANTILES: [(&str, f64); 3] = [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)];

/// The breakdown document (details.json `breakdown`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breakdown {
    /// Paths joined across two proxies of the node, and why the others were not.
    pub paths: PathCounts,
    /// The network leg between each pair of proxies, per leg.
    #[serde(default)]
    pub network_legs: Vec<NetworkLeg>,
    /// Each part's distribution over the outbound → inbound paths.
    #[serde(default)]
    pub parts: BTreeMap<Part, Distribution>,
    /// The parts of the requests at each quantile of their time in the mesh.
    #[serde(default)]
    pub at: Vec<BreakdownAt>,
    /// TCP's round-trip estimates of each proxy's upstream connections: the network leg's
    /// only figure where the peer is not a tracked proxy of this node (an estimate, not a
    /// measurement per request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtt_estimates: Vec<RttEstimate>,
}

/// TCP's own round-trip estimates of one proxy's upstream connections, one value per exchange
/// (the connection's figures when its response arrived).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RttEstimate {
    /// The proxy whose upstream connections they are.
    pub proxy: String,
    /// `on_node` (a tracked proxy of this node is the peer: the leg is also measured) or
    /// `not_on_node`.
    pub peer: Peer,
    /// Smoothed RTT (a round trip: both legs, and any delay of the peer's acknowledgement).
    pub srtt: Distribution,
    /// Its mean deviation.
    pub rttvar: Distribution,
    /// The connection's windowed minimum RTT: the closest to the wire's round trip.
    pub min_rtt: Distribution,
    /// Exchanges whose connection's estimate was unknown.
    pub unknown: u64,
}

/// The network leg from one proxy to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkLeg {
    /// The proxy that wrote the message (the request's sender for `request`).
    pub source: String,
    /// The proxy that received it.
    pub destination: String,
    pub leg: Leg,
    /// From the source's write to the destination's socket receiving the bytes.
    pub latency: Distribution,
}

/// The breakdown at one quantile, ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakdownAt {
    /// `p50`, `p90`, `p99`.
    pub percentile: String,
    /// Each part: mean over the requests whose total time in the mesh lies at this quantile.
    pub parts_ms: BTreeMap<Part, f64>,
    pub outbound_ms: f64,
    pub network_ms: f64,
    pub inbound_ms: f64,
    /// outbound + network + inbound.
    pub in_mesh_ms: f64,
    /// Requests averaged.
    pub paths: usize,
    /// meshed − baseline at this percentile (absent without a baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead_ms: Option<f64>,
    /// overhead − in the mesh: time the mesh added that no part holds (negative: the parts
    /// hold more than the difference of the two runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unexplained_ms: Option<f64>,
    /// The largest of outbound, network, inbound and unexplained.
    pub largest: String,
}

impl BreakdownAt {
    /// From the tracker's parts at a quantile and the overhead at the same percentile.
    pub fn new(percentile: &str, at: &PartsAt, overhead_ms: Option<f64>) -> Self {
        let ms = |ns: f64| ns / 1e6;
        let place = |p: Place| {
            at.parts_ns
                .iter()
                .filter(|(k, _)| k.place() == p)
                .map(|(_, v)| ms(*v))
                .sum::<f64>()
        };
        let (outbound, network, inbound) = (
            place(Place::Outbound),
            place(Place::Network),
            place(Place::Inbound),
        );
        let in_mesh = ms(at.total_ns);
        let unexplained = overhead_ms.map(|o| o - in_mesh);
        let mut largest = ("outbound", outbound);
        for c in [
            ("network", network),
            ("inbound", inbound),
            ("unexplained", unexplained.unwrap_or(0.0)),
        ] {
            if c.1 > largest.1 {
                largest = c;
            }
        }
        Self {
            percentile: percentile.to_string(),
            parts_ms: at.parts_ns.iter().map(|(k, v)| (*k, ms(*v))).collect(),
            outbound_ms: outbound,
            network_ms: network,
            inbound_ms: inbound,
            in_mesh_ms: in_mesh,
            paths: at.paths,
            overhead_ms,
            unexplained_ms: unexplained,
            largest: largest.0.to_string(),
        }
    }

    /// Share of the overhead the parts explain (in the mesh / overhead), when known.
    pub fn explained(&self) -> Option<f64> {
        self.overhead_ms
            .filter(|o| o.abs() > f64::EPSILON)
            .map(|o| self.in_mesh_ms / o)
    }
}

/// Distributions of the parts, from the tracker's histograms.
pub fn part_distributions(
    parts: &BTreeMap<Part, hdrhistogram::Histogram<u64>>,
) -> Result<BTreeMap<Part, Distribution>, HistogramCodecError> {
    parts
        .iter()
        .map(|(p, h)| Ok((*p, Distribution::from_histogram_ns(h)?)))
        .collect()
}

/// The estimate document of one proxy's estimates.
pub fn rtt_estimate(
    proxy: String,
    peer: Peer,
    e: &RttEstimates,
) -> Result<RttEstimate, HistogramCodecError> {
    Ok(RttEstimate {
        proxy,
        peer,
        srtt: Distribution::from_histogram_ns(&e.srtt)?,
        rttvar: Distribution::from_histogram_ns(&e.rttvar)?,
        min_rtt: Distribution::from_histogram_ns(&e.min_rtt)?,
        unknown: e.unknown,
    })
}

/// What could hold time that no part holds, for the summary when "unexplained" is largest.
pub const UNEXPLAINED_HINT: &str = "a process on the path the agent does not track (a proxy \
discovery did not find, a node agent or CNI proxy), or time outside the proxies' sockets (the \
app slowed down by the mesh's CPU use, a queue in the kernel before the first socket)";

/// The summary lines (`profile`): one per quantile, then, when the self-consistency check
/// failed (`failed`), the largest part and what could hold it.
pub fn summary_lines(b: &Breakdown, failed: bool) -> Vec<String> {
    let c = &b.paths;
    let mut lines = vec![format!(
        "where the time goes ({} requests joined across two sidecars of this node; {} paths \
         joined in all; not joined: no peer on this node {}, ambiguous {}, unclaimed {}, \
         overflow {}, send unseen {}):",
        c.breakdown, c.joined, c.no_peer, c.ambiguous, c.unclaimed, c.overflow, c.send_unseen
    )];
    if b.at.is_empty() {
        lines.push(
            "  no request was joined across an outbound and an inbound sidecar of this node: \
             no breakdown"
                .to_string(),
        );
    }
    let part = |a: &BreakdownAt, p: Part| a.parts_ms.get(&p).copied().unwrap_or(0.0);
    for a in &b.at {
        let mut s = format!(
            "  {}: outbound {:.3} ms (wait {:.3}, hop {:.3}, send {:.3}) + network {:.3} \
             (request {:.3}, response {:.3}) + inbound {:.3} (wait {:.3}, hop {:.3}, send {:.3}) \
             = {:.3} in the mesh",
            a.percentile,
            a.outbound_ms,
            part(a, Part::OutboundWait),
            part(a, Part::OutboundHop),
            part(a, Part::OutboundSend),
            a.network_ms,
            part(a, Part::NetworkRequest),
            part(a, Part::NetworkResponse),
            a.inbound_ms,
            part(a, Part::InboundWait),
            part(a, Part::InboundHop),
            part(a, Part::InboundSend),
            a.in_mesh_ms,
        );
        if let (Some(o), Some(u)) = (a.overhead_ms, a.unexplained_ms) {
            s.push_str(&format!("; overhead {o:.3}, unexplained {u:.3}"));
            if let Some(e) = a.explained() {
                s.push_str(&format!(" ({:.0}% explained)", 100.0 * e));
            }
        }
        lines.push(s);
    }
    for e in &b.rtt_estimates {
        let p = |d: &Distribution| d.percentiles.p50;
        lines.push(format!(
            "  TCP's round-trip estimate of {}'s upstream connections (an estimate, not measured \
             per request), peer {}: srtt p50 {:.3} ms (rttvar {:.3}), min RTT p50 {:.3} ms; \
             {} exchanges, {} unknown",
            e.proxy,
            match e.peer {
                Peer::OnNode => "on this node",
                Peer::NotOnNode => "not a tracked proxy of this node",
            },
            p(&e.srtt),
            p(&e.rttvar),
            p(&e.min_rtt),
            e.srtt.count,
            e.unknown
        ));
    }
    if failed {
        if let Some(a) = b.at.first() {
            let mut s = format!("  the largest part at {} is {}", a.percentile, a.largest);
            if a.largest == "unexplained" {
                s.push_str(&format!(": what could hold it: {UNEXPLAINED_HINT}"));
            }
            lines.push(s);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(parts: &[(Part, f64)]) -> PartsAt {
        let parts_ns: BTreeMap<Part, f64> = parts.iter().map(|(p, v)| (*p, v * 1e6)).collect();
        PartsAt {
            quantile: 0.5,
            total_ns: parts_ns.values().sum(),
            parts_ns,
            paths: 10,
        }
    }

    #[test]
    fn places_sum_their_parts_and_the_rest_is_unexplained() {
        let a = BreakdownAt::new(
            "p50",
            &at(&[
                (Part::OutboundHop, 0.2),
                (Part::OutboundWait, 0.05),
                (Part::NetworkRequest, 0.01),
                (Part::NetworkResponse, 0.02),
                (Part::InboundHop, 0.3),
            ]),
            Some(0.7),
        );
        assert!((a.outbound_ms - 0.25).abs() < 1e-9);
        assert!((a.network_ms - 0.03).abs() < 1e-9);
        assert!((a.inbound_ms - 0.3).abs() < 1e-9);
        assert!((a.in_mesh_ms - 0.58).abs() < 1e-9);
        assert!((a.unexplained_ms.unwrap() - 0.12).abs() < 1e-9);
        assert_eq!(a.largest, "inbound");
        assert!((a.explained().unwrap() - 0.58 / 0.7).abs() < 1e-9);
    }

    #[test]
    fn unexplained_is_named_with_what_could_hold_it_when_the_check_failed() {
        let a = BreakdownAt::new("p50", &at(&[(Part::InboundHop, 0.1)]), Some(1.0));
        assert_eq!(a.largest, "unexplained");
        let b = Breakdown {
            at: vec![a],
            ..Breakdown::default()
        };
        let lines = summary_lines(&b, true);
        assert!(lines[1].contains("unexplained 0.900"), "{lines:?}");
        assert!(lines[2].contains("largest part at p50 is unexplained"));
        assert!(lines[2].contains(UNEXPLAINED_HINT));
        assert_eq!(summary_lines(&b, false).len(), 2);
    }

    #[test]
    fn without_joined_paths_the_summary_says_so() {
        let lines = summary_lines(&Breakdown::default(), true);
        assert!(lines[1].contains("no breakdown"), "{lines:?}");
    }

    #[test]
    fn the_document_reads_back_as_written() {
        let b = Breakdown {
            paths: PathCounts {
                joined: 3,
                ..PathCounts::default()
            },
            at: vec![BreakdownAt::new(
                "p90",
                &at(&[(Part::OutboundSend, 0.1)]),
                None,
            )],
            ..Breakdown::default()
        };
        let text = serde_json::to_string(&b).unwrap();
        assert!(text.contains("\"outbound_send\""), "{text}");
        let back: Breakdown = serde_json::from_str(&text).unwrap();
        assert_eq!(back, b);
    }
}
