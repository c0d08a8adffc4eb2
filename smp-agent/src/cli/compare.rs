//! `smp-agent compare A B`: deltas per percentile (and per hop), significance, and a CI gate.
//!
//! Exit status: 0 = compared and every `--fail-if` rule passed; 1 = a rule fired (regression);
//! 2 = the inputs could not be read (like `diff`: 0 same, 1 different, 2 trouble).

use std::{path::PathBuf, process::ExitCode};

use crate::{
    cli::OutputFormat,
    report::compare::{self, BootstrapConfig, LatencyUnit, Threshold},
};

/// Unit of a side's `latencies_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum UnitArg {
    /// Detect: our label, Meshery markers, Little's law, magnitude.
    #[default]
    Auto,
    /// Milliseconds (what the SMP spec says).
    Ms,
    /// Seconds (what Meshery writes).
    S,
}

impl UnitArg {
    fn forced(self) -> Option<LatencyUnit> {
        match self {
            UnitArg::Auto => None,
            UnitArg::Ms => Some(LatencyUnit::Milliseconds),
            UnitArg::S => Some(LatencyUnit::Seconds),
        }
    }
}

/// Arguments of `compare`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reference result (A): an smp-agent results directory, a result.yaml, an SMP result
    /// from another tool, a Meshery export (legacy SMP YAML or result JSON), or the output of
    /// `smp-agent load --output json|yaml`.
    pub a: PathBuf,

    /// Candidate result (B), same kinds as A. Deltas are B - A.
    pub b: PathBuf,

    /// Fail (exit 1) when the delta B - A crosses a limit. Repeatable.
    /// Relative to A: `p99>+10%`, `qps<-5%`; absolute: `p50>+2ms`, `avg>500us`, `qps<-100`.
    /// Metrics: min, avg, p50, p90, p99, max, qps; from the details documents:
    /// `overhead.p99` (meshed - baseline) and `hop:<proxy>/<direction>/<leg>.p99`.
    /// Operators: >, >=, <, <=. A rule that cannot be evaluated fails.
    #[arg(
        long = "fail-if",
        value_name = "RULE",
        value_parser = parse_threshold,
        verbatim_doc_comment
    )]
    pub fail_if: Vec<Threshold>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Unit of A's latencies_ms (auto-detected by default).
    #[arg(long, value_enum, default_value_t = UnitArg::Auto)]
    pub a_unit: UnitArg,

    /// Unit of B's latencies_ms (auto-detected by default).
    #[arg(long, value_enum, default_value_t = UnitArg::Auto)]
    pub b_unit: UnitArg,

    /// Bootstrap resamples for the significance test (0 disables it).
    #[arg(long, default_value_t = 200)]
    pub bootstrap_iterations: usize,
}

fn parse_threshold(s: &str) -> Result<Threshold, String> {
    s.parse::<Threshold>().map_err(|e| e.to_string())
}

/// Exit status when a `--fail-if` rule fired.
pub const EXIT_REGRESSION: u8 = 1;
/// Exit status when an input could not be read.
pub const EXIT_TROUBLE: u8 = 2;

pub async fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let load = |p: &PathBuf, u: UnitArg| compare::load_side(p, u.forced());
    let sides = load(&args.a, args.a_unit).and_then(|a| Ok((a, load(&args.b, args.b_unit)?)));
    let (a, b) = match sides {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_TROUBLE));
        }
    };
    let boot = BootstrapConfig {
        iterations: args.bootstrap_iterations,
        ..BootstrapConfig::default()
    };
    let cmp = compare::compare(&a, &b, &args.fail_if, boot);
    match args.output {
        OutputFormat::Text => print!("{cmp}"),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&cmp)?),
    }
    Ok(if cmp.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REGRESSION)
    })
}
