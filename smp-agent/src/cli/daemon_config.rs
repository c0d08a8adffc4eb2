//! Configuration of `smp-agent daemon`: a YAML file, `SMP_AGENT_*` environment variables and
//! flags, merged field by field with **flags > env > file > defaults**.
//!
//! Every value goes through the same parser wherever it comes from, and an error names where it
//! came from: `config.yaml:4:9: field `interval`: …` for the file (unknown keys are errors
//! too), `SMP_AGENT_INTERVAL="0s": …` for the environment, clap's `--interval` message for
//! flags. The file format is documented in docs/deploy.md; the default file is
//! deploy/kubernetes/configmap.yaml.
//!
//! Longer than our usual file: the settings table is the one definition of every setting
//! (flag, variable, file key, default, doc) and its resolution rules sit beside it.

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
mod tests;
