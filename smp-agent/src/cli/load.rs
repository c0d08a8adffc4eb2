//! `smp-agent load`: drive HTTP load at a fixed rate (open loop, coordinated-omission
//! corrected) or as fast as possible, and report latency percentiles, rates and errors.

use std::{
    io::IsTerminal as _,
    path::PathBuf,
    process::ExitCode,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::loadgen::{self, Control, LoadSpec, Protocol, Rate, Results};

/// Output format of `smp-agent load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Output {
    /// Human-readable summary.
    #[default]
    Text,
    /// One JSON document (with the lossless histogram).
    Json,
    /// One YAML document (with the lossless histogram).
    Yaml,
}

/// HTTP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpVersion {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2: h2c prior knowledge for http://, ALPN h2 for https://.
    Http2,
    /// Unary gRPC over HTTP/2: the URL's path is the method, --body the message.
    Grpc,
}

/// Drive HTTP load and measure latency.
///
/// Open loop by default (`--rate N`): requests go out on a fixed schedule whatever the server
/// does, and latency counts from each request's intended send time (coordinated omission
/// corrected, like wrk2). `--rate max` is closed loop (like wrk): each connection sends its
/// next request when the previous response arrives.
///
/// Examples:
///   smp-agent load --rate 1000 --duration 30s http://127.0.0.1:8080/
///   smp-agent load --rate max -c 64 --http2 https://svc.local/ --ca-file ca.pem
///   smp-agent load --rate 500 --grpc --body hello http://127.0.0.1:8080/smp.Lab/Echo
///   smp-agent load --config load-test.yaml --output yaml
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Endpoint URLs (http:// or https://); several are used round-robin.
    /// Optional with --config, which supplies `endpoint_urls`.
    pub urls: Vec<String>,

    /// SMP test configuration (mesheryctl `{test, mesh}` YAML/JSON); its `test.clients[0]`
    /// and `test.duration` set the load. Flags given explicitly override it.
    /// Example: --config load-test.yaml
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Requests per second over all connections (open loop), or `max` (closed loop).
    /// Required unless --config gives `rps`. Example: --rate 1000
    #[arg(short, long, value_name = "RPS|max", allow_negative_numbers = true)]
    pub rate: Option<String>,

    /// Concurrent connections (per distinct host:port) [default: 10].
    #[arg(short, long)]
    pub connections: Option<u32>,

    /// Measured duration, Go syntax [default: 10s]. Example: --duration 1m30s
    #[arg(short, long, value_name = "DURATION")]
    pub duration: Option<String>,

    /// Load applied before measuring starts, excluded from the results. Example: --warmup 5s
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub warmup: String,

    /// HTTP method [default: GET].
    #[arg(short = 'm', long)]
    pub method: Option<String>,

    /// Extra request header, repeatable. Example: -H 'x-env: test'
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Cookie, repeatable. Example: --cookie session=abc
    #[arg(long = "cookie", value_name = "NAME=VALUE")]
    pub cookies: Vec<String>,

    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,

    /// Request body read from a file.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,

    /// Content-Type of the body. Example: --content-type application/json
    #[arg(long)]
    pub content_type: Option<String>,

    /// HTTP version [default: http1].
    #[arg(long, value_enum, conflicts_with_all = ["http2", "grpc"])]
    pub protocol: Option<HttpVersion>,

    /// Shorthand for --protocol http2.
    #[arg(long, conflicts_with = "grpc")]
    pub http2: bool,

    /// Shorthand for --protocol grpc: unary gRPC (POST of --body as one length-prefixed
    /// message, `te: trailers`); responses are counted by `grpc-status`, non-OK ones as errors.
    #[arg(long)]
    pub grpc: bool,

    /// PEM file with CA certificates to trust for https:// (SMP `ssl_certificate`).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Do not verify TLS certificates.
    #[arg(long)]
    pub insecure: bool,

    /// Time allowed for TCP connect and TLS handshake.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub connect_timeout: String,

    /// Time allowed for a whole request before it counts as a timeout error.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub timeout: String,

    /// Load threads, each running its share of the connections [default: one per CPU].
    #[arg(long)]
    pub threads: Option<usize>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Never show the progress bar (it is only shown when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,

    /// Merge saved JSON/YAML results (runs made at the same time, e.g. one per node) instead
    /// of running load; prints the merged result.
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with_all = ["urls", "config", "rate"])]
    pub merge: Vec<PathBuf>,
}

