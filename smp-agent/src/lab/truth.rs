//! The ground-truth proxy's request log, and the check of the probes' exchanges against it.
//!
//! `lab proxy` knows, for every request it forwards, which downstream connection it came in on,
//! which upstream connection it left on, and when (its own clock at the socket, CLOCK_MONOTONIC
//! like the probes'). It serves that log on its admin port (`GET /requests`, one
//! [`TruthRequest`] per line). [`check`] holds each exchange the kernel paired against it: a
//! pairing is right only if that very pair of connections carried a request at that time. A
//! constant delay hides a mis-pairing in the histograms (every hop is D); this does not.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use serde::Serialize;

use crate::aggregate::hops::{Exchange, PairedBy};

/// One request the ground-truth proxy forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruthRequest {
    /// Downstream connection: the proxy's local address and the client's.
    pub down_local: SocketAddr,
    pub down_remote: SocketAddr,
    /// Upstream connection: the proxy's local address and the server's.
    pub up_local: SocketAddr,
    pub up_remote: SocketAddr,
    /// CLOCK_MONOTONIC ns: the read that brought the request head returned / the forwarding
    /// write was about to be issued.
    pub in_ns: u64,
    pub out_ns: u64,
    /// The proxy's clock on the far side of those two syscalls, when it keeps it.
    pub around: Option<Around>,
}

/// The far side of the two syscalls a request's hop is timed by: the read that brought the
/// head was issued at `read_issued_ns` (it returned at [`TruthRequest::in_ns`]); the
/// forwarding write, issued at [`TruthRequest::out_ns`], returned at `write_returned_ns`. The
/// probe's stamps of those syscalls lie inside these brackets whatever the scheduler did: a
/// preemption between a syscall and the proxy's stamp of it widens the bracket, and the
/// probe's stamp stays inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Around {
    pub read_issued_ns: u64,
    pub write_returned_ns: u64,
}

/// How far outside a bracket of [`Around`] a probe's stamp may be and still count as
/// inside: the proxy turns its `Instant`s into CLOCK_MONOTONIC from a base pair read within
/// a microsecond of each other.
pub const AROUND_SLACK_NS: u64 = 2_000;

impl TruthRequest {
    /// The log line: `down_local down_remote up_local up_remote in_ns out_ns
    /// read_issued_ns write_returned_ns` (the last two `-` when unknown).
    pub fn line(&self) -> String {
        let (r, w) = match self.around {
            Some(a) => (
                a.read_issued_ns.to_string(),
                a.write_returned_ns.to_string(),
            ),
            None => ("-".into(), "-".into()),
        };
        format!(
            "{} {} {} {} {} {} {r} {w}",
            self.down_local,
            self.down_remote,
            self.up_local,
            self.up_remote,
            self.in_ns,
            self.out_ns
        )
    }

    /// Reads [`TruthRequest::line`] back.
    pub fn parse(line: &str) -> Result<TruthRequest, String> {
        let [dl, dr, ul, ur, i, o, r, w] = record_fields(line)?;
        let around = match (r, w) {
            ("-", "-") => None,
            _ => Some(Around {
                read_issued_ns: u64_field(r, "read_issued_ns")?,
                write_returned_ns: u64_field(w, "write_returned_ns")?,
            }),
        };
        Ok(TruthRequest {
            down_local: addr_field(dl, "downstream local address")?,
            down_remote: addr_field(dr, "downstream remote address")?,
            up_local: addr_field(ul, "upstream local address")?,
            up_remote: addr_field(ur, "upstream remote address")?,
            in_ns: u64_field(i, "in_ns")?,
            out_ns: u64_field(o, "out_ns")?,
            around,
        })
    }

    /// Where the probe's request hop of this request must lie, ns: from the proxy's own
    /// clock of it (the narrowest: the read returned → the write issued) to the widest its
    /// brackets allow (the read issued → the write returned). `None` without [`Around`].
    pub fn hop_bounds_ns(&self) -> Option<(u64, u64)> {
        let a = self.around?;
        Some((
            self.out_ns.saturating_sub(self.in_ns),
            a.write_returned_ns.saturating_sub(a.read_issued_ns),
        ))
    }

