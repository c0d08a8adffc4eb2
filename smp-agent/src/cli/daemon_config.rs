//! Configuration of `smp-agent daemon`: a YAML file, `SMP_AGENT_*` environment variables and
//! flags, merged field by field with **flags > env > file > defaults**.
//!
//! Every value goes through the same parser wherever it comes from, and an error names where it
//! came from: `config.yaml:4:9: field `interval`: …` for the file (unknown keys are errors
//! too), `SMP_AGENT_INTERVAL="0s": …` for the environment, clap's `--interval` message for
//! flags. The file format is documented in docs/deploy.md; the default file is
//! deploy/kubernetes/configmap.yaml.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    duration,
    metrics::MetricsOptions,
    proxy::{
        discovery::{DEFAULT_EXCLUDED_NAMES, DEFAULT_PROXY_NAMES},
        DiscoveryConfig,
    },
    report::file::{self as smp_file, SmpFileError},
};

/// Prefix of the environment variables (`SMP_AGENT_LISTEN`, …).
pub const ENV_PREFIX: &str = "SMP_AGENT_";
/// Default metrics address: loopback only, so nothing is exposed unless asked.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9477);
/// Default snapshot interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default log filter (same as the other subcommands without `-v`).
pub const DEFAULT_LOG_LEVEL: &str = "warn,smp_agent=info";

/// Whether to ask the Kubernetes API which pod a proxy runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KubeMode {
    /// When running in a cluster (a service-account token is mounted).
    #[default]
    Auto,
    /// Always; not being in a cluster is an error.
    On,
    /// Never: pod and namespace labels stay empty.
    Off,
}

impl KubeMode {
    /// Its name in files and flags.
    pub const fn name(self) -> &'static str {
        match self {
            KubeMode::Auto => "auto",
            KubeMode::On => "on",
            KubeMode::Off => "off",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(KubeMode::Auto),
            "on" | "true" | "yes" => Ok(KubeMode::On),
            "off" | "false" | "no" => Ok(KubeMode::Off),
            _ => Err(format!("invalid kube mode {s:?}: expected auto, on or off")),
        }
    }
}

impl Serialize for KubeMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for KubeMode {
    /// `auto`, `on`, `off`, or a boolean.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(KubeMode::On),
            Raw::Bool(false) => Ok(KubeMode::Off),
            Raw::Str(s) => KubeMode::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses a listen address: `IP:PORT`, `[IPv6]:PORT`, or a bare IPv6 address followed by
/// `:PORT` (what `$(POD_IP):9477` expands to on an IPv6 pod). The port is required.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let err = || {
        format!("invalid listen address {s:?}: expected IP:PORT, e.g. 127.0.0.1:9477 or [::1]:9477")
    };
    let (ip, port) = s.rsplit_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().map_err(|_| err())?;
    let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| err())?;
    Ok(SocketAddr::new(IpAddr::V6(ip), port))
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = duration::parse(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) {
        return Err(format!("{s:?} is too short: at least 100ms"));
    }
    Ok(d)
}

fn parse_forget_after(s: &str) -> Result<Duration, String> {
    let d = duration::parse(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

fn parse_log_level(s: &str) -> Result<String, String> {
    let s = s.trim();
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("invalid log filter {s:?}: {e} (e.g. info, or warn,smp_agent=debug)"))
}

fn parse_max_proxies(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("invalid number {s:?}")),
    }
}

fn parse_pid(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) | Err(_) => Err(format!("invalid pid {s:?}")),
        Ok(p) => Ok(p),
    }
}

fn parse_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.contains(char::is_whitespace) || s.contains('/') {
        return Err(format!(
            "invalid proxy name {s:?}: an executable or comm name, e.g. envoy"
        ));
    }
    Ok(s.to_string())
}

/// serde adapters: the same parsers for file values, so errors get the file's line and field.
mod de {
    use serde::{de::Error as _, Deserialize, Deserializer};

