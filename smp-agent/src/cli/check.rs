//! `smp-agent check`: load and attach every program, report each hook and the kernel facts.
//! Exits non-zero when a required hook fails, naming the missing capability or feature.

use std::process::ExitCode;

use serde::Serialize;

use super::OutputFormat;
use crate::probes::{catalog::SocketHooks, facts::KernelFacts, HookStatus, Probes};

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format: a table for people, or one JSON document for machines.
    /// Example: --output json
    #[arg(long, value_enum, default_value_t, verbatim_doc_comment)]
    pub output: OutputFormat,
}

/// The whole report, as `--output json` prints it.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub version: &'static str,
    pub kernel: KernelFacts,
    /// The eBPF ring buffer (needs ≥ 5.8) was created.
    pub ring_buffer: bool,
    /// Optional hooks usable on this kernel.
    pub optional_hooks: OptionalHooks,
    /// How the programs see socket I/O here (`sock` or `syscalls`; see `SMP_SOCKET_HOOKS`).
    pub socket_hooks: Option<SocketHooks>,
    pub hooks: Vec<HookStatus>,
    /// Every required hook attached.
    pub ok: bool,
    /// Why not, in one sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Which optional hook types work here.
#[derive(Debug, Serialize)]
pub struct OptionalHooks {
    pub kprobe: bool,
    pub fentry: bool,
}

pub async fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let report = tokio::task::spawn_blocking(run).await?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print_text(&report),
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the check (blocking: loads programs).
pub fn run() -> CheckReport {
    let kernel = KernelFacts::read();
    let (hooks, load_error) = Probes::check();
    let socket_hooks = hooks
        .iter()
        .find(|h| h.hook.required && h.hook.socket_hooks.is_some())
        .and_then(|h| h.hook.socket_hooks);
    let works = |program: &str| {
        hooks
            .iter()
            .any(|h| h.hook.program == program && h.status == "attached")
    };
    let failed_required: Vec<&HookStatus> = hooks
        .iter()
        .filter(|h| h.hook.required && h.status != "attached")
        .collect();
    // The object's maps (the ring buffer among them) exist once it loaded.
    let ring_buffer = load_error.is_none();
    let error = load_error.or_else(|| {
        failed_required.first().map(|h| {
            format!(
                "required hook {} ({}) failed: {}",
                h.hook.program,
                h.hook.target,
                h.reason.as_deref().unwrap_or("unknown reason")
            )
        })
    });
    CheckReport {
        version: env!("CARGO_PKG_VERSION"),
        ring_buffer,
        optional_hooks: OptionalHooks {
            kprobe: works("smp_probe_kprobe"),
            fentry: works("smp_probe_fentry"),
        },
        socket_hooks,
        ok: error.is_none(),
        error,
        kernel,
        hooks,
    }
}

fn print_text(r: &CheckReport) {
    let k = &r.kernel;
    println!("smp-agent {} check", r.version);
    println!("kernel      {}", k.release);
    println!(
        "BTF         {}",
        if k.btf {
            "yes (/sys/kernel/btf/vmlinux)"
        } else {
            "no"
        }
    );
    println!(
        "tracefs     {}",
        if k.tracefs { "mounted" } else { "not mounted" }
    );
    println!("ring buffer {}", if r.ring_buffer { "yes" } else { "no" });
    println!(
        "optional    kprobe: {}, fentry: {}",
        if r.optional_hooks.kprobe { "yes" } else { "no" },
        if r.optional_hooks.fentry { "yes" } else { "no" }
    );
    println!(
        "socket I/O  {}",
        match r.socket_hooks {
            Some(SocketHooks::Sock) => "sock_send_length/sock_recv_length tracepoints",
            Some(SocketHooks::Syscalls) => "raw sys_enter/sys_exit (every syscall pays)",
            None => "unknown",
        }
    );
    println!(
        "caps        {}",
        if k.capabilities.is_empty() {
            "none".to_string()
        } else {
            k.capabilities.join(" ")
        }
    );
    println!();
    println!(
        "{:<20} {:<15} {:<32} {:<9} {:>8} REASON",
        "PROGRAM", "KIND", "HOOK", "STATUS", "VERIFIED"
    );
    for h in &r.hooks {
        let kind = serde_json::to_value(h.hook.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let status = if h.status == "failed" && !h.hook.required {
            "absent"
        } else {
            h.status
        };
        let note = match (h.hook.required, h.hook.socket_hooks) {
            (true, _) => "",
            (false, Some(_)) => "(alternative, not used here)",
            (false, None) => "(optional)",
        };
        // Instructions the verifier processed, of its 1 000 000 limit.
        let verified = h
            .verified_insns
            .map_or_else(|| "-".to_string(), |n| n.to_string());
        println!(
            "{:<20} {:<15} {:<32} {:<9} {:>8} {}",
            h.hook.program,
            kind,
            h.hook.target,
            status,
            verified,
            h.reason.as_deref().unwrap_or(note)
        );
    }
    println!();
    println!("VERIFIED: instructions the kernel's verifier processed, of its limit of 1000000");
    match &r.error {
        None => println!("OK: every required hook attached"),
        Some(e) => println!("FAILED: {e}"),
    }
}
