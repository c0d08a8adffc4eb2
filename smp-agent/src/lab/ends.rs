//! The proxy-independent check of the probes' exchanges: the lab's two ends, the client and
//! the app, record every request (its id, the connection it used, CLOCK_MONOTONIC times, the
//! clock of the kernel's ktime), and [`check`] holds each exchange a sidecar's probes emitted
//! against those records. It needs nothing from the proxy, so it works for every proxy kind.
//!
//! Causality makes the check exact, with no tolerance: the client stamps `t0` before writing
//! the request and `t1` after reading the whole response, so a sidecar's exchange of that
//! request lies inside `[t0, t1]`; the app stamps `t0` once it has read the request head and
//! `t1` once it has written the response, so the sidecar forwarded the request before the
//! app's `t0` and read the response after the app's `t1`... minus the part of the response
//! still in flight: the app's `t0` lies inside `[req_out, resp_in]` of the exchange.
//!
//! - Outbound sidecar: its downstream is the client's connection. The client's request on
//!   that connection whose `[t0, t1]` holds the exchange's `req_in` is the exchange's request
//!   (HTTP/1.1: one request at a time per connection). Right when the app's arrival of that
//!   same request id lies inside `[req_out, resp_in]` (its upstream position).
//! - Inbound sidecar: its upstream is the app's connection. The app's arrival on that
//!   connection inside `[req_out, resp_in]` is the exchange's request. Right when the client's
//!   `[t0, t1]` of that request id holds the exchange's `[req_in, resp_out]`.
//!
//! An exchange whose connection carried no recorded request at that time is a wrong
//! connection; one whose other end does not fit is a wrong request; a request matched twice
//! is a duplicate; recorded requests no exchange matched are missed (each TLS connection's
//! first exchange is dropped by design, counted apart by the probes).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use crate::{
    aggregate::hops::{canonical_addr, Exchange},
    lab::{
        config::Side,
        truth::{addr_field, parse_record_lines, record_fields, u64_field, Verdict},
    },
};

/// The header that carries a request's id from the client to the app.
pub const REQUEST_ID_HEADER: &str = "x-smp-req-id";

/// Path on the app's ports that serves its records (asked on the pod's loopback, never
/// through a sidecar); such requests are not recorded.
pub const APP_RECORDS_PATH: &str = "/smp-lab/requests";

/// Records one end keeps at most; more are counted, not kept.
pub const MAX_RECORDS: usize = 1 << 21;

/// One request as one end saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRecord {
    /// The request's id (`x-smp-req-id`).
    pub id: u64,
    /// This end's address of the connection.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// CLOCK_MONOTONIC ns. Client: before the request's write; app: the head was read.
    pub t0_ns: u64,
    /// CLOCK_MONOTONIC ns. Client: the whole response was read; app: the response written.
    pub t1_ns: u64,
}

impl EndRecord {
    /// The record's line: `id local remote t0_ns t1_ns`.
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.id, self.local, self.remote, self.t0_ns, self.t1_ns
        )
    }

    /// Reads [`EndRecord::line`] back.
    pub fn parse(line: &str) -> Result<EndRecord, String> {
        let [id, l, r, t0, t1] = record_fields(line)?;
        Ok(EndRecord {
            id: u64_field(id, "id")?,
            local: addr_field(l, "local address")?,
            remote: addr_field(r, "remote address")?,
            t0_ns: u64_field(t0, "t0_ns")?,
            t1_ns: u64_field(t1, "t1_ns")?,
        })
    }
}

/// Parses a whole record log (`# ` lines are comments); the error names the line.
pub fn parse_records(text: &str) -> Result<Vec<EndRecord>, String> {
    parse_record_lines(text, EndRecord::parse)
}

/// CLOCK_MONOTONIC now, ns: the clock of the probes' timestamps.
pub use crate::host::monotonic_ns;

/// Records of one end by connection (peer address seen from the proxy), in time order.
fn by_conn(
    records: &[EndRecord],
    key: impl Fn(&EndRecord) -> SocketAddr,
) -> HashMap<SocketAddr, BTreeMap<u64, usize>> {
    let mut m: HashMap<SocketAddr, BTreeMap<u64, usize>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        m.entry(key(r)).or_default().insert(r.t0_ns, i);
    }
    m
}

