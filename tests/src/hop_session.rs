//! Probes tracking a few processes, with a task folding their exchange records into per-hop
//! histograms: what the hop tests compare with ground truth.

use smp_common::hop::HopCounts;
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use smp_agent::{
    aggregate::hops::{Exchange, HopAggregator},
    probes::{catalog::SocketHooks, ProbeEvent, Probes},
};

use crate::process_tree;

/// Probes tracking processes, with a task folding exchanges into histograms.
pub struct Session {
    probes: Probes,
    rt: tokio::runtime::Runtime,
    agg: Arc<Mutex<Finished>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Loads the probes and tracks `pids` and their descendants.
    pub fn start(pids: &[u32]) -> Session {
        Self::start_with(pids, SocketHooks::choose().expect("SMP_SOCKET_HOOKS"))
    }

    /// [`Session::start`] with the given socket hooks.
    pub fn start_with(pids: &[u32], socket: SocketHooks) -> Session {
        let mut probes = Probes::load_with(socket).expect("load probes");
        track_trees(&mut probes, pids);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut events = {
            let _g = rt.enter();
            probes.events().expect("events")
        };
        let agg = Arc::new(Mutex::new(Finished::default()));
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel();
        let a = Arc::clone(&agg);
        let task = rt.spawn(async move {
            loop {
                tokio::select! {
                    batch = events.next_batch() => {
                        for e in batch.expect("ring buffer") {
                            if let ProbeEvent::Exchange(x) = e {
                                let mut f = a.lock().unwrap();
                                f.hops.record(&x);
                                f.exchanges.push(x);
                            }
                        }
                    }
                    _ = &mut stop_rx => break,
                }
            }
        });
        Session {
            probes,
            rt,
            agg,
            stop,
            task,
        }
    }

    /// Tracks `pids` and their descendants from now on (processes found after the probes
    /// loaded, as the daemon's discovery finds a new sidecar).
    pub fn track(&mut self, pids: &[u32]) {
        track_trees(&mut self.probes, pids);
    }

    /// Stops folding (after the last records arrived): the hops, every exchange and the
    /// pairing counters.
    pub fn finish(self) -> Finished {
        std::thread::sleep(Duration::from_millis(300)); // let the last records arrive
        let _ = self.stop.send(());
        let _ = self.rt.block_on(self.task);
        let snap = self.probes.snapshot().expect("snapshot");
        let mut f = std::mem::take(&mut *self.agg.lock().unwrap());
        f.pairing = snap.pairing;
        f.loss = snap.loss;
        f.sockets = snap.sockets;
        f
    }
}

/// Tracks each of `pids` and its descendants.
fn track_trees(probes: &mut Probes, pids: &[u32]) {
    for &p in pids {
        for t in process_tree(p) {
            probes.track(t).expect("track");
        }
    }
}

/// What a [`Session`] saw.
#[derive(Default)]
pub struct Finished {
    pub hops: HopAggregator,
    /// Every exchange record, in arrival order.
    pub exchanges: Vec<Exchange>,
    /// Pairing counters per tracked process.
    pub pairing: BTreeMap<u32, HopCounts>,
    /// The probes' own losses at the end.
    pub loss: smp_agent::aggregate::LossCounters,
    /// Per-socket syscall counts at the end (the socket accounting, apart from pairing).
    pub sockets: Vec<smp_agent::aggregate::SocketSample>,
}

impl Finished {
    /// The exchanges of process `tgid`.
    pub fn exchanges_of(&self, tgid: u32) -> Vec<Exchange> {
        self.exchanges
            .iter()
            .filter(|e| e.tgid == tgid)
            .copied()
            .collect()
    }
}
