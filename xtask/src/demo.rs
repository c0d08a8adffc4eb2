//! `cargo xtask demo`: set up, build, show what the agent sees, and write the results.
//!
//! Today: `check`, then `top` on a real nginx driven by wrk on loopback; the JSON goes to
//! `smp-results/<timestamp>/`.

use std::{
    fs,
    process::{Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use crate::{
    build,
    util::{root, run_cmd},
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds of load to measure.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// Kills a child process when dropped (so Ctrl-C or an error leaves nothing behind).
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    let agent = build::run(&build::Options { release: true })?;
    println!("\n== smp-agent check");
    run_cmd(Command::new(&agent).arg("check"))?;

    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let out_dir = root().join("smp-results").join(format!("demo-{stamp}"));
    fs::create_dir_all(&out_dir)
        .with_context(|| format!("failed to create {}", out_dir.display()))?;

    let conf = out_dir.join("nginx.conf");
    let port = 18_080;
    fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {dir}/nginx.pid;\n\
             error_log {dir}/nginx-error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; server {{ listen 127.0.0.1:{port}; \
             location / {{ return 200 \"hello from the smp-agent demo\\n\"; }} }} }}\n",
            dir = out_dir.display()
        ),
    )?;
    let nginx = Reap(
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .spawn()
            .context("failed to start nginx (installed by `cargo xtask setup`)")?,
    );
    std::thread::sleep(Duration::from_millis(300));
    let pid = nginx.0.id();
    println!("\n== load: wrk -c8 against nginx (pid {pid}) on 127.0.0.1:{port}");
    let _wrk = Reap(
        Command::new("wrk")
            .args(["-t1", "-c8", &format!("-d{}s", 2 * o.seconds + 3)])
            .arg(format!("http://127.0.0.1:{port}/"))
            .stdout(Stdio::null())
            .spawn()
            .context("failed to start wrk")?,
    );
    println!("\n== smp-agent top --pid {pid} --duration {}s", o.seconds);
    run_cmd(Command::new(&agent).args([
        "top",
        "--pid",
        &pid.to_string(),
        "--duration",
        &format!("{}s", o.seconds),
    ]))?;
    let json = Command::new(&agent)
        .args([
            "top",
            "--pid",
            &pid.to_string(),
            "--duration",
            "2s",
            "--output",
            "json",
        ])
        .output()?;
    let path = out_dir.join("top.json");
    fs::write(&path, &json.stdout)?;
    println!("\nresults: {}", path.display());
    Ok(())
}
