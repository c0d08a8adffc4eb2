//! `cargo xtask demo`: the main job, end to end.

#[derive(Debug, clap::Args)]
pub struct Options {}

pub fn run(_o: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    anyhow::bail!("demo: not implemented yet")
}
