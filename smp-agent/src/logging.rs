//! Logging setup: `tracing` to stderr, filter from `SMP_LOG` (default `warn,smp_agent=info`).

use tracing_subscriber::EnvFilter;

/// Initialises the global subscriber. `verbose` raises the default level (-v info, -vv debug).
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn,smp_agent=info",
        1 => "info,smp_agent=debug",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("SMP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
