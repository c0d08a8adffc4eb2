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
    metrics::{
        server::{ServerOptions, TlsFiles},
        MetricsOptions,
    },
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

fn parse_exe(s: &str) -> Result<PathBuf, String> {
    let s = s.trim();
    if !s.starts_with('/') || s.ends_with('/') {
        return Err(format!(
            "invalid executable path {s:?}: an absolute file path, e.g. /usr/local/bin/envoy"
        ));
    }
    Ok(PathBuf::from(s))
}

fn parse_cgroup(s: &str) -> Result<String, String> {
    let s = s.trim();
    if !s.starts_with('/') || s.contains(char::is_whitespace) {
        return Err(format!(
            "invalid cgroup path {s:?}: a cgroup v2 path prefix, e.g. /kubepods.slice"
        ));
    }
    Ok(s.to_string())
}

fn parse_file(s: &str) -> Result<PathBuf, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(s))
}

fn parse_node_name(s: &str) -> Result<String, String> {
    Ok(s.trim().to_string())
}

/// A comma-separated list, each part through `parse` (empty parts are skipped).
fn list<T>(parse: fn(&str) -> Result<T, String>) -> impl Fn(&str) -> Result<Vec<T>, String> {
    move |s| {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(parse)
            .collect()
    }
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
    adapter!(file, std::path::PathBuf, super::parse_file);

    /// A blank node name is no node name.
    pub fn node_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.filter(|n| !n.trim().is_empty()))
    }

    pub fn exes<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<std::path::PathBuf>>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| super::parse_exe(s))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(D::Error::custom)
    }

    pub fn cgroups<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| super::parse_cgroup(s))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(D::Error::custom)
    }

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

/// Declares every setting once (field and file key, flag, environment variable, default, doc)
/// and generates from that list: the flags ([`DaemonArgs`]), the file ([`FileConfig`]), the
/// effective configuration ([`DaemonConfig`]) with its defaults, where each value came from
/// ([`Origins`]), the merge (flag > env > file > default) and the [`SETTINGS`] table.
///
/// Per setting: `field: Given => Effective`, where `Given` is what a flag, variable or file key
/// yields and `Effective` the field of [`DaemonConfig`] (`Option<Given>` for settings without a
/// default); `flag_parse` parses one flag value (one item of a list), `env_parse` a whole
/// variable; `clap` and `serde` add attributes (list delimiters, file adapters).
macro_rules! daemon_settings {
    ($(
        $field:ident: $ty:ty => $cty:ty {
            doc: $doc:literal,
            flag: $flag:literal,
            env: $env:literal,
            value_name: $vn:literal,
            flag_parse: $fp:expr,
            env_parse: $ep:expr,
            default: $default:expr,
            default_doc: $dd:literal,
            $(clap: [$($clap:tt)*],)?
            $(serde: [$($serde:tt)*],)?
        }
    )*) => {
        /// Flags of `smp-agent daemon`. Every flag also has an environment variable and a file
        /// key; a flag wins over the variable, the variable over the file.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct DaemonArgs {
            /// Optional: YAML configuration file (env SMP_AGENT_CONFIG).
            /// Example: --config /etc/smp-agent/config.yaml
            #[arg(long, value_name = "FILE", verbatim_doc_comment)]
            pub config: Option<PathBuf>,
            $(
                #[doc = $doc]
                #[arg(
                    long = $flag,
                    value_name = $vn,
                    value_parser = $fp,
                    help = concat!("Optional: ", $doc, " (env SMP_AGENT_", $env, ", file key ", stringify!($field), "; default ", $dd, ")")
                    $(, $($clap)*)?
                )]
                pub $field: Option<$ty>,
            )*
            /// Print the effective configuration as YAML and exit.
            #[arg(long)]
            pub print_config: bool,
        }

        /// The YAML file. Every key is optional; unknown keys are errors.
        #[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            $(
                #[doc = $doc]
                #[serde(default, skip_serializing_if = "Option::is_none" $(, $($serde)*)?)]
                pub $field: Option<$ty>,
            )*
        }

        /// The effective configuration of the daemon.
        #[derive(Debug, Clone, PartialEq)]
        pub struct DaemonConfig {
            $(
                #[doc = $doc]
                pub $field: $cty,
            )*
            /// The file read, if any.
            pub config_file: Option<PathBuf>,
        }

        impl Default for DaemonConfig {
            fn default() -> Self {
                Self {
                    $($field: $default,)*
                    config_file: None,
                }
            }
        }

        /// Where each value of a [`DaemonConfig`] came from.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Origins {
            $(pub $field: Origin,)*
        }

        /// Every setting, for documentation and checks.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                key: stringify!($field),
                flag: $flag,
                env: concat!("SMP_AGENT_", $env),
                default: $dd,
                doc: $doc,
            },
        )*];

        /// Flag > env > file > default, for every setting.
        fn merge(
            args: &DaemonArgs,
            env: &impl Fn(&str) -> Option<String>,
            file: FileConfig,
            path: Option<&Path>,
            config_file: Option<PathBuf>,
        ) -> Result<(DaemonConfig, Origins), ConfigError> {
            $(
                let $field: ($cty, Origin) = match pick(
                    args.$field.clone(),
                    $flag,
                    env_value(env, $env, $ep)?,
                    $env,
                    file.$field,
                    path,
                ) {
                    Some((v, origin)) => (v.into(), origin),
                    None => ($default, Origin::Default),
                };
            )*
            Ok((
                DaemonConfig {
                    $($field: $field.0,)*
                    config_file,
                },
                Origins {
                    $($field: $field.1,)*
                },
            ))
        }

        impl DaemonConfig {
            /// The effective configuration in the file format (what `--print-config` prints;
            /// it parses back to the same configuration).
            pub fn to_file_config(&self) -> FileConfig {
                FileConfig {
                    $($field: self.$field.clone().into(),)*
                }
            }
        }
    };
}

