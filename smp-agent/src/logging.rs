//! Logging setup: `tracing` to stderr, filter from `SMP_LOG` (default `warn,smp_agent=info`).
//! A subcommand with its own log setting (`daemon --log-level`) replaces the filter with
//! [`set_filter`].

use std::{io::IsTerminal as _, sync::OnceLock};

use tracing_subscriber::{
    layer::SubscriberExt as _, reload, util::SubscriberInitExt as _, EnvFilter, Registry,
};

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Initialises the global subscriber. `verbose` raises the default level (-v info, -vv debug).
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn,smp_agent=info",
        1 => "info,smp_agent=debug",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("SMP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let (filter, handle) = reload::Layer::new(filter);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours for a terminal only, not for container logs or files.
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init()
        .is_ok();
    if installed {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the filter of the subscriber [`init`] installed (tracing env-filter syntax). Does
/// nothing when [`init`] did not install one (e.g. in tests).
pub fn set_filter(filter: &str) -> Result<(), String> {
    let new =
        EnvFilter::try_new(filter).map_err(|e| format!("invalid log filter {filter:?}: {e}"))?;
    match FILTER.get() {
        Some(handle) => handle.reload(new).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}