    /// Whether an exchange's request stamps lie inside this request's syscall brackets
    /// (within [`AROUND_SLACK_NS`]); `None` without [`Around`].
    pub fn holds(&self, e: &Exchange) -> Option<bool> {
        let a = self.around?;
        let inside = |t: u64, from: u64, to: u64| {
            from.saturating_sub(AROUND_SLACK_NS) <= t && t <= to.saturating_add(AROUND_SLACK_NS)
        };
        Some(
            inside(e.req_in_ns, a.read_issued_ns, self.in_ns)
                && inside(e.req_out_ns, self.out_ns, a.write_returned_ns),
        )
    }
}

/// Parses a whole `GET /requests` body; the error names the line.
pub fn parse_log(text: &str) -> Result<Vec<TruthRequest>, String> {
    parse_record_lines(text, TruthRequest::parse)
}

/// The whitespace-separated fields of one record line of the lab's logs, exactly `N`.
pub(crate) fn record_fields<const N: usize>(line: &str) -> Result<[&str; N], String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    <[&str; N]>::try_from(w.as_slice()).map_err(|_| format!("want {N} fields, got {}", w.len()))
}

/// A socket address field (IPv4-mapped addresses as IPv4, as everywhere in the agent).
pub(crate) fn addr_field(s: &str, what: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map(crate::aggregate::hops::canonical_addr)
        .map_err(|e| format!("{what}: {e}"))
}

/// A number field.
pub(crate) fn u64_field(s: &str, what: &str) -> Result<u64, String> {
    s.parse::<u64>().map_err(|e| format!("{what}: {e}"))
}

/// Parses every record line of `text` (blank lines and `#` comments skipped); the error
/// names the line.
pub(crate) fn parse_record_lines<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| parse(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC now, ns: turns a wall-clock time into the probes' clock
/// (the two drift apart only when the wall clock is stepped or slewed).
pub fn realtime_minus_monotonic_ns() -> i128 {
    let mono = crate::host::clock_ns(libc::CLOCK_MONOTONIC);
    crate::host::clock_ns(libc::CLOCK_REALTIME) - mono
}

/// Parses an Envoy access log written with `lab::proxies::envoy::REQUEST_LOG_FORMAT`; wall
/// clock times become CLOCK_MONOTONIC with `offset_ns` ([`realtime_minus_monotonic_ns`]).
/// Requests Envoy did not forward (upstream `-`) are left out. The error names the line.
pub fn parse_envoy_log(text: &str, offset_ns: i128) -> Result<Vec<TruthRequest>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.is_empty() {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", i + 1);
        let [dl, dr, ul, ur, start, to_up] = w[..] else {
            return Err(at(format!("want 6 fields, got {}: {line:?}", w.len())));
        };
        if ul == "-" || ur == "-" || to_up == "-" {
            continue;
        }
        let addr = |s: &str, what: &str| {
            s.parse::<SocketAddr>()
                .map_err(|e| at(format!("{what} {s:?}: {e}")))
        };
        let (secs, micros) = start
            .split_once('.')
            .ok_or_else(|| at(format!("start time {start:?}: want <s>.<µs>")))?;
        let wall_us: i128 = secs
            .parse::<i128>()
            .ok()
            .zip(micros.parse::<i128>().ok())
            .map(|(s, us)| s * 1_000_000 + us)
            .ok_or_else(|| at(format!("start time {start:?}: want <s>.<µs>")))?;
        let to_up: u64 = to_up
            .parse()
            .map_err(|e| at(format!("µs to the upstream {to_up:?}: {e}")))?;
        let in_ns = u64::try_from(wall_us * 1000 - offset_ns).map_err(|_| {
            at(format!(
                "start time {start:?} is before the monotonic epoch"
            ))
        })?;
        out.push(TruthRequest {
            down_local: addr(dl, "downstream local address")?,
            down_remote: addr(dr, "downstream remote address")?,
            up_local: addr(ul, "upstream local address")?,
            up_remote: addr(ur, "upstream remote address")?,
            in_ns,
            out_ns: in_ns + to_up * 1000,
            around: None,
        });
    }
    Ok(out)
}

