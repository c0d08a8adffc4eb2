use super::*;
use crate::aggregate::hops::Conn;

const OUT: usize = 0;
const IN: usize = 1;

fn conn(local: &str, remote: &str) -> Conn {
    Conn {
        local: Some(local.parse().unwrap()),
        remote: Some(remote.parse().unwrap()),
        ..Conn::default()
    }
}

/// The outbound sidecar's exchange on upstream connection from `port`: request read at `t`,
/// forwarded at `t + 10`; response arriving at `t + r_arr`, read 5 later, forwarded 20 later.
fn outbound(port: u16, t: u64, r_arr: u64) -> Exchange {
    Exchange {
        tgid: 10,
        tid: 11,
        req_arrival_ns: t - 3,
        req_in_ns: t,
        req_out_ns: t + 10,
        req_sent_ns: t + 14,
        resp_arrival_ns: t + r_arr,
        resp_in_ns: t + r_arr + 5,
        resp_out_ns: t + r_arr + 25,
        downstream: conn("127.0.0.1:15001", "10.0.0.1:40000"),
        upstream: conn(&format!("10.0.0.1:{port}"), "10.0.0.2:8080"),
        ..Exchange::default()
    }
}

/// The inbound sidecar's exchange of the same request: it arrives `net` after the outbound's
/// forward, waits 2, is forwarded 30 later (sent 4 later); the app's response arrives 100
/// later, is read 1 later and written 7 later.
fn inbound(of: &Exchange, net: u64) -> Exchange {
    let port = of.upstream.local.unwrap().port();
    let arr = of.req_out_ns + net;
    Exchange {
        tgid: 20,
        tid: 21,
        req_arrival_ns: arr,
        req_in_ns: arr + 2,
        req_out_ns: arr + 32,
        req_sent_ns: arr + 36,
        resp_arrival_ns: arr + 132,
        resp_in_ns: arr + 133,
        resp_out_ns: arr + 140,
        downstream: conn("10.0.0.2:15006", &format!("10.0.0.1:{port}")),
        upstream: conn("127.0.0.1:50000", "127.0.0.1:8080"),
        ..Exchange::default()
    }
}

/// An outbound exchange whose response arrives `net` after the inbound wrote it.
fn outbound_answered(port: u16, t: u64, net_req: u64, net_resp: u64) -> (Exchange, Exchange) {
    let probe = outbound(port, t, 0);
    let y = inbound(&probe, net_req);
    let r_arr = y.resp_out_ns + net_resp - t;
    (outbound(port, t, r_arr), y)
}

fn feed(j: &mut PathJoiner, x: &Exchange, y: &Exchange) {
    j.exchange(IN, Direction::Inbound, y);
    j.exchange(OUT, Direction::Outbound, x);
    j.sent(x.tid, x.resp_out_ns, x.resp_out_ns + 6);
}

#[test]
fn one_exchange_at_a_time_on_a_connection_is_joined_with_its_legs_and_parts() {
    let mut j = PathJoiner::default();
    for k in 0..5u64 {
        let (x, y) = outbound_answered(40001, 1_000 + k * 1_000, 40, 50);
        feed(&mut j, &x, &y);
    }
    assert_eq!(j.counts.joined, 5);
    assert_eq!(j.counts.breakdown, 5);
    assert_eq!(
        (j.counts.no_peer, j.counts.ambiguous, j.counts.unclaimed),
        (0, 0, 0)
    );
    let leg = |k| j.legs[&k].value_at_quantile(0.5);
    assert_eq!(leg((OUT, IN, Leg::Request)), 40);
    assert_eq!(leg((IN, OUT, Leg::Response)), 50);
    let s = j.samples[0];
    let part = |p: Part| s[p as usize];
    assert_eq!(part(Part::OutboundWait), 3 + 5);
    assert_eq!(part(Part::OutboundHop), 10 + 20);
    assert_eq!(part(Part::OutboundSend), 6);
    assert_eq!(part(Part::NetworkRequest), 40);
    assert_eq!(part(Part::NetworkResponse), 50);
    assert_eq!(part(Part::InboundWait), 2 + 1);
    assert_eq!(part(Part::InboundHop), 30 + 7);
    assert_eq!(part(Part::InboundSend), 4);
}

#[test]
fn the_parts_tile_the_time_from_the_outbound_arrival_to_its_response_send() {
    // Between the outbound's request arrival and its response write's return, only the app's
    // time (inbound's request sent → response arrived) is outside the parts.
    let (x, y) = outbound_answered(40001, 1_000, 40, 50);
    let mut j = PathJoiner::default();
    feed(&mut j, &x, &y);
    let s = j.samples[0];
    let total: u64 = s.iter().map(|&v| u64::from(v)).sum();
    let app = y.resp_arrival_ns - y.req_sent_ns;
    assert_eq!(total + app, x.resp_out_ns + 6 - x.req_arrival_ns);
}

