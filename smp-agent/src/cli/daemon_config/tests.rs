//! Unit tests of `daemon_config` (kept apart so the module reads as what it does).

use std::collections::HashMap;

use clap::Parser as _;

use super::*;

#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: DaemonArgs,
}

fn args(flags: &[&str]) -> DaemonArgs {
    Cli::try_parse_from(std::iter::once("daemon").chain(flags.iter().copied()))
        .unwrap()
        .args
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

struct TempFile(PathBuf);
impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("smp-daemon-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        TempFile(p)
    }
    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn defaults_are_loopback_and_the_standard_proxies() {
    let c = DaemonConfig::resolve(&args(&[]), env(&[])).unwrap();
    assert_eq!(c, DaemonConfig::default());
    assert_eq!(c.listen.to_string(), "127.0.0.1:9477");
    assert!(c.listen.ip().is_loopback());
    assert_eq!(c.discovery(), DiscoveryConfig::default());
    assert_eq!(c.metrics_options(), MetricsOptions::default());
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let f = TempFile::new(
        "precedence.yaml",
        "listen: 10.0.0.1:1000\ninterval: 2s\nmax_proxies: 7\nproxy_names: [envoy]\nkube: off\n",
    );
    let e = env(&[
        ("SMP_AGENT_LISTEN", "10.0.0.2:2000"),
        ("SMP_AGENT_INTERVAL", "3s"),
        ("SMP_AGENT_CONFIG", &f.arg()),
    ]);
    let c = DaemonConfig::resolve(&args(&["--listen", "10.0.0.3:3000"]), &e).unwrap();
    assert_eq!(
        c.listen.to_string(),
        "10.0.0.3:3000",
        "flag over env and file"
    );
    assert_eq!(c.interval, Duration::from_secs(3), "env over file");
    assert_eq!(c.max_proxies, 7, "file over default");
    assert_eq!(c.proxy_names, ["envoy"]);
    assert_eq!(c.kube, KubeMode::Off);
    assert_eq!(c.forget_after, Duration::from_secs(600), "default");
    assert_eq!(
        c.config_file.as_deref(),
        Some(f.0.as_path()),
        "file from env"
    );
    // The flag names the file over the env.
    let g = TempFile::new("other.yaml", "max_proxies: 9\n");
    let c = DaemonConfig::resolve(&args(&["--config", &g.arg()]), &e).unwrap();
    assert_eq!(c.max_proxies, 9);
    // Lists: comma-separated in env and flags, repeatable flags.
    let c = DaemonConfig::resolve(
        &args(&["--proxy-name", "a,b", "--proxy-name", "c", "--pid", "5"]),
        env(&[("SMP_AGENT_PROXY_NAMES", "x"), ("SMP_AGENT_PIDS", "1, 2")]),
    )
    .unwrap();
    assert_eq!(c.proxy_names, ["a", "b", "c"]);
    assert_eq!(c.pids, [5]);
    let c = DaemonConfig::resolve(&args(&[]), env(&[("SMP_AGENT_PIDS", "1, 2")])).unwrap();
    assert_eq!(c.pids, [1, 2]);
    // Empty env values are unset (Kubernetes may set them so).
    let c = DaemonConfig::resolve(&args(&[]), env(&[("SMP_AGENT_LISTEN", "")])).unwrap();
    assert_eq!(c.listen, DEFAULT_LISTEN);
}

#[test]
fn file_errors_name_file_line_and_field() {
    let f = TempFile::new("unknown.yaml", "listen: 127.0.0.1:9477\nintervall: 1s\n");
    let e = DaemonConfig::resolve(&args(&["--config", &f.arg()]), env(&[])).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.field(), Some("intervall"), "{msg}");
    assert!(msg.contains(&format!("{}:2:", f.arg())), "{msg}");
    assert!(msg.contains("unknown field `intervall`"), "{msg}");

    for (text, line, field, words) in [
        ("interval: 10ms\n", 1, "interval", "too short"),
        (
            "listen: 127.0.0.1:9477\n\ninterval: 10ms\n",
            3,
            "interval",
            "too short",
        ),
        (
            "# comment\nlisten: localhost\n",
            2,
            "listen",
            "invalid listen address",
        ),
        ("kube: maybe\n", 1, "kube", "expected auto, on or off"),
        ("max_proxies: 0\n", 1, "max_proxies", "at least 1"),
        ("pids: [1, x]\n", 1, "pids[1]", "invalid"),
        (
            "proxy_names: [envoy, 'a b']\n",
            1,
            "proxy_names",
            "invalid proxy name",
        ),
        (
            "log_level: 'info,[[['\n",
            1,
            "log_level",
            "invalid log filter",
        ),
        ("interval: [1]\n", 1, "interval", "invalid type"),
    ] {
        let f = TempFile::new("bad.yaml", text);
        let e = DaemonConfig::resolve(&args(&["--config", &f.arg()]), env(&[])).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.field(), Some(field), "{text:?}: {msg}");
        assert!(
            msg.contains(&format!("bad.yaml:{line}:")),
            "{text:?}: {msg}"
        );
        assert!(msg.contains(words), "{text:?}: {msg}");
    }
}

