//! `cargo xtask bench <name>`: benchmarks measured side by side in one run.

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(subcommand)]
    pub bench: Bench,
}

#[derive(Debug, clap::Subcommand)]
pub enum Bench {}

pub fn run(o: &Options) -> anyhow::Result<()> {
    match o.bench {}
}
