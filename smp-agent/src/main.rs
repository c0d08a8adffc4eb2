//! `smp-agent`: parse the command line, set up logging, dispatch. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser as _;
use smp_agent::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    smp_agent::logging::init(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli.command.execute());
    // Do not wait for blocking work left behind (probes still loading when the daemon was
    // told to stop): exiting closes their file descriptors, which detaches them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => code,
        Err(e) => {
            if cli.verbose > 1 {
                eprintln!("error: {e:?}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