#[test]
fn unreadable_file_is_a_clear_error() {
    let e = DaemonConfig::resolve(
        &args(&["--config", "/nonexistent/smp-agent.yaml"]),
        env(&[]),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("/nonexistent/smp-agent.yaml") && msg.contains("cannot read"),
        "{msg}"
    );
    let dir = std::env::temp_dir();
    let e =
        DaemonConfig::resolve(&args(&["--config", dir.to_str().unwrap()]), env(&[])).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
    let f = TempFile::new("notyaml.yaml", "listen: [unclosed\n");
    let e = DaemonConfig::resolve(&args(&["--config", &f.arg()]), env(&[])).unwrap_err();
    assert!(e.to_string().contains("notyaml.yaml:"), "{e}");
}

#[test]
fn env_and_flag_errors_name_the_variable_or_flag() {
    let e = DaemonConfig::resolve(&args(&[]), env(&[("SMP_AGENT_INTERVAL", "0s")])).unwrap_err();
    assert_eq!(e.field(), Some("SMP_AGENT_INTERVAL"));
    assert!(
        e.to_string()
            .starts_with("environment variable SMP_AGENT_INTERVAL=\"0s\""),
        "{e}"
    );
    let e = DaemonConfig::resolve(&args(&[]), env(&[("SMP_AGENT_LISTEN", "nope")])).unwrap_err();
    assert!(e.to_string().contains("SMP_AGENT_LISTEN"), "{e}");
    let e = Cli::try_parse_from(["daemon", "--listen", "nope"]).unwrap_err();
    assert!(e.to_string().contains("--listen"), "{e}");
    let e = Cli::try_parse_from(["daemon", "--interval", "1ms"]).unwrap_err();
    assert!(e.to_string().contains("--interval"), "{e}");
    let e = Cli::try_parse_from(["daemon", "--kube", "maybe"]).unwrap_err();
    assert!(e.to_string().contains("--kube"), "{e}");
}

#[test]
fn cross_field_errors_say_where_the_value_came_from() {
    let e = DaemonConfig::resolve(
        &args(&["--forget-after", "1s", "--interval", "2s"]),
        env(&[]),
    )
    .unwrap_err();
    assert_eq!(e.field(), Some("forget_after"));
    assert!(e.to_string().contains("--forget-after"), "{e}");
    let f = TempFile::new("empty-names.yaml", "proxy_names: []\n");
    let e = DaemonConfig::resolve(&args(&["--config", &f.arg()]), env(&[])).unwrap_err();
    assert_eq!(e.field(), Some("proxy_names"));
    assert!(e.to_string().contains("empty-names.yaml"), "{e}");
    // With pids it is fine.
    let c = DaemonConfig::resolve(&args(&["--config", &f.arg(), "--pid", "3"]), env(&[])).unwrap();
    assert!(c.proxy_names.is_empty());
}

#[test]
fn exe_and_cgroup_selectors_replace_the_default_names() {
    let c = DaemonConfig::resolve(
        &args(&[
            "--proxy-exe",
            "/usr/local/bin/envoy",
            "--cgroup",
            "/kubepods.slice",
        ]),
        env(&[]),
    )
    .unwrap();
    assert!(c.proxy_names.is_empty(), "{:?}", c.proxy_names);
    let d = c.discovery();
    assert_eq!(d.exe_paths, [PathBuf::from("/usr/local/bin/envoy")]);
    assert_eq!(d.cgroups, ["/kubepods.slice"]);
    assert!(d.names.is_empty());
    // Names given explicitly are kept alongside.
    let c = DaemonConfig::resolve(
        &args(&[]),
        env(&[
            (
                "SMP_AGENT_PROXY_EXES",
                "/usr/local/bin/envoy,/usr/sbin/nginx",
            ),
            ("SMP_AGENT_PROXY_NAMES", "haproxy"),
        ]),
    )
    .unwrap();
    assert_eq!(c.proxy_names, ["haproxy"]);
    assert_eq!(c.proxy_exes.len(), 2);
    let f = TempFile::new("exes.yaml", "proxy_exes: [/usr/local/bin/envoy]\n");
    let c = DaemonConfig::resolve(&args(&["--config", &f.arg()]), env(&[])).unwrap();
    assert!(c.proxy_names.is_empty());
    // Relative paths are errors, naming where they came from.
    let f = TempFile::new("bad-exes.yaml", "\nproxy_exes: [envoy]\n");
    let e = DaemonConfig::resolve(&args(&["--config", &f.arg()]), env(&[])).unwrap_err();
    assert_eq!(e.field(), Some("proxy_exes"), "{e}");
    assert!(e.to_string().contains("bad-exes.yaml:2:"), "{e}");
    let e =
        DaemonConfig::resolve(&args(&[]), env(&[("SMP_AGENT_CGROUPS", "kubepods")])).unwrap_err();
    assert_eq!(e.field(), Some("SMP_AGENT_CGROUPS"), "{e}");
    assert!(Cli::try_parse_from(["daemon", "--proxy-exe", "envoy"]).is_err());
}