    pub fn with<'de, D, T>(
        d: D,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        parse(&s).map(Some).map_err(D::Error::custom)
    }

    macro_rules! adapter {
        ($name:ident, $t:ty, $parse:path) => {
            pub fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$t>, D::Error> {
                with(d, $parse)
            }
        };
    }
    adapter!(listen, std::net::SocketAddr, super::parse_listen);
    adapter!(interval, std::time::Duration, super::parse_interval);
    adapter!(forget_after, std::time::Duration, super::parse_forget_after);
    adapter!(log_level, String, super::parse_log_level);

    pub fn names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| super::parse_name(s))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(D::Error::custom)
    }

    pub fn max_proxies<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        match usize::deserialize(d)? {
            0 => Err(D::Error::custom("must be at least 1")),
            n => Ok(Some(n)),
        }
    }

    pub fn pids<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u32>>, D::Error> {
        let v = Vec::<u32>::deserialize(d)?;
        if v.contains(&0) {
            return Err(D::Error::custom("pid 0 is not a process"));
        }
        Ok(Some(v))
    }
}

/// The YAML file. Every key is optional; unknown keys are errors.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address of /metrics, /healthz, /readyz.
    #[serde(
        default,
        deserialize_with = "de::listen",
        skip_serializing_if = "Option::is_none"
    )]
    pub listen: Option<SocketAddr>,
    /// Executable/comm names of proxies to follow.
    #[serde(
        default,
        deserialize_with = "de::names",
        skip_serializing_if = "Option::is_none"
    )]
    pub proxy_names: Option<Vec<String>>,
    /// Names never followed (they sit in sidecar containers but do not proxy).
    #[serde(
        default,
        deserialize_with = "de::names",
        skip_serializing_if = "Option::is_none"
    )]
    pub exclude_names: Option<Vec<String>>,
    /// Extra processes to follow whatever their name.
    #[serde(
        default,
        deserialize_with = "de::pids",
        skip_serializing_if = "Option::is_none"
    )]
    pub pids: Option<Vec<u32>>,
    /// Snapshot period (Go-style duration).
    #[serde(
        default,
        deserialize_with = "de::interval",
        serialize_with = "ser_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// Kubernetes pod enrichment: auto, on, off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeMode>,
    /// The node's name (pods are listed for this node only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Log filter (tracing env-filter syntax).
    #[serde(
        default,
        deserialize_with = "de::log_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_level: Option<String>,
    /// Most proxies exported.
    #[serde(
        default,
        deserialize_with = "de::max_proxies",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_proxies: Option<usize>,
    /// Forget a proxy not seen for this long.
    #[serde(
        default,
        deserialize_with = "de::forget_after",
        serialize_with = "ser_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub forget_after: Option<Duration>,
}

fn ser_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&duration::format(*d)),
        None => s.serialize_none(),
    }
}

impl FileConfig {
    /// Parses file text; `path` is used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SmpFileError> {
        // An empty file (or only comments) is an empty configuration.
        if text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---"
        }) {
            return Ok(Self::default());
        }
        smp_file::parse_plain(text, path)
    }

    /// Reads and parses a file.
    pub fn read(path: &Path) -> Result<Self, SmpFileError> {
        Self::parse(&smp_file::read_text(path)?, path)
    }
}