#[test]
fn an_upstream_without_a_tracked_peer_is_counted_not_joined() {
    let mut j = PathJoiner::default();
    let x = outbound(40001, 1_000, 300);
    j.exchange(OUT, Direction::Outbound, &x);
    assert_eq!(j.counts.no_peer, 1);
    assert_eq!(j.counts.joined, 0);
    assert!(j.legs.is_empty());
}

#[test]
fn two_exchanges_that_both_fit_are_ambiguous_and_neither_is_taken() {
    // HTTP/2 streams overlapping on one connection: two inbound exchanges inside one
    // outbound exchange's window.
    let mut j = PathJoiner::default();
    let x = outbound(40001, 1_000, 1_000);
    let a = inbound(&x, 40);
    let mut b = inbound(&x, 60);
    b.resp_out_ns = a.resp_out_ns + 1;
    j.exchange(IN, Direction::Inbound, &a);
    j.exchange(IN, Direction::Inbound, &b);
    j.exchange(OUT, Direction::Outbound, &x);
    assert_eq!(j.counts.ambiguous, 1);
    assert_eq!(j.counts.joined, 0);
}

#[test]
fn an_inbound_exchange_whose_partner_was_lost_is_not_taken_by_the_next_and_expires_counted() {
    let mut j = PathJoiner::default();
    let (_, lost) = outbound_answered(40001, 1_000, 40, 50);
    j.exchange(IN, Direction::Inbound, &lost);
    let (x, y) = outbound_answered(40001, 5_000, 40, 50);
    feed(&mut j, &x, &y);
    assert_eq!(j.counts.joined, 1);
    assert_eq!(j.samples[0][Part::NetworkRequest as usize], 40);
    // Seconds later the lost one's wait ends, counted.
    let (x, y) = outbound_answered(40002, WAIT_NS + 10_000, 40, 50);
    feed(&mut j, &x, &y);
    assert_eq!(j.counts.unclaimed, 1);
    assert_eq!(j.counts.joined, 2);
}

#[test]
fn connections_to_the_app_and_over_loopback_face_no_peer() {
    let mut j = PathJoiner::default();
    let mut x = outbound(40001, 1_000, 300);
    x.upstream = conn("127.0.0.1:40001", "127.0.0.1:8080");
    j.exchange(OUT, Direction::Outbound, &x);
    x.upstream = conn("10.0.0.1:40001", "10.0.0.1:8080");
    j.exchange(OUT, Direction::Outbound, &x);
    assert_eq!(j.counts, PathCounts::default());
    assert_eq!(j.waiting_len, 0);
}

#[test]
fn a_joined_path_whose_send_never_returns_is_counted_at_the_end() {
    let mut j = PathJoiner::default();
    let (x, y) = outbound_answered(40001, 1_000, 40, 50);
    j.exchange(IN, Direction::Inbound, &y);
    j.exchange(OUT, Direction::Outbound, &x);
    assert_eq!(j.counts.joined, 1);
    assert_eq!(j.counts.breakdown, 0);
    j.finish();
    assert_eq!(j.counts.send_unseen, 1);
    assert!(j.samples.is_empty());
}

#[test]
fn two_proxies_of_one_kind_are_joined_for_their_legs_but_not_in_the_breakdown() {
    // A gateway in front of a sidecar: the network leg, not the sidecar breakdown.
    let mut j = PathJoiner::default();
    let (x, y) = outbound_answered(40001, 1_000, 40, 50);
    j.exchange(IN, Direction::Inbound, &y);
    j.exchange(OUT, Direction::Gateway, &x);
    j.sent(x.tid, x.resp_out_ns, x.resp_out_ns + 6);
    assert_eq!(j.counts.joined, 1);
    assert_eq!(j.counts.breakdown, 0);
    assert!(j.legs.contains_key(&(OUT, IN, Leg::Request)));
}

#[test]
fn the_waiting_exchanges_are_bounded_and_what_is_given_up_is_counted() {
    let mut j = PathJoiner::default();
    let x = outbound(40001, 1_000, 300);
    for k in 0..=WAITING_CAP {
        let mut y = inbound(&x, 40);
        y.downstream = conn(
            "10.0.0.2:15006",
            &format!(
                "10.1.{}.{}:{}",
                k / 60_000 % 250,
                1 + k / 250 % 250,
                1 + k % 60_000
            ),
        );
        j.exchange(IN, Direction::Inbound, &y);
    }
    assert_eq!(j.counts.overflow, WAITING_CAP as u64);
    assert_eq!(j.waiting_len, 1);
}