#[test]
fn metrics_tls_needs_both_files() {
    let c = DaemonConfig::resolve(
        &args(&[
            "--metrics-tls-cert",
            "/tls/tls.crt",
            "--metrics-tls-key",
            "/tls/tls.key",
            "--metrics-token-file",
            "/token/token",
        ]),
        env(&[]),
    )
    .unwrap();
    let o = c.server_options();
    assert_eq!(o.tls.unwrap().key, PathBuf::from("/tls/tls.key"));
    assert_eq!(o.token_file, Some(PathBuf::from("/token/token")));
    assert_eq!(
        DaemonConfig::default().server_options(),
        ServerOptions::default()
    );
    let e = DaemonConfig::resolve(&args(&["--metrics-tls-cert", "/tls/tls.crt"]), env(&[]))
        .unwrap_err();
    assert_eq!(e.field(), Some("metrics_tls_key"));
    assert!(e.to_string().contains("--metrics-tls-cert"), "{e}");
}

/// One definition per setting: every one has a flag, a variable and a file key, all
/// distinct, and the user documentation names each.
#[test]
fn every_setting_is_declared_once_and_documented() {
    use clap::CommandFactory as _;
    let cmd = Cli::command();
    let flags: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy.md"))
            .unwrap();
    let mut seen = std::collections::HashSet::new();
    for s in SETTINGS {
        for name in [("key", s.key), ("flag", s.flag), ("env", s.env)] {
            assert!(seen.insert(name), "{name:?} declared twice");
        }
        assert!(flags.iter().any(|f| f == s.flag), "--{} missing", s.flag);
        for name in [s.key, s.env] {
            assert!(
                docs.contains(name),
                "docs/deploy.md does not mention {name}"
            );
        }
        assert!(
            docs.contains(&format!("--{}", s.flag)),
            "docs/deploy.md: --{}",
            s.flag
        );
    }
    // Every file key is in the table (the printed configuration lists them all).
    let c = DaemonConfig {
        node_name: Some("n".into()),
        log_level: Some("info".into()),
        metrics_tls_cert: Some("/c".into()),
        metrics_tls_key: Some("/k".into()),
        metrics_token_file: Some("/t".into()),
        ..DaemonConfig::default()
    };
    let printed: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&c.to_yaml()).unwrap();
    assert_eq!(printed.len(), SETTINGS.len(), "{printed:?}");
}

#[test]
fn listen_addresses() {
    assert_eq!(
        parse_listen("0.0.0.0:9477").unwrap().to_string(),
        "0.0.0.0:9477"
    );
    assert_eq!(
        parse_listen("[::1]:9477").unwrap().to_string(),
        "[::1]:9477"
    );
    // $(POD_IP):9477 on an IPv6 pod.
    assert_eq!(
        parse_listen("fd00:10:244::5:9477").unwrap().to_string(),
        "[fd00:10:244::5]:9477"
    );
    for bad in [
        "",
        "9477",
        "localhost:9477",
        "1.2.3.4",
        "1.2.3.4:99999",
        "[::1]",
    ] {
        assert!(parse_listen(bad).is_err(), "{bad}");
    }
}

#[test]
fn kube_mode_accepts_words_and_booleans() {
    for (text, want) in [
        ("kube: auto", KubeMode::Auto),
        ("kube: on", KubeMode::On),
        ("kube: true", KubeMode::On),
        ("kube: false", KubeMode::Off),
        ("kube: \"off\"", KubeMode::Off),
    ] {
        let f = FileConfig::parse(text, Path::new("k.yaml")).unwrap();
        assert_eq!(f.kube, Some(want), "{text}");
    }
}

#[test]
fn print_config_round_trips() {
    let c = DaemonConfig::resolve(
        &args(&[
            "--listen",
            "[::]:9477",
            "--interval",
            "1500ms",
            "--node-name",
            "n1",
            "--log-level",
            "debug",
            "--pid",
            "12",
        ]),
        env(&[]),
    )
    .unwrap();
    let yaml = c.to_yaml();
    let f = TempFile::new("printed.yaml", &yaml);
    let back = DaemonConfig::resolve(&args(&["--config", &f.arg()]), env(&[])).unwrap();
    assert_eq!(
        back,
        DaemonConfig {
            config_file: Some(f.0.clone()),
            ..c
        },
        "{yaml}"
    );
    // Empty and comment-only files are empty configurations.
    let f = TempFile::new("blank.yaml", "# nothing here\n\n");
    assert!(DaemonConfig::resolve(&args(&["--config", &f.arg()]), env(&[])).is_ok());
}
