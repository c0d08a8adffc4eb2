//! Our ground-truth proxy in a sidecar slot: this same binary, `lab proxy …`.

use super::{Launch, SlotPlan};
use crate::lab::{config::Side, LabError};

/// Launch recipe.
pub fn plan(plan: &SlotPlan<'_>) -> Result<Launch, LabError> {
    let program = plan.cfg.agent_exe()?;
    let sc = plan.cfg.sidecar(plan.side);
    let mut args: Vec<String> = vec![
        "lab".into(),
        "proxy".into(),
        "--listen".into(),
        plan.listen.to_string(),
        "--upstream".into(),
        plan.upstream.to_string(),
        "--role".into(),
        plan.via.clone(),
        "--delay-us".into(),
        sc.delay_us.to_string(),
        "--header-delay".into(),
        sc.header_delay.to_string(),
        "--workers".into(),
        sc.workers.to_string(),
        "--admin".into(),
        plan.admin.to_string(),
    ];
    if super::downstream_h2(plan) {
        args.push("--downstream-h2".into());
    }
    if super::upstream_h2(plan) {
        args.push("--upstream-h2".into());
    }
    if let Some(t) = plan.tls {
        let p = |p: &std::path::Path| p.display().to_string();
        match plan.side {
            Side::Inbound => args.extend([
                "--tls-cert".into(),
                p(&t.server_cert),
                "--tls-key".into(),
                p(&t.server_key),
                "--tls-ca".into(),
                p(&t.ca),
            ]),
            Side::Outbound => args.extend([
                "--upstream-tls-cert".into(),
                p(&t.client_cert),
                "--upstream-tls-key".into(),
                p(&t.client_key),
                "--upstream-tls-ca".into(),
                p(&t.ca),
                "--upstream-server-name".into(),
                t.server_name.clone(),
            ]),
        }
    }
    Ok(Launch {
        files: Vec::new(),
        program,
        args,
        ready: vec![plan.ready, plan.admin],
    })
}

/// Requests our proxy took, from its admin `GET /stats` body.
pub fn parse_requests(body: &str) -> Option<u64> {
    super::stat_line(body, "requests_total ")
}
