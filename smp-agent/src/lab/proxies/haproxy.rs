//! haproxy sidecar (Debian's 2.6): HTTP mode frontend → backend with one static server,
//! `nbthread` workers, stats page on the pod's loopback (`/stats;csv`).

use std::fmt::Write as _;

use super::{Launch, SlotPlan};
use crate::lab::{config::Side, LabError};

/// The haproxy.cfg of one slot.
pub fn config(plan: &SlotPlan<'_>) -> String {
    let mut bind = format!("bind {}", plan.listen);
    let mut server = format!("server s1 {}", plan.upstream);
    match (plan.side, plan.tls) {
        (Side::Inbound, Some(t)) => {
            let _ = write!(
                bind,
                " ssl crt {} ca-file {} verify required alpn {}",
                t.server_bundle.display(),
                t.ca.display(),
                if plan.h2 { "h2" } else { "http/1.1" }
            );
        }
        (Side::Inbound, None) if plan.h2 => bind.push_str(" proto h2"),
        (Side::Outbound, Some(t)) => {
            let _ = write!(
                server,
                " ssl crt {} ca-file {} verify required sni str({name}) verifyhost {name} alpn {}",
                t.client_bundle.display(),
                t.ca.display(),
                if plan.h2 { "h2" } else { "http/1.1" },
                name = t.server_name
            );
        }
        (Side::Outbound, None) if plan.h2 => server.push_str(" proto h2"),
        _ => {}
    }
    // The app's side of the path: h2c from the client, h2c to the app.
    if plan.side == Side::Outbound && super::downstream_h2(plan) {
        bind.push_str(" proto h2");
    }
    if plan.side == Side::Inbound && super::upstream_h2(plan) {
        server.push_str(" proto h2");
    }
    format!(
        "global\n\
         \tnbthread {threads}\n\
         \tmaxconn {maxconn}\n\
         defaults\n\
         \tmode http\n\
         \toption http-keep-alive\n\
         \ttimeout connect 5s\n\
         \ttimeout client 120s\n\
         \ttimeout server 120s\n\
         \ttimeout http-keep-alive 120s\n\
         frontend sidecar\n\
         \t{bind}\n\
         \thttp-response add-header x-smp-via {via}\n\
         \tdefault_backend upstream\n\
         backend upstream\n\
         \t{server}\n\
         listen stats\n\
         \tbind {admin}\n\
         \tstats enable\n\
         \tstats uri /stats\n",
        threads = plan.workers(),
        maxconn = maxconn(),
        via = plan.via,
        admin = plan.admin,
    )
}

/// haproxy needs about two fds per connection and refuses to start when it cannot raise its
/// fd limit that far: derive maxconn from the hard RLIMIT_NOFILE.
fn maxconn() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    let hard = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_max
    } else {
        4096
    };
    (hard.saturating_sub(200) / 2).clamp(256, 20_000)
}

/// Launch recipe: `haproxy -f cfg -db` (foreground: the pid is haproxy's).
pub fn plan(plan: &SlotPlan<'_>) -> Result<Launch, LabError> {
    let program = super::require("haproxy", "haproxy")?;
    let cfg = plan.dir.join("haproxy.cfg");
    Ok(Launch {
        files: vec![(cfg.clone(), config(plan))],
        program,
        args: vec!["-f".into(), cfg.display().to_string(), "-db".into()],
        ready: vec![plan.ready, plan.admin],
    })
}

/// Requests the `sidecar` frontend took, from the stats page's CSV (`GET /stats;csv`).
pub fn parse_requests(body: &str) -> Option<u64> {
    let mut lines = body.lines();
    let header = lines.next()?.trim_start_matches("# ");
    let col = header.split(',').position(|c| c == "req_tot")?;
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"sidecar") && f.get(1) == Some(&"FRONTEND"))
        .and_then(|f| f.get(col)?.parse().ok())
}
