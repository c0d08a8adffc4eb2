//! nginx sidecar (Debian's nginx-light 1.22): one server proxying to an upstream with
//! keep-alive connections, `worker_processes` workers, stub_status on the pod's loopback.
//! nginx cannot speak HTTP/2 to an upstream, so `h2` and the HTTP/2 app protocols (`h2c`, `grpc`)
//! are rejected for it at validation.

use std::fmt::Write as _;

use super::{Launch, SlotPlan};
use crate::lab::{config::Side, LabError};

/// The nginx.conf of one slot.
pub fn config(plan: &SlotPlan<'_>) -> String {
    let d = plan.dir.display();
    let mut listen = format!("listen {}", plan.listen);
    let mut server_tls = String::new();
    let mut scheme = "http";
    let mut proxy_tls = String::new();
    match (plan.side, plan.tls) {
        (Side::Inbound, Some(t)) => {
            listen.push_str(" ssl");
            let _ = write!(
                server_tls,
                "\t\tssl_certificate {};\n\t\tssl_certificate_key {};\n\
                 \t\tssl_client_certificate {};\n\t\tssl_verify_client on;\n",
                t.server_cert.display(),
                t.server_key.display(),
                t.ca.display()
            );
        }
        (Side::Outbound, Some(t)) => {
            scheme = "https";
            let _ = write!(
                proxy_tls,
                "\t\t\tproxy_ssl_certificate {};\n\t\t\tproxy_ssl_certificate_key {};\n\
                 \t\t\tproxy_ssl_trusted_certificate {};\n\t\t\tproxy_ssl_verify on;\n\
                 \t\t\tproxy_ssl_name {};\n\t\t\tproxy_ssl_server_name on;\n\
                 \t\t\tproxy_ssl_session_reuse on;\n",
                t.client_cert.display(),
                t.client_key.display(),
                t.ca.display(),
                t.server_name
            );
        }
        _ => {}
    }
    format!(
        "worker_processes {workers};\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n\
         \taccess_log off;\n\
         \tclient_body_temp_path {d}/body;\n\
         \tproxy_temp_path {d}/proxy;\n\
         \tfastcgi_temp_path {d}/fastcgi;\n\
         \tuwsgi_temp_path {d}/uwsgi;\n\
         \tscgi_temp_path {d}/scgi;\n\
         \tkeepalive_requests 1000000;\n\
         \tkeepalive_timeout 120s;\n\
         \tupstream upstream {{\n\
         \t\tserver {upstream};\n\
         \t\tkeepalive 256;\n\
         \t\tkeepalive_requests 1000000;\n\
         \t}}\n\
         \tserver {{\n\
         \t\t{listen};\n\
         {server_tls}\
         \t\tlocation / {{\n\
         \t\t\tproxy_pass {scheme}://upstream;\n\
         \t\t\tproxy_http_version 1.1;\n\
         \t\t\tproxy_set_header Connection \"\";\n\
         \t\t\tproxy_set_header Host $http_host;\n\
         \t\t\tproxy_buffering off;\n\
         \t\t\tproxy_request_buffering off;\n\
         {proxy_tls}\
         \t\t\tadd_header x-smp-via {via} always;\n\
         \t\t}}\n\
         \t}}\n\
         \tserver {{\n\
         \t\tlisten {admin};\n\
         \t\tlocation / {{ stub_status; }}\n\
         \t}}\n\
         }}\n",
        workers = plan.workers(),
        upstream = plan.upstream,
        via = plan.via,
        admin = plan.admin,
    )
}

/// Launch recipe: `nginx -p dir -c cfg -e log -g 'daemon off;'` (the pid is the master's).
pub fn plan(plan: &SlotPlan<'_>) -> Result<Launch, LabError> {
    let program = super::require("nginx", "nginx-light")?;
    let cfg = plan.dir.join("nginx.conf");
    let d = plan.dir.display().to_string();
    Ok(Launch {
        files: vec![(cfg.clone(), config(plan))],
        program,
        args: vec![
            "-p".into(),
            format!("{d}/"),
            "-c".into(),
            cfg.display().to_string(),
            "-e".into(),
            format!("{d}/error.log"),
            "-g".into(),
            "daemon off;".into(),
        ],
        ready: vec![plan.ready, plan.admin],
    })
}
