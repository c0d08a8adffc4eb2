//! Headless Chromium for the tests that check the HTML report in a real browser.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The Chromium binary (`SMP_CHROMIUM` overrides); `None` outside CI when missing, a test
/// failure under `CI=true`.
pub fn chromium(test: &str) -> Option<PathBuf> {
    crate::require_program(
        test,
        "SMP_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    )
}

/// What one headless Chromium run gave.
pub struct Run {
    /// stdout (`--dump-dom`: the serialized DOM after load).
    pub stdout: String,
    /// Console messages (`--enable-logging=stderr` logs them as `…:CONSOLE…] "text", source: …`).
    pub console: Vec<String>,
}

/// Runs headless Chromium on `page` with `extra` arguments (its output and profile go to
/// `work/chromium/`); fails the test after 120 s.
pub fn run_chromium(bin: &Path, work: &Path, tag: &str, extra: &[&str], page: &Path) -> Run {
    let work = work.join("chromium");
    fs::create_dir_all(&work).unwrap();
    let out = work.join(format!("{tag}.out"));
    let err = work.join(format!("{tag}.err"));
    let profile = work.join(format!("profile-{tag}"));
    let url = format!("file://{}", page.display());
    let mut child = Command::new(bin)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium ({tag}) did not finish within 120 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = fs::read_to_string(&out).unwrap();
    let stderr = fs::read_to_string(&err).unwrap();
    assert!(
        status.success(),
        "chromium ({tag}) failed: {status}\n{stderr}"
    );
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    let _ = fs::remove_dir_all(&profile);
    Run { stdout, console }
}

pub fn dump_dom(bin: &Path, work: &Path, tag: &str, page: &Path) -> Run {
    run_chromium(bin, work, tag, &["--dump-dom"], page)
}