/// Flags of `smp-agent daemon`. Every flag also has an environment variable and a file key; a
/// flag wins over the variable, the variable over the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DaemonArgs {
    /// Optional: YAML configuration file (env SMP_AGENT_CONFIG).
    /// Example: --config /etc/smp-agent/config.yaml
    #[arg(long, value_name = "FILE", verbatim_doc_comment)]
    pub config: Option<PathBuf>,

    /// Optional: where to serve /metrics, /healthz and /readyz (env SMP_AGENT_LISTEN,
    /// default 127.0.0.1:9477).
    /// Example: --listen 0.0.0.0:9477
    #[arg(long, value_name = "IP:PORT", value_parser = parse_listen, verbatim_doc_comment)]
    pub listen: Option<SocketAddr>,

    /// Optional: proxy executable/comm names to follow, repeatable or comma-separated (env
    /// SMP_AGENT_PROXY_NAMES; default envoy,linkerd2-proxy,haproxy,nginx).
    /// Example: --proxy-name envoy --proxy-name my-proxy
    #[arg(long = "proxy-name", value_name = "NAME", value_delimiter = ',', value_parser = parse_name, verbatim_doc_comment)]
    pub proxy_names: Option<Vec<String>>,

    /// Optional: names never followed (env SMP_AGENT_EXCLUDE_NAMES; default pilot-agent).
    /// Example: --exclude-name pilot-agent
    #[arg(long = "exclude-name", value_name = "NAME", value_delimiter = ',', value_parser = parse_name, verbatim_doc_comment)]
    pub exclude_names: Option<Vec<String>>,

    /// Optional: extra processes to follow whatever their name (env SMP_AGENT_PIDS).
    /// Example: --pid 4242
    #[arg(long = "pid", value_name = "PID", value_delimiter = ',', value_parser = parse_pid, verbatim_doc_comment)]
    pub pids: Option<Vec<u32>>,

    /// Optional: snapshot period, at least 100ms (env SMP_AGENT_INTERVAL; default 1s).
    /// Example: --interval 5s
    #[arg(long, value_name = "DURATION", value_parser = parse_interval, verbatim_doc_comment)]
    pub interval: Option<Duration>,

    /// Optional: Kubernetes pod enrichment (env SMP_AGENT_KUBE; default auto = when in a cluster).
    #[arg(long, value_enum, value_name = "MODE")]
    pub kube: Option<KubeMode>,

    /// Optional: this node's name; pods are listed for it only (env SMP_AGENT_NODE_NAME, set
    /// from the downward API in the DaemonSet).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// Optional: log filter, tracing env-filter syntax (env SMP_AGENT_LOG_LEVEL; default
    /// warn,smp_agent=info). SMP_LOG and -v still apply when this is not set anywhere.
    /// Example: --log-level info
    #[arg(long, value_name = "FILTER", value_parser = parse_log_level, verbatim_doc_comment)]
    pub log_level: Option<String>,

    /// Optional: most proxies exported (env SMP_AGENT_MAX_PROXIES; default 128).
    #[arg(long, value_name = "N", value_parser = parse_max_proxies)]
    pub max_proxies: Option<usize>,

    /// Optional: drop a proxy's series after it was not seen this long (env
    /// SMP_AGENT_FORGET_AFTER; default 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_forget_after)]
    pub forget_after: Option<Duration>,

    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => f.write_str(v),
            Origin::Flag(flag) => write!(f, "--{flag}"),
        }
    }
}

/// The configuration is invalid or unreadable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read, is not YAML, has an unknown key or a bad value (the message
    /// names the file, line and field).
    /// (Not a `#[source]`: the message already says everything, and `{:#}` would repeat it.)
    #[error("config file {0}")]
    File(SmpFileError),
    /// An environment variable has a bad value.
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    /// Values that are fine alone but not together.
    #[error("field `{field}` (from {origin}): {message}")]
    Invalid {
        field: &'static str,
        origin: Origin,
        message: String,
    },
}

impl ConfigError {
    /// The field, variable or flag the error is about.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::File(e) => e.field(),
            ConfigError::Env { var, .. } => Some(var),
            ConfigError::Invalid { field, .. } => Some(field),
        }
    }
}

/// The effective configuration of the daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    pub proxy_names: Vec<String>,
    pub exclude_names: Vec<String>,
    pub pids: Vec<u32>,
    pub interval: Duration,
    pub kube: KubeMode,
    pub node_name: Option<String>,
    /// Set when given anywhere; `None` leaves the global `-v`/`SMP_LOG` logging as it is.
    pub log_level: Option<String>,
    pub max_proxies: usize,
    pub forget_after: Duration,
    /// The file read, if any.
    pub config_file: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        let metrics = MetricsOptions::default();
        Self {
            listen: DEFAULT_LISTEN,
            proxy_names: DEFAULT_PROXY_NAMES.iter().map(|s| s.to_string()).collect(),
            exclude_names: DEFAULT_EXCLUDED_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            pids: Vec::new(),
            interval: DEFAULT_INTERVAL,
            kube: KubeMode::Auto,
            node_name: None,
            log_level: None,
            max_proxies: metrics.max_proxies,
            forget_after: metrics.forget_after,
            config_file: None,
        }
    }
}