/// How far the probe's `t_out` may be from the proxy's own stamp of a request alone on its
/// connections (no neighbour to be nearer to).
pub const MAX_MATCH_NS: u64 = 10_000_000;

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Exchanges of the proxy held against the log.
    pub checked: u64,
    /// Paired to the right connections and the right request.
    pub right: u64,
    /// Paired across connections that never carried a request together.
    pub wrong_connection: u64,
    /// The right connections, but its forward not nearer to one logged request's than to
    /// that one's neighbours.
    pub wrong_request: u64,
    /// Exchanges matched to a request another exchange had matched already.
    pub duplicate: u64,
    /// Logged requests no exchange matched (dropped by design, e.g. each TLS connection's
    /// first, or lost).
    pub missed: u64,
    /// Largest |probe − proxy's stamp| of a right exchange, at t_in and t_out, ns (a
    /// preemption between a syscall and the proxy's stamp of it lands in one only).
    pub max_in_skew_ns: u64,
    pub max_out_skew_ns: u64,
    /// Right exchanges whose request the log brackets ([`Around`]), and how many of them had a
    /// stamp outside its bracket: a probe timing some other moment than the syscall.
    pub bracketed: u64,
    pub outside: u64,
    /// The first few wrong exchanges, told in words (which request of its downstream it was,
    /// what the log says that downstream really used), to find out why.
    pub examples: Vec<String>,
    /// Wrong exchanges by the index of their request on its downstream connection (as the
    /// log tells it): the 1st, 2nd, 3rd–10th, later. Mis-pairing at connection set-up
    /// (handshakes) looks different from mis-pairing in the steady state.
    pub wrong_by_index: [u64; 4],
    /// (right, wrong) exchanges by how the kernel found their response.
    pub by_pairing: BTreeMap<PairedBy, (u64, u64)>,
}

/// Wrong exchanges [`Verdict::examples`] keeps.
const EXAMPLES: usize = 8;

impl Verdict {
    /// Wrongly paired exchanges, all kinds.
    pub fn wrong(&self) -> u64 {
        self.wrong_connection + self.wrong_request + self.duplicate
    }
}

type Key = (SocketAddr, SocketAddr, SocketAddr, SocketAddr);

/// Holds the kernel's exchanges of one proxy against its request log. An exchange is right
/// when its connections carried a logged request whose forward its request's `t_out` is
/// nearer to than half the gap to that request's neighbours on the same connections (a
/// request alone there: [`MAX_MATCH_NS`]): it names that request and no other, however far
/// the proxy's own stamps are from the syscalls (an emulated guest stalls milliseconds
/// between a read and the proxy's stamp of it). How far the stamps are is reported apart
/// (`max_in_skew_ns`, `max_out_skew_ns`); the hop's timing is checked against the proxy's
/// clock by the tests' percentiles.
pub fn check(exchanges: &[Exchange], log: &[TruthRequest]) -> Verdict {
    check_matching(exchanges, log).0
}

