//! Kernel state at scale (issue 6, requirement 5): a proxy with 100 000 connections cannot
//! exhaust the probes' memory or wedge them. Every per-socket map is an LRU of fixed size,
//! allocated when the probes load; a proxy of 12 processes offers them far more sockets than
//! they hold, and the probes must go on seeing every message and counting new sockets exactly.
//! (Host only: 200 000 sockets take minutes under the matrix's emulated guests.)

use smp_common::hop::{HopCounts, MAX_SOCK_STATE};
use std::time::Instant;

use smp_agent::probes::{catalog::SocketHooks, Probes};
use smp_common::sock::MAX_SOCK_STATS;
use smp_tests::{sockmover_counts_exactly, values_after, Workload};

/// Connections the flood holds open (the figure).
const CONNECTIONS: u64 = 100_000;

#[test]
fn a_proxy_with_100000_connections_leaves_the_probes_bounded_and_exact() {
    smp_tests::in_each_socket_hook_mode(
        "a_proxy_with_100000_connections_leaves_the_probes_bounded_and_exact",
        flood_with,
    );
}

fn flood_with(mode: SocketHooks) {
    let mut probes = Probes::load_with(mode).expect("load probes");
    let n = CONNECTIONS.to_string();
    let (mut flood, ready) = Workload::spawn(env!("CARGO_BIN_EXE_connflood"), &[&n]);
    let workers: Vec<u32> = values_after(&ready, "ready");
    for &w in &workers {
        probes.track(w).expect("track");
    }
    flood.go();
    let done = flood.line();
    assert!(done.starts_with("done "), "connflood said {done:?}");
    let t = Instant::now();
    let snap = probes.snapshot().expect("snapshot");
    let snapshot_time = t.elapsed();
    let mut c = HopCounts::default();
    for w in &workers {
        c.add(&snap.pairing.get(w).copied().unwrap_or_default());
    }
    let sockets = snap
        .sockets
        .iter()
        .filter(|s| workers.contains(&s.tgid))
        .count();
    eprintln!(
        "{CONNECTIONS} connections in {} processes ({done} s); socket samples kept {sockets} \
         (capacities {MAX_SOCK_STATS} + 2 × {MAX_SOCK_STATE}), snapshot {snapshot_time:?}; {c:?}; loss {:?}",
        workers.len(),
        snap.loss
    );
    // Every request was seen as one, up to the last connection: the per-socket state kept
    // working while its map was full (each exchange follows its socket's birth at once).
    assert_eq!(c.requests, CONNECTIONS, "requests seen: {c:?}");
    // The socket counters are held in maps of fixed capacity, however many sockets there
    // are (`SOCK_STATS`, and in `SOCK_STATE` a socket's own counters of each direction); the
    // LRU makes room instead of failing.
    let capacity = u64::from(MAX_SOCK_STATS) + 2 * u64::from(MAX_SOCK_STATE);
    assert!(
        sockets > 0 && sockets as u64 <= capacity,
        "{sockets} socket samples (capacity {capacity})"
    );
    assert_eq!(snap.loss.map_insert_failed, 0, "{:?}", snap.loss);
    // The same probes, their maps full of the flood's sockets, still count a new process's
    // socket syscalls exactly.
    sockmover_counts_exactly(&mut probes, mode, env!("CARGO_BIN_EXE_sockmover"));
    flood.finish();
}