/// The last record of `conn` that began by `t`.
fn latest(
    conns: &HashMap<SocketAddr, BTreeMap<u64, usize>>,
    conn: Option<SocketAddr>,
    t: u64,
) -> Option<usize> {
    conns
        .get(&canonical_addr(conn?))?
        .range(..=t)
        .next_back()
        .map(|(_, &i)| i)
}

/// The record of `conn` whose `[t0, t1]` holds `t` (at most one: one request at a time).
fn holding(
    conns: &HashMap<SocketAddr, BTreeMap<u64, usize>>,
    records: &[EndRecord],
    conn: Option<SocketAddr>,
    t: u64,
) -> Option<usize> {
    latest(conns, conn, t).filter(|&i| records[i].t1_ns >= t)
}

/// Holds the exchanges of the `side` sidecar against the client's and the app's records (see
/// the module's text). Reuses [`Verdict`]: `checked`, `right`, `wrong_connection`,
/// `wrong_request`, `duplicate`, `missed`, `examples`, `by_pairing`.
pub fn check(
    exchanges: &[Exchange],
    side: Side,
    client: &[EndRecord],
    app: &[EndRecord],
) -> Verdict {
    let client_id: HashMap<u64, usize> =
        client.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let app_id: HashMap<u64, usize> = app.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    // Seen from the proxy: the client's connection is the outbound's downstream (its peer is
    // the client's local address); the app's is the inbound's upstream (the app's peer is
    // the proxy's upstream local address).
    let client_conns = by_conn(client, |r| r.local);
    let app_conns = by_conn(app, |r| r.remote);
    let mut used = vec![false; client.len()];
    let mut v = Verdict::default();
    let wrong = |v: &mut Verdict, e: &Exchange, why: &str| {
        v.by_pairing.entry(e.paired_by).or_default().1 += 1;
        if v.examples.len() < 8 {
            v.examples.push(format!(
                "{why} ({:?}): downstream {:?} upstream {:?} tid {} req {}..{} resp {}..{}",
                e.paired_by,
                e.downstream.remote,
                e.upstream.local,
                e.tid,
                e.req_in_ns,
                e.req_out_ns,
                e.resp_in_ns,
                e.resp_out_ns
            ));
        }
    };
    for e in exchanges {
        v.checked += 1;
        let matched = match side {
            Side::Outbound => {
                let Some(c) = holding(&client_conns, client, e.downstream.remote, e.req_in_ns)
                else {
                    v.wrong_connection += 1;
                    wrong(&mut v, e, "no client request on its downstream then");
                    continue;
                };
                let fits = app_id
                    .get(&client[c].id)
                    .is_some_and(|&a| (e.req_out_ns..=e.resp_in_ns).contains(&app[a].t0_ns))
                    && e.resp_out_ns <= client[c].t1_ns;
                fits.then_some(c)
            }
            Side::Inbound => {
                // The app's arrival on that connection between the forward and the response.
                let Some(a) = latest(&app_conns, e.upstream.local, e.resp_in_ns)
                    .filter(|&a| app[a].t0_ns >= e.req_out_ns)
                else {
                    v.wrong_connection += 1;
                    wrong(&mut v, e, "no app arrival on its upstream then");
                    continue;
                };
                client_id
                    .get(&app[a].id)
                    .copied()
                    .filter(|&c| client[c].t0_ns <= e.req_in_ns && e.resp_out_ns <= client[c].t1_ns)
            }
        };
        let Some(c) = matched else {
            v.wrong_request += 1;
            wrong(&mut v, e, "the other end's request does not fit");
            continue;
        };
        if std::mem::replace(&mut used[c], true) {
            v.duplicate += 1;
            wrong(&mut v, e, "duplicate");
            continue;
        }
        v.right += 1;
        v.by_pairing.entry(e.paired_by).or_default().0 += 1;
    }
    v.missed = used.iter().filter(|u| !**u).count() as u64;
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::hops::Conn;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Two requests, ids 1 and 2, on one client connection, through both sidecars.
    fn world() -> (Vec<EndRecord>, Vec<EndRecord>, Vec<Exchange>, Vec<Exchange>) {
        let client = vec![
            EndRecord {
                id: 1,
                local: a("10.0.0.1:40000"),
                remote: a("10.0.0.2:8080"),
                t0_ns: 100,
                t1_ns: 900,
            },
            EndRecord {
                id: 2,
                local: a("10.0.0.1:40000"),
                remote: a("10.0.0.2:8080"),
                t0_ns: 1000,
                t1_ns: 1900,
            },
        ];
        let app = vec![
            EndRecord {
                id: 1,
                local: a("127.0.0.1:8080"),
                remote: a("127.0.0.1:50000"),
                t0_ns: 400,
                t1_ns: 500,
            },
            EndRecord {
                id: 2,
                local: a("127.0.0.1:8080"),
                remote: a("127.0.0.1:50000"),
                t0_ns: 1400,
                t1_ns: 1500,
            },
        ];
        let ex = |down: (&str, &str), up: (&str, &str), t: u64| Exchange {
            tgid: 1,
            req_in_ns: t + 110,
            req_out_ns: t + 150,
            resp_in_ns: t + 750,
            resp_out_ns: t + 780,
            downstream: Conn {
                local: Some(a(down.0)),
                remote: Some(a(down.1)),
                ..Conn::default()
            },
            upstream: Conn {
                local: Some(a(up.0)),
                remote: Some(a(up.1)),
                ..Conn::default()
            },
            ..Exchange::default()
        };
        let out = |t| {
            ex(
                ("127.0.0.1:15001", "10.0.0.1:40000"),
                ("10.0.0.1:41000", "10.0.0.2:8080"),
                t,
            )
        };
        let inb = |t| {
            let mut e = ex(
                ("10.0.0.2:15006", "10.0.0.1:41000"),
                ("127.0.0.1:50000", "127.0.0.1:8080"),
                t,
            );
            e.req_in_ns += 50;
            e.req_out_ns += 100;
            e.resp_in_ns -= 200;
            e.resp_out_ns -= 200;
            e
        };
        (
            client,
            app,
            vec![out(0), out(1000)],
            vec![inb(0), inb(1000)],
        )
    }

    #[test]
    fn right_exchanges_pass_both_sides() {
        let (client, app, out, inb) = world();
        let v = check(&out, Side::Outbound, &client, &app);
        assert_eq!(
            (v.checked, v.right, v.wrong(), v.missed),
            (2, 2, 0, 0),
            "{v:?}"
        );
        let v = check(&inb, Side::Inbound, &client, &app);
        assert_eq!(
            (v.checked, v.right, v.wrong(), v.missed),
            (2, 2, 0, 0),
            "{v:?}"
        );
    }

    #[test]
    fn a_response_paired_with_its_neighbour_is_wrong() {
        let (client, app, mut out, mut inb) = world();
        // The outbound's first exchange took the second request's response.
        out[0].resp_in_ns = 1750;
        out[0].resp_out_ns = 1780;
        let v = check(&out[..1], Side::Outbound, &client, &app);
        assert_eq!((v.right, v.wrong_request), (0, 1), "{v:?}");
        // The inbound's upstream named a connection the app never saw.
        inb[0].upstream.local = Some(a("127.0.0.1:50001"));
        let v = check(&inb[..1], Side::Inbound, &client, &app);
        assert_eq!((v.right, v.wrong_connection, v.missed), (0, 1, 2), "{v:?}");
        // The same request twice.
        let v = check(&[out[1], out[1]], Side::Outbound, &client, &app);
        assert_eq!((v.right, v.duplicate, v.missed), (1, 1, 1), "{v:?}");
    }

    #[test]
    fn records_round_trip_and_bad_lines_are_named() {
        let r = EndRecord {
            id: 7,
            local: a("[fd77::1]:40000"),
            remote: a("[fd77::2]:8080"),
            t0_ns: 1,
            t1_ns: 2,
        };
        assert_eq!(
            parse_records(&format!("# app\n{}\n", r.line())).unwrap(),
            [r]
        );
        let mapped = EndRecord::parse("1 [::ffff:127.0.0.1]:1 127.0.0.1:2 3 4").unwrap();
        assert_eq!(mapped.local, a("127.0.0.1:1"));
        let err = parse_records("1 2 3\n").unwrap_err();
        assert!(err.starts_with("line 1: want 5 fields"), "{err}");
    }
}