/// [`check`], and which logged request each right exchange was matched to: (index into
/// `exchanges`, index into `log`).
pub fn check_matching(
    exchanges: &[Exchange],
    log: &[TruthRequest],
) -> (Verdict, Vec<(usize, usize)>) {
    let mut by_pair: HashMap<Key, BTreeMap<u64, (usize, u64)>> = HashMap::new();
    for (i, r) in log.iter().enumerate() {
        by_pair
            .entry((r.down_local, r.down_remote, r.up_local, r.up_remote))
            .or_default()
            .insert(r.out_ns, (i, r.in_ns));
    }
    // Per downstream connection, its requests (indices into `log`) by forward time.
    let mut by_down: HashMap<(SocketAddr, SocketAddr), Vec<usize>> = HashMap::new();
    for (i, r) in log.iter().enumerate() {
        by_down
            .entry((r.down_local, r.down_remote))
            .or_default()
            .push(i);
    }
    for reqs in by_down.values_mut() {
        reqs.sort_by_key(|&i| log[i].out_ns);
    }
    // Which request of its downstream the exchange's request was (1-based, of how many), and
    // the log's index of it: the one whose read is nearest the probe's. An HTTP/1.1
    // downstream carries one request at a time, so that is the request the downstream was
    // carrying when the probe saw it read. An HTTP/2 downstream's read may bring several
    // requests (the same read, the same stamps): of those, the one whose forward is nearest
    // the probe's.
    let place = |e: &Exchange| -> Option<(usize, usize, usize)> {
        let reqs = by_down.get(&(e.downstream.local?, e.downstream.remote?))?;
        let (n, &i) = reqs.iter().enumerate().min_by_key(|(_, &i)| {
            (
                log[i].in_ns.abs_diff(e.req_in_ns),
                log[i].out_ns.abs_diff(e.req_out_ns),
            )
        })?;
        Some((n + 1, reqs.len(), i))
    };
    let explain = |e: &Exchange, why: &str| -> String {
        let story = match place(e).map(|(n, of, i)| (n, of, &log[i])) {
            Some((n, of, q)) => format!(
                "request #{n} of {of} on its downstream; the log's nearest: upstream {} in {:+} µs out {:+} µs",
                q.up_local,
                (q.in_ns as i64 - e.req_in_ns as i64) / 1000,
                (q.out_ns as i64 - e.req_out_ns as i64) / 1000,
            ),
            None => "its downstream is not in the log".into(),
        };
        format!(
            "{why} ({:?}): downstream {:?} upstream {:?} tid {} req {}..{} resp {}..{} ({story})",
            e.paired_by,
            e.downstream.remote,
            e.upstream.local,
            e.tid,
            e.req_in_ns,
            e.req_out_ns,
            e.resp_in_ns,
            e.resp_out_ns
        )
    };
    let mut used = vec![false; log.len()];
    let mut v = Verdict::default();
    let wrong = |v: &mut Verdict, e: &Exchange, why: &str| {
        let bucket = match place(e).map(|(n, _, _)| n) {
            Some(1) => 0,
            Some(2) => 1,
            Some(3..=10) => 2,
            _ => 3,
        };
        v.wrong_by_index[bucket] += 1;
        v.by_pairing.entry(e.paired_by).or_default().1 += 1;
        // Half the examples from connection set-up, half from the steady state.
        let steady = bucket >= 2;
        let kept = v
            .examples
            .iter()
            .filter(|x| x.starts_with("steady"))
            .count();
        let room = if steady {
            kept < EXAMPLES / 2
        } else {
            v.examples.len() - kept < EXAMPLES / 2
        };
        if room {
            let phase = if steady { "steady" } else { "set-up" };
            v.examples.push(format!("{phase} {}", explain(e, why)));
        }
    };
    let mut matches = Vec::new();
    for (k, e) in exchanges.iter().enumerate() {
        v.checked += 1;
        let key = match (
            e.downstream.local,
            e.downstream.remote,
            e.upstream.local,
            e.upstream.remote,
        ) {
            (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
            _ => {
                v.wrong_connection += 1;
                wrong(&mut v, e, "wrong connection");
                continue;
            }
        };
        // The request its downstream carried then must have left on this very upstream: a
        // wrong upstream that carried this downstream's requests at other times (seconds
        // away) would otherwise match one of those.
        let Some((_, _, carried)) = place(e) else {
            v.wrong_connection += 1;
            wrong(&mut v, e, "wrong connection");
            continue;
        };
        let r = &log[carried];
        let Some(reqs) = by_pair
            .get(&key)
            .filter(|_| (r.up_local, r.up_remote) == (key.2, key.3))
        else {
            v.wrong_connection += 1;
            wrong(&mut v, e, "wrong connection");
            continue;
        };
        // The logged request whose forward is nearest the probe's t_out.
        let t = e.req_out_ns;
        let before = reqs.range(..=t).next_back();
        let after = reqs.range(t..).next();
        let nearest = [before, after]
            .into_iter()
            .flatten()
            .min_by_key(|(&out, _)| out.abs_diff(t));
        let Some((&out_ns, &(i, in_ns))) = nearest else {
            v.wrong_request += 1;
            wrong(&mut v, e, "wrong request");
            continue;
        };
        let (skew_in, skew_out) = (e.req_in_ns.abs_diff(in_ns), t.abs_diff(out_ns));
        let gap = [
            reqs.range(..out_ns).next_back().map(|(&o, _)| out_ns - o),
            reqs.range(out_ns + 1..).next().map(|(&o, _)| o - out_ns),
        ]
        .into_iter()
        .flatten()
        .min();
        let tolerance_ns = gap.map_or(MAX_MATCH_NS, |g| g / 2);
        if skew_out > tolerance_ns || i != carried {
            v.wrong_request += 1;
            wrong(&mut v, e, "wrong request");
            continue;
        }
        if std::mem::replace(&mut used[i], true) {
            v.duplicate += 1;
            wrong(&mut v, e, "duplicate");
            continue;
        }
        v.right += 1;
        v.by_pairing.entry(e.paired_by).or_default().0 += 1;
        v.max_in_skew_ns = v.max_in_skew_ns.max(skew_in);
        v.max_out_skew_ns = v.max_out_skew_ns.max(skew_out);
        matches.push((k, i));
        if let (Some(a), Some(inside)) = (log[i].around, log[i].holds(e)) {
            v.bracketed += 1;
            if !inside {
                v.outside += 1;
                if v.examples.len() < EXAMPLES {
                    v.examples.push(format!(
                        "outside: read {}..{} probe {}; write {}..{} probe {} ({})",
                        a.read_issued_ns,
                        log[i].in_ns,
                        e.req_in_ns,
                        log[i].out_ns,
                        a.write_returned_ns,
                        e.req_out_ns,
                        explain(e, "outside")
                    ));
                }
            }
        }
    }
    v.missed = used.iter().filter(|&&u| !u).count() as u64;
    (v, matches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::hops::Conn;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn req(down_port: u16, up_port: u16, in_ns: u64, out_ns: u64) -> TruthRequest {
        TruthRequest {
            down_local: a("127.0.0.1:15001"),
            down_remote: a(&format!("10.77.0.1:{down_port}")),
            up_local: a(&format!("10.77.0.1:{up_port}")),
            up_remote: a("10.77.0.2:15006"),
            in_ns,
            out_ns,
            around: None,
        }
    }

    fn exchange(r: &TruthRequest, skew: u64) -> Exchange {
        Exchange {
            req_in_ns: r.in_ns + skew,
            req_out_ns: r.out_ns + skew,
            downstream: Conn {
                local: Some(r.down_local),
                remote: Some(r.down_remote),
                ..Conn::default()
            },
            upstream: Conn {
                local: Some(r.up_local),
                remote: Some(r.up_remote),
                ..Conn::default()
            },
            ..Exchange::default()
        }
    }

    #[test]
    fn lines_round_trip_and_bad_lines_name_the_field() {
        let r = req(40000, 50000, 1_000, 2_000);
        assert_eq!(TruthRequest::parse(&r.line()), Ok(r));
        let log = format!("{}\n\n{}\n", r.line(), r.line());
        assert_eq!(parse_log(&log).unwrap().len(), 2);
        let err = parse_log(&format!(
            "{}\n1.2.3.4:5 x 1.2.3.4:5 1.2.3.4:5 1 2 - -",
            r.line()
        ))
        .unwrap_err();
        assert!(
            err.starts_with("line 2: downstream remote address: ") && !err.contains("\"x\""),
            "{err}"
        );
        let err = parse_log("1 2 3").unwrap_err();
        assert!(err.contains("want 8 fields, got 3"), "{err}");
        let bracketed = TruthRequest {
            around: Some(Around {
                read_issued_ns: 900,
                write_returned_ns: 2_100,
            }),
            ..r
        };
        assert_eq!(TruthRequest::parse(&bracketed.line()), Ok(bracketed));
        let err =
            TruthRequest::parse("1.2.3.4:5 1.2.3.4:5 1.2.3.4:5 1.2.3.4:5 1 2 - x").unwrap_err();
        assert!(err.starts_with("read_issued_ns: "), "{err}");
    }

    #[test]
    fn requests_one_multiplexed_read_brought_are_told_apart_by_their_forwards() {
        // One HTTP/2 downstream read brought three requests (the same read stamps), each
        // forwarded on its own pooled HTTP/1.1 upstream.
        let log = [
            req(40000, 50000, 1_000_000, 1_200_000),
            req(40000, 50001, 1_000_000, 1_250_000),
            req(40000, 50002, 1_000_000, 1_300_000),
        ];
        let right: Vec<Exchange> = log.iter().rev().map(|r| exchange(r, 1_000)).collect();
        let v = check(&right, &log);
        assert_eq!(
            (v.checked, v.right, v.wrong(), v.missed),
            (3, 3, 0, 0),
            "{v:?}"
        );
        // A forward taken for its neighbour's: its upstream never carried that request.
        let mut swapped = exchange(&log[0], 0);
        swapped.req_out_ns = log[1].out_ns;
        let v = check(&[swapped], &log);
        assert_eq!((v.right, v.wrong_connection), (0, 1), "{v:?}");
    }

    #[test]
    fn right_pairings_pass_and_every_kind_of_wrong_one_is_told_apart() {
        // Two connections, two requests each, 100 ms apart.
        let log = [
            req(40000, 50000, 1_000_000, 3_000_000),
            req(40000, 50000, 101_000_000, 103_000_000),
            req(40001, 50001, 2_000_000, 4_000_000),
            req(40001, 50001, 102_000_000, 104_000_000),
        ];
        let right: Vec<Exchange> = log.iter().map(|r| exchange(r, 5_000)).collect();
        let v = check(&right, &log);
        assert_eq!((v.checked, v.right, v.wrong(), v.missed), (4, 4, 0, 0));
        assert_eq!((v.max_in_skew_ns, v.max_out_skew_ns), (5_000, 5_000));

        // Request 0's downstream with connection 1's upstream: a cross-connection pairing.
        let mut crossed = exchange(&log[0], 0);
        crossed.upstream = exchange(&log[2], 0).upstream;
        // The right connections, a request's times shifted past half the gap to its neighbour.
        let shifted = exchange(&log[1], 60_000_000);
        // The same request twice.
        let twice = [exchange(&log[3], 0), exchange(&log[3], 10)];
        let all = [vec![crossed, shifted], twice.to_vec()].concat();
        let v = check(&all, &log);
        assert_eq!(v.checked, 4);
        assert_eq!(v.right, 1);
        assert_eq!(v.wrong_connection, 1);
        assert_eq!(v.wrong_request, 1);
        assert_eq!(v.duplicate, 1);
        assert_eq!(v.missed, 3);
        assert_eq!(v.wrong(), 3);
    }

    #[test]
    fn a_wrong_upstream_that_the_downstream_used_at_other_times_is_wrong() {
        // Downstream 40000 went to upstream 50000 at 1 ms, to upstream 50001 at 0.5 s and 3 s.
        let log = [
            req(40000, 50000, 1_000_000, 1_100_000),
            req(40000, 50001, 500_000_000, 500_100_000),
            req(40000, 50001, 3_000_000_000, 3_000_100_000),
        ];
        // The probe paired the 1 ms request with upstream 50001: half a second from that
        // pair's nearest request, well inside half the gap between that pair's two requests.
        let mut e = exchange(&log[0], 0);
        e.upstream = exchange(&log[1], 0).upstream;
        let v = check(&[e], &log);
        assert_eq!((v.right, v.wrong_connection), (0, 1), "{v:?}");
        // Its request read nearest another request of the same pair: the wrong request.
        let late = exchange(&log[2], 0);
        let mut early = late;
        early.req_in_ns = log[1].in_ns;
        let v = check(&[early], &log);
        assert_eq!((v.right, v.wrong_request), (0, 1), "{v:?}");
        let v = check(&[late, exchange(&log[0], 0)], &log);
        assert_eq!((v.right, v.wrong()), (2, 0), "{v:?}");
    }

    #[test]
    fn probe_stamps_outside_the_syscall_brackets_are_counted() {
        // The proxy read from 0.9 to 1 ms, wrote from 3 to 3.1 ms.
        let r = TruthRequest {
            around: Some(Around {
                read_issued_ns: 900_000,
                write_returned_ns: 3_100_000,
            }),
            ..req(40000, 50000, 1_000_000, 3_000_000)
        };
        assert_eq!(r.hop_bounds_ns(), Some((2_000_000, 2_200_000)));
        let mut inside = exchange(&r, 0);
        inside.req_in_ns = 950_000;
        inside.req_out_ns = 3_050_000;
        assert_eq!(r.holds(&inside), Some(true));
        // A read stamp 10 µs before the read was issued, or a write stamp 10 µs after it
        // returned: outside.
        let early = Exchange {
            req_in_ns: 890_000,
            ..inside
        };
        let late = Exchange {
            req_out_ns: 3_110_000,
            ..inside
        };
        assert_eq!(r.holds(&early), Some(false));
        assert_eq!(r.holds(&late), Some(false));
        let (v, matches) = check_matching(&[late], &[r]);
        assert_eq!((v.right, v.bracketed, v.outside), (1, 1, 1));
        assert_eq!(matches, vec![(0, 0)]);
        assert!(v.examples[0].starts_with("outside: "), "{:?}", v.examples);
        let v = check(&[inside], &[r]);
        assert_eq!((v.right, v.bracketed, v.outside), (1, 1, 0));
        // Without brackets nothing is held against them.
        let plain = req(40000, 50000, 1_000_000, 3_000_000);
        let v = check(&[exchange(&plain, 0)], &[plain]);
        assert_eq!((v.right, v.bracketed, v.outside), (1, 0, 0));
    }

    #[test]
    fn envoy_lines_become_requests_on_the_monotonic_clock() {
        let log = "127.0.0.1:15001 10.77.0.1:40000 10.77.0.1:50000 10.77.0.2:15006 1764612345.000250 17\n\
                   127.0.0.1:15001 10.77.0.1:40001 - - 1764612345.500000 -\n";
        let offset = 1_764_612_000_000_000_000i128;
        let r = parse_envoy_log(log, offset).unwrap();
        assert_eq!(r.len(), 1, "the unforwarded request is left out");
        assert_eq!(r[0].down_remote, a("10.77.0.1:40000"));
        assert_eq!(r[0].up_local, a("10.77.0.1:50000"));
        assert_eq!(r[0].in_ns, 345_000_250_000);
        assert_eq!(r[0].out_ns, 345_000_267_000);
        let err = parse_envoy_log("a b c d 17.x 1\n", 0).unwrap_err();
        assert!(err.starts_with("line 1: start time \"17.x\""), "{err}");
        let err = parse_envoy_log("1.2.3.4:5 1.2.3.4:5 1.2.3.4:5 1.2.3.4:5 1.5 z", 0).unwrap_err();
        assert!(err.contains("µs to the upstream \"z\""), "{err}");
    }

    #[test]
    fn an_exchange_without_addresses_is_not_counted_right() {
        let log = [req(40000, 50000, 1_000, 2_000)];
        let mut e = exchange(&log[0], 0);
        e.upstream.local = None;
        let v = check(&[e], &log);
        assert_eq!((v.right, v.wrong_connection, v.missed), (0, 1, 1));
    }
}