fn duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    crate::duration::parse(text).with_context(|| format!("invalid --{flag}"))
}

/// Builds the load spec from the config file (if any) and the flags.
pub fn spec_from_args(args: &Args) -> anyhow::Result<LoadSpec> {
    let mut spec = match &args.config {
        Some(path) => {
            let cfg = crate::report::file::read_test_config(path)
                .with_context(|| format!("failed to read SMP test config {}", path.display()))?;
            LoadSpec::from_smp(&cfg.test)
                .with_context(|| format!("cannot use the load in {}", path.display()))?
        }
        None => {
            if args.rate.is_none() {
                bail!("give --rate (requests per second, or `max`) or --config");
            }
            LoadSpec::new(Vec::new())
        }
    };
    if !args.urls.is_empty() {
        spec.urls = args.urls.clone();
    }
    if spec.urls.is_empty() {
        bail!("give at least one endpoint URL (or --config with endpoint_urls)");
    }
    if let Some(r) = &args.rate {
        spec.rate = Rate::parse(r)?;
    }
    if let Some(c) = args.connections {
        spec.connections = c;
    }
    if let Some(d) = &args.duration {
        spec.duration = duration("duration", d)?;
    }
    spec.warmup = duration("warmup", &args.warmup)?;
    spec.connect_timeout = duration("connect-timeout", &args.connect_timeout)?;
    spec.timeout = duration("timeout", &args.timeout)?;
    if let Some(m) = &args.method {
        spec.method = m.to_ascii_uppercase();
    }
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("invalid --header {h:?}: expected `Name: value`"))?;
        spec.headers
            .push((name.trim().to_string(), value.trim().to_string()));
    }
    spec.cookies.extend(args.cookies.iter().cloned());
    if let Some(b) = &args.body {
        spec.body = b.clone().into_bytes();
    }
    if let Some(f) = &args.body_file {
        spec.body = std::fs::read(f)
            .with_context(|| format!("failed to read --body-file {}", f.display()))?;
    }
    if let Some(ct) = &args.content_type {
        spec.content_type = Some(ct.clone());
    }
    if args.grpc || args.protocol == Some(HttpVersion::Grpc) {
        spec.protocol = Protocol::Grpc;
    } else if args.http2 || args.protocol == Some(HttpVersion::Http2) {
        spec.protocol = Protocol::Http2;
    } else if args.protocol == Some(HttpVersion::Http1) {
        spec.protocol = Protocol::Http1;
    }
    if let Some(ca) = &args.ca_file {
        spec.ca_file = Some(ca.clone());
    }
    spec.insecure |= args.insecure;
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        spec.threads = Some(t);
    }
    spec.validate()?;
    Ok(spec)
}

fn print(results: &Results, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Text => print!("{}", results.render_text()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(results).context("failed to write JSON")?
        ),
        Output::Yaml => print!(
            "{}",
            serde_yaml_ng::to_string(results).context("failed to write YAML")?
        ),
    }
    Ok(())
}

fn read_results(path: &std::path::Path) -> anyhow::Result<Results> {
    let text = crate::input::read_text(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let parsed = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).map_err(anyhow::Error::from)
    } else {
        crate::input::yaml_from_str(&text).map_err(anyhow::Error::from)
    };
    parsed.with_context(|| format!("{} is not a `smp-agent load` result", path.display()))
}

/// Shows progress on stderr (a TTY only) until the run ends.
fn progress(spec: &LoadSpec, control: Arc<Control>) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let total = spec.warmup + spec.duration;
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total.as_millis() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let warmup = spec.warmup;
    Some(tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let el = start.elapsed();
            bar.set_position((el.as_millis() as u64).min(total.as_millis() as u64));
            let done = control.completed.load(Ordering::Relaxed);
            let failed = control.failed.load(Ordering::Relaxed);
            let measured = el.saturating_sub(warmup).as_secs_f64();
            let clock = format!("{:.0}s/{:.0}s", el.as_secs_f64(), total.as_secs_f64());
            let msg = if el < warmup {
                format!("{clock} warming up")
            } else if measured > 0.0 {
                format!(
                    "{clock} {done} requests, {:.0}/s, {failed} errors",
                    done as f64 / measured
                )
            } else {
                clock
            };
            bar.set_message(msg);
            if control.is_stopped() || el >= total + Duration::from_secs(60) {
                break;
            }
        }
        bar.finish_and_clear();
    }))
}

