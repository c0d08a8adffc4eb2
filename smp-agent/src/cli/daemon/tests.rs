//! Unit tests of `daemon` (kept apart so the module reads as what it does).

use std::time::Duration;

use super::*;
use crate::{
    aggregate::hops::{new_histogram, Direction, Leg},
    proxy::{discovery::ProxyKind, CgroupAttribution},
    tracker::ProxyView,
};
use smp_common::hop::HopCounts;

const UID: &str = "0b6a1c52-7d1e-4f0e-9a57-3c2b1f0e9d01";

fn pod_proxy() -> ProxyId {
    ProxyId {
        kind: ProxyKind::Envoy,
        scope: ProxyScope::Pod(UID.into()),
        fingerprint: 7 << 32,
    }
}

fn proxy_view(id: &ProxyId, pids: &[u32], cpu_ns: u64, requests: u64) -> ProxyView {
    ProxyView {
        id: id.to_string(),
        proxy: id.clone(),
        kind: "envoy".into(),
        attribution: CgroupAttribution::unknown("/kubepods"),
        leader: pids.first().copied(),
        pids: pids.to_vec(),
        pids_seen: pids.to_vec(),
        restarts: 0,
        cpu_ns,
        pairing: HopCounts {
            requests,
            ..HopCounts::default()
        },
        received_bytes: 10 * requests,
        sent_bytes: 20 * requests,
        rss_bytes: 1 << 20,
        memory: None,
        perf: None,
    }
}

fn hist(values_us: &[u64]) -> Histogram<u64> {
    let mut h = new_histogram();
    for v in values_us {
        h.record(v * 1000).unwrap();
    }
    h
}

fn hops(list: &[(ProxyId, Direction, Leg, &[u64])]) -> BTreeMap<ProxyHopKey, Histogram<u64>> {
    list.iter()
        .map(|(proxy, direction, leg, v)| {
            (
                ProxyHopKey {
                    proxy: proxy.clone(),
                    direction: *direction,
                    leg: *leg,
                },
                hist(v),
            )
        })
        .collect()
}

fn view(proxies: Vec<ProxyView>) -> TrackerView {
    TrackerView {
        elapsed: Duration::from_secs(1),
        proxies,
        ..TrackerView::default()
    }
}

#[test]
fn new_hops_add_up_in_the_exported_histogram() {
    use crate::metrics::{Format, MetricsOptions};
    let m = NodeMetrics::new(MetricsOptions::default());
    let p = pod_proxy();
    let v = view(vec![proxy_view(&p, &[10], 0, 0)]);
    let mut b = SnapshotBuilder::default();
    let (i, r) = (Direction::Inbound, Leg::Request);
    let s = b.build(&v, hops(&[(p.clone(), i, r, &[100, 200])]), &HashMap::new());
    assert_eq!(s.hops.len(), 1);
    m.update(&s);
    // The next interval's new observations; an empty histogram is left out.
    let s = b.build(
        &v,
        hops(&[
            (p.clone(), i, r, &[300, 300, 5000]),
            (p.clone(), i, Leg::Response, &[]),
        ]),
        &HashMap::new(),
    );
    assert_eq!(s.hops.len(), 1);
    m.update(&s);
    let text = m.encode(Format::PrometheusText);
    let count = text
        .lines()
        .find(|l| l.starts_with("smp_hop_duration_seconds_count{"))
        .unwrap();
    assert!(count.ends_with(" 5"), "{count}");
    let le = |b: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("smp_hop_duration_seconds_bucket{{le=\"{b}\"")))
            .unwrap()
            .rsplit_once(' ')
            .unwrap()
            .1
            .to_string()
    };
    assert_eq!(le("0.0001"), "1");
    assert_eq!(le("0.0003"), "4");
    assert_eq!(le("0.005"), "5");
}

