//! Serves the metrics of a synthetic node ([`SyntheticNode`]) on 127.0.0.1 (a free port),
//! updated every `--period-ms` (default 100), so a real Prometheus can scrape known inputs.
//! Prints `ready <addr>` once serving; exits when stdin closes.
//!
//! `--restart-after-ms N` replaces the first proxy's process after N ms (its restart count goes
//! up, its identity's counters continue) to show that exported counters stay monotonic.

use std::{sync::Arc, time::Duration};

use smp_agent::metrics::{
    server::MetricsServer, synthetic::SyntheticNode, MetricsOptions, NodeMetrics,
};

fn arg(name: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
        })
}

fn main() {
    let period = Duration::from_millis(arg("--period-ms").unwrap_or(100));
    let restart_after = arg("--restart-after-ms").map(Duration::from_millis);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        smp_tests::wait_for_stdin_close();
        let _ = done_tx.send(());
    });
    rt.block_on(async move {
        let metrics = Arc::new(NodeMetrics::new(MetricsOptions::default()));
        let mut node = SyntheticNode::new();
        let start = tokio::time::Instant::now();
        metrics.update(&node.tick(Duration::ZERO));
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics))
            .await
            .expect("bind the metrics server");
        server.set_ready(true);
        println!("ready {}", server.local_addr());
        let mut restarted = false;
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut done_rx => break,
                _ = ticker.tick() => {}
            }
            let elapsed = start.elapsed();
            if restart_after.is_some_and(|r| elapsed >= r) && !restarted {
                node.restart(0);
                restarted = true;
            }
            metrics.update(&node.tick(elapsed));
        }
        server.shutdown().await;
    });
}
