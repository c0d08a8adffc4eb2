//! Project tasks. `cargo xtask demo` and `cargo xtask test` are the README's two commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_agent;
mod bench_loadgen;
mod bench_overhead;
mod bench_pairing;
mod bench_soak;
mod build;
mod demo;
mod fuzz;
mod lab;
mod setup;
mod test;
mod util;
mod vm;
mod ztunnel;

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "smp-agent project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what building and testing need (idempotent): rust-src, bpf-linker, Debian
    /// packages, Envoy.
    Setup,
    /// Build the agent (debug; --release for release).
    Build(build::Options),
    /// Set up, build, and run the main job on the built-in mesh lab.
    Demo(demo::Options),
    /// Set up, build, and run every test, privileged ones included.
    Test(test::Options),
    /// Benchmarks; results go to docs/benchmarks.md by hand.
    Bench(bench::Options),
    /// Fuzz the readers of untrusted input (cargo-fuzz targets in fuzz/), each for a budget.
    Fuzz(fuzz::Options),
    /// Run the agent's check and probe tests on Debian kernels in qemu (the kernel matrix).
    VmTest(vm::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Build(o) => build::run(&o).map(|_| ()),
        Command::Demo(o) => demo::run(&o),
        Command::Test(o) => test::run(&o),
        Command::Bench(o) => bench::run(&o),
        Command::Fuzz(o) => fuzz::run(&o),
        Command::VmTest(o) => vm::run(&o),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