#[test]
fn proxies_pass_through_with_pod_names_and_gone_ones_leave() {
    let p = pod_proxy();
    let host = ProxyId {
        kind: ProxyKind::Nginx,
        scope: ProxyScope::Cgroup("/system.slice/nginx.service".into()),
        fingerprint: 1 << 32,
    };
    let pods = HashMap::from([(
        UID.to_string(),
        PodRef {
            namespace: "shop".into(),
            name: "web-1".into(),
        },
    )]);
    let mut b = SnapshotBuilder::default();
    let mut pv = proxy_view(&p, &[10], 2_500_000_000, 7);
    pv.restarts = 2;
    let s = b.build(
        &view(vec![pv, proxy_view(&host, &[20], 0, 0)]),
        BTreeMap::new(),
        &pods,
    );
    assert_eq!(s.proxies.len(), 2);
    let sp = s.proxies.iter().find(|s| s.id == p).unwrap();
    assert_eq!(sp.pod.as_ref().unwrap().name, "web-1");
    assert_eq!(sp.restarts, 2);
    assert!((sp.cpu_seconds - 2.5).abs() < 1e-12);
    assert_eq!(sp.pairing.requests, 7);
    assert_eq!((sp.received_bytes, sp.sent_bytes), (70, 140));
    let sh = s.proxies.iter().find(|s| s.id == host).unwrap();
    assert!(sh.pod.is_none());
    // The host proxy exits: sent once more with its final figures, then left out.
    let s = b.build(
        &view(vec![
            proxy_view(&p, &[10], 3_000_000_000, 9),
            proxy_view(&host, &[], 5, 0),
        ]),
        BTreeMap::new(),
        &pods,
    );
    assert_eq!(s.proxies.len(), 2);
    let s = b.build(
        &view(vec![
            proxy_view(&p, &[10], 3_000_000_000, 9),
            proxy_view(&host, &[], 5, 0),
        ]),
        BTreeMap::new(),
        &pods,
    );
    assert_eq!(s.proxies.len(), 1);
    assert_eq!(s.proxies[0].id, p);
    // It comes back (a restart under the same identity): sent again.
    let s = b.build(
        &view(vec![
            proxy_view(&p, &[10], 3_000_000_000, 9),
            proxy_view(&host, &[21], 6, 0),
        ]),
        BTreeMap::new(),
        &pods,
    );
    assert_eq!(s.proxies.len(), 2);
}

#[test]
fn proxies_over_the_cap_are_exported_as_a_number_and_logged_once() {
    use crate::metrics::{Format, MetricsOptions};
    let m = NodeMetrics::new(MetricsOptions {
        max_proxies: 2,
        ..MetricsOptions::default()
    });
    let proxies: Vec<ProxyView> = (1..=5u64)
        .map(|i| {
            let id = ProxyId {
                kind: ProxyKind::Envoy,
                scope: ProxyScope::Pod(format!("{UID}-{i}")),
                fingerprint: i << 32,
            };
            proxy_view(&id, &[i as u32 + 100], 0, 0)
        })
        .collect();
    let mut b = SnapshotBuilder::default();
    m.update(&b.build(&view(proxies), BTreeMap::new(), &HashMap::new()));
    assert_eq!(m.over_limit(), 3);
    assert!(m
        .encode(Format::PrometheusText)
        .lines()
        .any(|l| l == "smp_proxies_over_limit 3"));
    let mut log = OverLimitLog::default();
    assert!(!log.check(0, 2));
    assert!(log.check(3, 2), "logged the first time");
    assert!(!log.check(3, 2), "and only then");
}

#[test]
fn unattributed_exchanges_become_dropped_hop_counts() {
    let mut b = SnapshotBuilder::default();
    let mut v = view(vec![]);
    v.unattributed_exchanges = 3;
    assert_eq!(
        b.build(&v, BTreeMap::new(), &HashMap::new())
            .unattributed_hops,
        6
    );
    v.unattributed_exchanges = 4;
    assert_eq!(
        b.build(&v, BTreeMap::new(), &HashMap::new())
            .unattributed_hops,
        2
    );
    assert_eq!(
        b.build(&v, BTreeMap::new(), &HashMap::new())
            .unattributed_hops,
        0
    );
}

/// A fake API server on 127.0.0.1 (self-signed certificate) answering every request with
/// the pod list in `list`; returns its port and the CA to trust.
async fn fake_api_server(list: Arc<Mutex<String>>) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (listener, acceptor, ca_pem) = crate::proxy::kube::test_tls_listener().await;
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let body = list.lock().unwrap().clone();
            let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            let _ = tls.write_all(resp.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    (port, ca_pem)
}