/// Runs `smp-agent load`.
pub async fn execute(args: Args) -> anyhow::Result<ExitCode> {
    if !args.merge.is_empty() {
        let runs = args
            .merge
            .iter()
            .map(|p| read_results(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let merged = Results::merge(&runs)?;
        print(&merged, args.output)?;
        return Ok(ExitCode::SUCCESS);
    }
    let spec = spec_from_args(&args)?;
    let control = Control::new();
    let bar = if args.no_progress {
        None
    } else {
        progress(&spec, control.clone())
    };
    let ctrl_c = {
        let control = control.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping and reporting what was measured");
                control.stop();
            }
        })
    };
    let result = loadgen::run(&spec, control.clone()).await;
    ctrl_c.abort();
    if let Some(bar) = bar {
        bar.abort();
        // Clear the bar line so the summary starts clean.
        eprint!("\r\x1b[2K");
    }
    let results = result.context("load run failed")?;
    print(&results, args.output)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(argv: &[&str]) -> anyhow::Result<LoadSpec> {
        let mut full = vec!["smp-agent", "load"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full)?;
        let Command::Load(args) = cli.command else {
            panic!("not the load command")
        };
        spec_from_args(&args)
    }

    #[test]
    fn flags_build_a_spec() {
        let s = parse(&[
            "--rate",
            "250",
            "-c",
            "4",
            "-d",
            "1m30s",
            "--warmup",
            "500ms",
            "-H",
            "x-a: b",
            "--cookie",
            "k=v",
            "-m",
            "post",
            "--body",
            "hi",
            "--http2",
            "http://127.0.0.1:1/",
        ])
        .unwrap();
        assert_eq!(s.rate, Rate::Fixed(250.0));
        assert_eq!(s.connections, 4);
        assert_eq!(s.duration, Duration::from_secs(90));
        assert_eq!(s.warmup, Duration::from_millis(500));
        assert_eq!(s.headers, [("x-a".to_string(), "b".to_string())]);
        assert_eq!(s.method, "POST");
        assert_eq!(s.protocol, Protocol::Http2);
        let s = parse(&["--rate", "1", "--grpc", "http://127.0.0.1:1/smp.Lab/Echo"]).unwrap();
        assert_eq!(s.protocol, Protocol::Grpc);
        let s = parse(&["--rate", "1", "--protocol", "grpc", "http://127.0.0.1:1/"]).unwrap();
        assert_eq!(s.protocol, Protocol::Grpc);
        assert!(parse(&["--rate", "1", "--grpc", "--http2", "http://127.0.0.1:1/"]).is_err());
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let err = |argv: &[&str]| format!("{:#}", parse(argv).unwrap_err());
        assert!(err(&["--rate", "0", "http://127.0.0.1/"]).contains("invalid rate"));
        assert!(err(&["--rate", "-5", "http://127.0.0.1/"]).contains("invalid rate"));
        assert!(err(&["--rate", "abc", "http://127.0.0.1/"]).contains("invalid rate"));
        let e = err(&["--rate", "1", "-d", "abc", "http://127.0.0.1/"]);
        assert!(e.contains("invalid --duration") && e.contains("abc"), "{e}");
        assert!(err(&["--rate", "1", "not a url"]).contains("invalid URL"));
        assert!(err(&["http://127.0.0.1/"]).contains("--rate"));
        assert!(err(&["--rate", "1"]).contains("endpoint URL"));
        assert!(err(&["--rate", "1", "-H", "novalue", "http://127.0.0.1/"]).contains("Name: value"));
        assert!(err(&["--rate", "1", "-c", "0", "http://127.0.0.1/"]).contains("connections"));
    }
}