/// One setting of the daemon, as [`SETTINGS`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Key in the YAML file.
    pub key: &'static str,
    /// Flag, without `--`.
    pub flag: &'static str,
    /// Environment variable.
    pub env: &'static str,
    /// The default, as text.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

daemon_settings! {
    listen: SocketAddr => SocketAddr {
        doc: "where to serve /metrics, /healthz and /readyz, IP:PORT",
        flag: "listen",
        env: "LISTEN",
        value_name: "IP:PORT",
        flag_parse: parse_listen,
        env_parse: parse_listen,
        default: DEFAULT_LISTEN,
        default_doc: "127.0.0.1:9477",
        serde: [deserialize_with = "de::listen"],
    }
    proxy_names: Vec<String> => Vec<String> {
        doc: "proxy executable/comm names to follow, repeatable or comma-separated (comm can be set by any process: prefer proxy_exes or cgroups where you can)",
        flag: "proxy-name",
        env: "PROXY_NAMES",
        value_name: "NAME",
        flag_parse: parse_name,
        env_parse: list(parse_name),
        default: DEFAULT_PROXY_NAMES.iter().map(|s| s.to_string()).collect(),
        default_doc: "envoy,linkerd2-proxy,haproxy,nginx; none when proxy_exes or cgroups are given",
        clap: [value_delimiter = ','],
        serde: [deserialize_with = "de::names"],
    }
    proxy_exes: Vec<PathBuf> => Vec<PathBuf> {
        doc: "absolute executable paths to follow (the process's /proc/PID/exe), repeatable or comma-separated",
        flag: "proxy-exe",
        env: "PROXY_EXES",
        value_name: "PATH",
        flag_parse: parse_exe,
        env_parse: list(parse_exe),
        default: Vec::new(),
        default_doc: "none",
        clap: [value_delimiter = ','],
        serde: [deserialize_with = "de::exes"],
    }
    cgroups: Vec<String> => Vec<String> {
        doc: "cgroup path prefixes: every process under them is followed, repeatable or comma-separated",
        flag: "cgroup",
        env: "CGROUPS",
        value_name: "PATH",
        flag_parse: parse_cgroup,
        env_parse: list(parse_cgroup),
        default: Vec::new(),
        default_doc: "none",
        clap: [value_delimiter = ','],
        serde: [deserialize_with = "de::cgroups"],
    }
    exclude_names: Vec<String> => Vec<String> {
        doc: "names never followed",
        flag: "exclude-name",
        env: "EXCLUDE_NAMES",
        value_name: "NAME",
        flag_parse: parse_name,
        env_parse: list(parse_name),
        default: DEFAULT_EXCLUDED_NAMES.iter().map(|s| s.to_string()).collect(),
        default_doc: "pilot-agent",
        clap: [value_delimiter = ','],
        serde: [deserialize_with = "de::names"],
    }
    pids: Vec<u32> => Vec<u32> {
        doc: "extra processes to follow whatever their name",
        flag: "pid",
        env: "PIDS",
        value_name: "PID",
        flag_parse: parse_pid,
        env_parse: list(parse_pid),
        default: Vec::new(),
        default_doc: "none",
        clap: [value_delimiter = ','],
        serde: [deserialize_with = "de::pids"],
    }
    interval: Duration => Duration {
        doc: "snapshot period, at least 100ms",
        flag: "interval",
        env: "INTERVAL",
        value_name: "DURATION",
        flag_parse: parse_interval,
        env_parse: parse_interval,
        default: DEFAULT_INTERVAL,
        default_doc: "1s",
        serde: [deserialize_with = "de::interval", serialize_with = "ser_duration"],
    }
    kube: KubeMode => KubeMode {
        doc: "Kubernetes pod enrichment: auto (when in a cluster), on, off",
        flag: "kube",
        env: "KUBE",
        value_name: "MODE",
        flag_parse: KubeMode::parse,
        env_parse: KubeMode::parse,
        default: KubeMode::Auto,
        default_doc: "auto",
    }
    node_name: String => Option<String> {
        doc: "this node's name; pods are listed for it only (the DaemonSet sets it from the downward API)",
        flag: "node-name",
        env: "NODE_NAME",
        value_name: "NAME",
        flag_parse: parse_node_name,
        env_parse: parse_node_name,
        default: None,
        default_doc: "none",
        serde: [deserialize_with = "de::node_name"],
    }
    log_level: String => Option<String> {
        doc: "log filter, tracing env-filter syntax; SMP_LOG and -v apply when it is not set anywhere",
        flag: "log-level",
        env: "LOG_LEVEL",
        value_name: "FILTER",
        flag_parse: parse_log_level,
        env_parse: parse_log_level,
        default: None,
        default_doc: "warn,smp_agent=info",
        serde: [deserialize_with = "de::log_level"],
    }
    max_proxies: usize => usize {
        doc: "most proxies exported (the others are counted in smp_proxies_over_limit)",
        flag: "max-proxies",
        env: "MAX_PROXIES",
        value_name: "N",
        flag_parse: parse_max_proxies,
        env_parse: parse_max_proxies,
        default: MetricsOptions::default().max_proxies,
        default_doc: "128",
        serde: [deserialize_with = "de::max_proxies"],
    }
    forget_after: Duration => Duration {
        doc: "drop a proxy's series after it was not seen this long",
        flag: "forget-after",
        env: "FORGET_AFTER",
        value_name: "DURATION",
        flag_parse: parse_forget_after,
        env_parse: parse_forget_after,
        default: MetricsOptions::default().forget_after,
        default_doc: "10m",
        serde: [deserialize_with = "de::forget_after", serialize_with = "ser_duration"],
    }
    metrics_tls_cert: PathBuf => Option<PathBuf> {
        doc: "serve HTTPS with this PEM certificate chain (with metrics_tls_key)",
        flag: "metrics-tls-cert",
        env: "METRICS_TLS_CERT",
        value_name: "FILE",
        flag_parse: parse_file,
        env_parse: parse_file,
        default: None,
        default_doc: "none: plain HTTP",
        serde: [deserialize_with = "de::file"],
    }
    metrics_tls_key: PathBuf => Option<PathBuf> {
        doc: "the PEM private key of metrics_tls_cert",
        flag: "metrics-tls-key",
        env: "METRICS_TLS_KEY",
        value_name: "FILE",
        flag_parse: parse_file,
        env_parse: parse_file,
        default: None,
        default_doc: "none",
        serde: [deserialize_with = "de::file"],
    }
    metrics_token_file: PathBuf => Option<PathBuf> {
        doc: "require Authorization: Bearer with the token in this file on /metrics (/healthz and /readyz stay open)",
        flag: "metrics-token-file",
        env: "METRICS_TOKEN_FILE",
        value_name: "FILE",
        flag_parse: parse_file,
        env_parse: parse_file,
        default: None,
        default_doc: "none: no authentication",
        serde: [deserialize_with = "de::file"],
    }
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
        // The one place the daemon reads YAML.
        let file = match &config_file {
            Some(p) => FileConfig::read(p).map_err(ConfigError::File)?,
            None => FileConfig::default(),
        };
        let path = config_file.as_deref();
        let (mut config, origins) = merge(args, &env, file, path, config_file.clone())?;
        // Stronger selectors given and names left at their default: names (which any process
        // can take as its comm) are not used.
        let strong = !(config.proxy_exes.is_empty() && config.cgroups.is_empty());
        if strong && origins.proxy_names == Origin::Default {
            config.proxy_names.clear();
        }
        if config.proxy_names.is_empty()
            && config.pids.is_empty()
            && config.proxy_exes.is_empty()
            && config.cgroups.is_empty()
        {
            return Err(ConfigError::Invalid {
                field: "proxy_names",
                origin: origins.proxy_names,
                message: "empty and no pids, proxy_exes or cgroups given: nothing to follow".into(),
            });
        }
        if config.forget_after < config.interval {
            let origin = if origins.forget_after == Origin::Default {
                origins.interval
            } else {
                origins.forget_after
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
        match (&config.metrics_tls_cert, &config.metrics_tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    field: "metrics_tls_key",
                    origin: origins.metrics_tls_cert,
                    message: "metrics_tls_cert is set but metrics_tls_key is not".into(),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    field: "metrics_tls_cert",
                    origin: origins.metrics_tls_key,
                    message: "metrics_tls_key is set but metrics_tls_cert is not".into(),
                })
            }
            _ => {}
        }
        Ok(config)
    }

    /// Which processes discovery follows.
    pub fn discovery(&self) -> DiscoveryConfig {
        DiscoveryConfig {
            names: self.proxy_names.clone(),
            exclude: self.exclude_names.clone(),
            pids: self.pids.clone(),
            cgroups: self.cgroups.clone(),
            exe_paths: self.proxy_exes.clone(),
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

    /// TLS and authentication of the metrics server.
    pub fn server_options(&self) -> ServerOptions {
        ServerOptions {
            tls: match (&self.metrics_tls_cert, &self.metrics_tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            token_file: self.metrics_token_file.clone(),
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
        let e = DaemonConfig::resolve(&args(&[]), env(&[("SMP_AGENT_CGROUPS", "kubepods")]))
            .unwrap_err();
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
        let docs = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy.md"),
        )
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
}