fn pod_list(pods: &[(&str, &str)]) -> String {
    let items: Vec<String> = pods
        .iter()
        .map(|(uid, name)| {
            format!(r#"{{"metadata":{{"name":"{name}","namespace":"shop","uid":"{uid}"}}}}"#)
        })
        .collect();
    format!(r#"{{"kind":"PodList","items":[{}]}}"#, items.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_names_come_from_the_api_server_and_new_pods_refresh_soon() {
    const NEW: &str = "5d2e8f3a-1c4b-4a6e-8b7d-2f9e0a1b3c02";
    let list = Arc::new(Mutex::new(pod_list(&[(UID, "web-1")])));
    let (port, ca) = fake_api_server(Arc::clone(&list)).await;
    let client = KubeClient::new("127.0.0.1", port, "t".into(), ca.as_bytes()).unwrap();
    // A long period: only a new pod can cause the second refresh within the test.
    let names = PodNames::start(
        client,
        Some("n1".into()),
        PodRefresh {
            every: Duration::from_secs(3600),
            min_gap: Duration::from_millis(100),
        },
    );
    let wait_for = |uid: &'static str| {
        let names = &names;
        async move {
            for _ in 0..100 {
                if let Some(p) = pods_now(Some(names)).get(uid) {
                    return p.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("pod {uid} never named");
        }
    };
    assert_eq!(wait_for(UID).await.name, "web-1");

    // A pod created later: a proxy in it is seen, the list is read again at once.
    *list.lock().unwrap() = pod_list(&[(UID, "web-1"), (NEW, "web-2")]);
    let new_proxy = ProxyId {
        kind: ProxyKind::Envoy,
        scope: ProxyScope::Pod(NEW.into()),
        fingerprint: 9 << 32,
    };
    let v = view(vec![proxy_view(&new_proxy, &[30], 0, 0)]);
    names.ask_for_unknown(&v);
    let pod = wait_for(NEW).await;
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str()),
        ("shop", "web-2")
    );
    let snap = SnapshotBuilder::default().build(&v, BTreeMap::new(), &pods_now(Some(&names)));
    assert_eq!(snap.proxies[0].pod, Some(pod));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_pod_name_task_is_survived() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let names = PodNames::start_with(
        move || {
            let call = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if call == 0 {
                    panic!("injected: first pod list read panics");
                }
                Ok(HashMap::from([(
                    UID.to_string(),
                    PodRef {
                        namespace: "shop".into(),
                        name: "web-1".into(),
                    },
                )]))
            }
        },
        PodRefresh {
            every: Duration::from_secs(3600),
            min_gap: Duration::from_millis(50),
        },
    );
    for _ in 0..100 {
        if pods_now(Some(&names)).contains_key(UID) {
            assert!(calls.load(Ordering::SeqCst) >= 2);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the pod name task did not come back after its panic");
}

#[test]
fn the_builder_feeds_monotonic_counters_across_a_restart() {
    // End to end through NodeMetrics: a restart in the tracker's view (same identity,
    // totals continue, restarts + 1) moves the exported counters by the growth only.
    use crate::metrics::{Format, MetricsOptions};
    let m = NodeMetrics::new(MetricsOptions::default());
    let p = pod_proxy();
    let mut b = SnapshotBuilder::default();
    m.update(&b.build(
        &view(vec![proxy_view(&p, &[10], 1_000_000_000, 100)]),
        BTreeMap::new(),
        &HashMap::new(),
    ));
    let mut after = proxy_view(&p, &[11], 1_200_000_000, 130);
    after.restarts = 1;
    m.update(&b.build(&view(vec![after]), BTreeMap::new(), &HashMap::new()));
    let text = m.encode(Format::PrometheusText);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .rsplit_once(' ')
            .unwrap()
            .1
            .to_string()
    };
    assert_eq!(line("smp_proxy_requests_total{"), "130");
    assert_eq!(line("smp_proxy_cpu_seconds_total{"), "1.2");
    assert_eq!(line("smp_proxy_restarts_total{"), "1");
}