/// Reads one environment variable through `parse`; unset or empty is `None`.
fn env_value<T>(
    env: &impl Fn(&str) -> Option<String>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    let var = format!("{ENV_PREFIX}{key}");
    match env(&var) {
        Some(v) if !v.trim().is_empty() => {
            parse(&v).map(Some).map_err(|message| ConfigError::Env {
                var,
                value: v,
                message,
            })
        }
        _ => Ok(None),
    }
}

fn env_list<T>(
    env: &impl Fn(&str) -> Option<String>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<Vec<T>>, ConfigError> {
    env_value(env, key, |s| {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(&parse)
            .collect()
    })
}

/// Picks the first value present among flag, env and file, remembering where it came from.
fn pick<T>(
    flag: Option<T>,
    flag_name: &'static str,
    env: Option<T>,
    env_key: &str,
    file: Option<T>,
    path: Option<&Path>,
) -> Option<(T, Origin)> {
    flag.map(|v| (v, Origin::Flag(flag_name)))
        .or_else(|| env.map(|v| (v, Origin::Env(format!("{ENV_PREFIX}{env_key}")))))
        .or_else(|| {
            file.map(|v| {
                (
                    v,
                    Origin::File(path.map(Path::to_path_buf).unwrap_or_default()),
                )
            })
        })
}

impl DaemonConfig {
    /// The configuration from `args`, the process environment and the file they name.
    pub fn load(args: &DaemonArgs) -> Result<Self, ConfigError> {
        Self::resolve(args, |k| std::env::var(k).ok())
    }

    /// The configuration from `args`, an environment given as a lookup function (tests) and
    /// the file named by `--config` or `SMP_AGENT_CONFIG`.
    pub fn resolve(
        args: &DaemonArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let config_file = args
            .config
            .clone()
            .or(env_value(&env, "CONFIG", |s| Ok(PathBuf::from(s.trim())))?);
        let file = match &config_file {
            Some(p) => FileConfig::read(p).map_err(ConfigError::File)?,
            None => FileConfig::default(),
        };
        let path = config_file.as_deref();
        let d = DaemonConfig::default();

        let listen = pick(
            args.listen,
            "listen",
            env_value(&env, "LISTEN", parse_listen)?,
            "LISTEN",
            file.listen,
            path,
        );
        let proxy_names = pick(
            args.proxy_names.clone(),
            "proxy-name",
            env_list(&env, "PROXY_NAMES", parse_name)?,
            "PROXY_NAMES",
            file.proxy_names,
            path,
        );
        let exclude_names = pick(
            args.exclude_names.clone(),
            "exclude-name",
            env_list(&env, "EXCLUDE_NAMES", parse_name)?,
            "EXCLUDE_NAMES",
            file.exclude_names,
            path,
        );
        let pids = pick(
            args.pids.clone(),
            "pid",
            env_list(&env, "PIDS", parse_pid)?,
            "PIDS",
            file.pids,
            path,
        );
        let interval = pick(
            args.interval,
            "interval",
            env_value(&env, "INTERVAL", parse_interval)?,
            "INTERVAL",
            file.interval,
            path,
        );
        let kube = pick(
            args.kube,
            "kube",
            env_value(&env, "KUBE", KubeMode::parse)?,
            "KUBE",
            file.kube,
            path,
        );
        let node_name = pick(
            args.node_name.clone(),
            "node-name",
            env_value(&env, "NODE_NAME", |s| Ok(s.trim().to_string()))?,
            "NODE_NAME",
            file.node_name.filter(|n| !n.trim().is_empty()),
            path,
        );
        let log_level = pick(
            args.log_level.clone(),
            "log-level",
            env_value(&env, "LOG_LEVEL", parse_log_level)?,
            "LOG_LEVEL",
            file.log_level,
            path,
        );
        let max_proxies = pick(
            args.max_proxies,
            "max-proxies",
            env_value(&env, "MAX_PROXIES", parse_max_proxies)?,
            "MAX_PROXIES",
            file.max_proxies,
            path,
        );
        let forget_after = pick(
            args.forget_after,
            "forget-after",
            env_value(&env, "FORGET_AFTER", parse_forget_after)?,
            "FORGET_AFTER",
            file.forget_after,
            path,
        );

        let (interval, interval_origin) = interval.unwrap_or((d.interval, Origin::Default));
        let (forget_after, forget_origin) =
            forget_after.unwrap_or((d.forget_after, Origin::Default));
        let (proxy_names, names_origin) =
            proxy_names.unwrap_or((d.proxy_names.clone(), Origin::Default));
        let pids = pids.map(|(v, _)| v).unwrap_or_default();
        let config = DaemonConfig {
            listen: listen.map_or(d.listen, |(v, _)| v),
            proxy_names,
            exclude_names: exclude_names.map_or(d.exclude_names, |(v, _)| v),
            pids,
            interval,
            kube: kube.map_or(d.kube, |(v, _)| v),
            node_name: node_name.map(|(v, _)| v),
            log_level: log_level.map(|(v, _)| v),
            max_proxies: max_proxies.map_or(d.max_proxies, |(v, _)| v),
            forget_after,
            config_file,
        };
        if config.proxy_names.is_empty() && config.pids.is_empty() {
            return Err(ConfigError::Invalid {
                field: "proxy_names",
                origin: names_origin,
                message: "empty and no pids given: nothing to follow".into(),
            });
        }
        if config.forget_after < config.interval {
            let origin = if forget_origin == Origin::Default {
                interval_origin
            } else {
                forget_origin
            };
            return Err(ConfigError::Invalid {
                field: "forget_after",
                origin,
                message: format!(
                    "{} is shorter than the interval ({}): every proxy would be forgotten between snapshots",
                    duration::format(config.forget_after),
                    duration::format(config.interval)
                ),
            });
        }
        Ok(config)
    }

    /// Which processes discovery follows.
    pub fn discovery(&self) -> DiscoveryConfig {
        DiscoveryConfig {
            names: self.proxy_names.clone(),
            exclude: self.exclude_names.clone(),
            pids: self.pids.clone(),
            ..DiscoveryConfig::default()
        }
    }

    /// Limits of the exported metrics.
    pub fn metrics_options(&self) -> MetricsOptions {
        MetricsOptions {
            max_proxies: self.max_proxies,
            forget_after: self.forget_after,
        }
    }

    /// The effective configuration in the file format (what `--print-config` prints; it
    /// parses back to the same configuration).
    pub fn to_file_config(&self) -> FileConfig {
        FileConfig {
            listen: Some(self.listen),
            proxy_names: Some(self.proxy_names.clone()),
            exclude_names: Some(self.exclude_names.clone()),
            pids: Some(self.pids.clone()),
            interval: Some(self.interval),
            kube: Some(self.kube),
            node_name: self.node_name.clone(),
            log_level: self.log_level.clone(),
            max_proxies: Some(self.max_proxies),
            forget_after: Some(self.forget_after),
        }
    }

    /// [`DaemonConfig::to_file_config`] as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(&self.to_file_config()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
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
            let dir =
                std::env::temp_dir().join(format!("smp-daemon-config-{}", std::process::id()));
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
        let e = DaemonConfig::resolve(&args(&["--config", dir.to_str().unwrap()]), env(&[]))
            .unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        let f = TempFile::new("notyaml.yaml", "listen: [unclosed\n");
        let e = DaemonConfig::resolve(&args(&["--config", &f.arg()]), env(&[])).unwrap_err();
        assert!(e.to_string().contains("notyaml.yaml:"), "{e}");
    }

    #[test]
    fn env_and_flag_errors_name_the_variable_or_flag() {
        let e =
            DaemonConfig::resolve(&args(&[]), env(&[("SMP_AGENT_INTERVAL", "0s")])).unwrap_err();
        assert_eq!(e.field(), Some("SMP_AGENT_INTERVAL"));
        assert!(
            e.to_string()
                .starts_with("environment variable SMP_AGENT_INTERVAL=\"0s\""),
            "{e}"
        );
        let e =
            DaemonConfig::resolve(&args(&[]), env(&[("SMP_AGENT_LISTEN", "nope")])).unwrap_err();
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
        let c =
            DaemonConfig::resolve(&args(&["--config", &f.arg(), "--pid", "3"]), env(&[])).unwrap();
        assert!(c.proxy_names.is_empty());
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
}