#[test]
fn the_breakdown_at_a_quantile_is_the_mean_of_the_paths_there_and_sums_to_their_total() {
    // 1 000 paths: the k-th has its inbound hop 1 000 + k and a network leg of 10.
    let samples: Vec<PathSample> = (0..1_000u32)
        .map(|k| {
            let mut s = [0u32; 8];
            s[Part::InboundHop as usize] = 1_000 + k;
            s[Part::NetworkRequest as usize] = 10;
            s
        })
        .collect();
    let at = parts_at(&samples, 0.5).unwrap();
    // Ranks 494..=504 (the 500th path ±5).
    assert_eq!(at.paths, 11);
    assert_eq!(at.parts_ns[&Part::InboundHop], 1_000.0 + 499.0);
    assert_eq!(at.parts_ns[&Part::NetworkRequest], 10.0);
    assert_eq!(at.total_ns, 1_509.0);
    let top = parts_at(&samples, 0.99).unwrap();
    assert_eq!(top.parts_ns[&Part::InboundHop], 1_000.0 + 989.0);
    assert!(parts_at(&[], 0.5).is_none());
    let one = parts_at(&samples[..1], 0.99).unwrap();
    assert_eq!((one.paths, one.total_ns), (1, 1_010.0));
}

#[test]
fn beyond_the_cap_the_samples_stay_a_bounded_uniform_sample() {
    let mut j = PathJoiner::default();
    for k in 0..(SAMPLES_CAP as u32 + 5_000) {
        let mut s = [0u32; 8];
        s[0] = k;
        j.sample(s);
    }
    assert_eq!(j.samples.len(), SAMPLES_CAP);
    assert_eq!(j.counts.breakdown, SAMPLES_CAP as u64 + 5_000);
    assert_eq!(j.counts.sampled, SAMPLES_CAP as u64);
    // Some of the late ones replaced earlier ones.
    assert!(j.samples.iter().any(|s| s[0] >= SAMPLES_CAP as u32));
    assert_eq!(
        j.parts[&Part::OutboundWait].len(),
        SAMPLES_CAP as u64 + 5_000
    );
}

#[test]
fn tcp_round_trip_estimates_are_kept_by_where_the_peer_is() {
    let rtt = |srtt_us, min_rtt_us| TcpRtt {
        srtt_us,
        rttvar_us: srtt_us / 4,
        min_rtt_us,
        _pad: 0,
    };
    let mut j = PathJoiner::default();
    // Joined on this node.
    let (mut x, y) = outbound_answered(40001, 1_000, 40, 50);
    x.upstream_rtt = rtt(120, 30);
    feed(&mut j, &x, &y);
    // No tracked peer: twice, once with TCP's estimate unknown (an HTTP/2 stream).
    let mut far = outbound(40002, 9_000, 300);
    far.upstream_rtt = rtt(800, 500);
    j.exchange(OUT, Direction::Outbound, &far);
    far.upstream_rtt = TcpRtt::default();
    j.exchange(OUT, Direction::Outbound, &far);
    let on = &j.estimates[&(OUT, Peer::OnNode)];
    assert!(on.srtt.equivalent(on.srtt.value_at_quantile(0.5), 120_000));
    assert!(on
        .min_rtt
        .equivalent(on.min_rtt.value_at_quantile(0.5), 30_000));
    let off = &j.estimates[&(OUT, Peer::NotOnNode)];
    assert_eq!((off.srtt.len(), off.unknown), (1, 1));
    assert!(off
        .srtt
        .equivalent(off.srtt.value_at_quantile(0.5), 800_000));
    assert!(off
        .rttvar
        .equivalent(off.rttvar.value_at_quantile(0.5), 200_000));
    assert_eq!(j.counts.no_peer, 2);
}

#[test]
fn two_responses_forwarded_by_one_write_are_both_completed_by_its_send() {
    // One HTTP/2 write answering two streams: two exchanges, one (thread, write entry).
    let (x1, y1) = outbound_answered(40001, 1_000, 40, 50);
    let (x2, y2) = outbound_answered(40002, 1_000, 40, 50);
    assert_eq!((x1.tid, x1.resp_out_ns), (x2.tid, x2.resp_out_ns));
    let mut j = PathJoiner::default();
    for (x, y) in [(&x1, &y1), (&x2, &y2)] {
        j.exchange(IN, Direction::Inbound, y);
        j.exchange(OUT, Direction::Outbound, x);
    }
    j.sent(x1.tid, x1.resp_out_ns, x1.resp_out_ns + 6);
    assert_eq!(j.counts.breakdown, 2);
    j.finish();
    assert_eq!(j.counts.send_unseen, 0);
}
