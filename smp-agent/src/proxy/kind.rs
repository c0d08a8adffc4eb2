//! The one place that knows proxy kinds: their names, how discovery recognises them (by the
//! executable's basename or the comm, and which invocations of the binary are control or
//! check runs, not proxies), and how they are shown. Read by discovery, the reports and the
//! lab (`lab::config::ProxyKind`, the kinds the lab can launch, maps onto these).

use std::fmt;

use serde::Serialize;

/// What is known about one proxy kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownKind {
    /// Lower-case name: the executable's basename or comm discovery matches, and the label in
    /// reports and metrics.
    pub name: &'static str,
    /// Arguments that make a run of the binary a control or check run (`envoy --version`,
    /// `haproxy -c`), not a proxy. Any one of them is enough.
    pub control_args: &'static [&'static str],
    /// Discovered by default (`DiscoveryConfig::names`).
    pub default: bool,
}

/// Every proxy kind the agent knows, in the order of the default names.
pub const KNOWN: &[KnownKind] = &[
    KnownKind {
        name: "envoy",
        control_args: &["--version", "--help", "-h", "validate", "--mode=validate"],
        default: true,
    },
    KnownKind {
        name: "linkerd2-proxy",
        control_args: &["--version", "--help", "-h"],
        default: true,
    },
    KnownKind {
        name: "haproxy",
        control_args: &["-c", "-v", "-vv"],
        default: true,
    },
    KnownKind {
        name: "nginx",
        // nginx's process titles ("nginx: master process …") are never control runs; see
        // `discovery`.
        control_args: &["-t", "-T", "-s", "-v", "-V", "-h", "-?"],
        default: true,
    },
    KnownKind {
        name: "traefik",
        control_args: &["version", "healthcheck", "--help", "-h"],
        default: true,
    },
    KnownKind {
        name: "ztunnel",
        control_args: &["version", "help"],
        default: true,
    },
];

/// Default proxy names discovery looks for: every [`KNOWN`] kind marked `default`.
pub const DEFAULT_PROXY_NAMES: &[&str] = &[
    "envoy",
    "linkerd2-proxy",
    "haproxy",
    "nginx",
    "traefik",
    "ztunnel",
];

/// Kind of proxy. Known kinds get a variant; any other configured name is `Other(name)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyKind {
    Envoy,
    Linkerd2Proxy,
    Haproxy,
    Nginx,
    Traefik,
    Ztunnel,
    Other(String),
}

impl ProxyKind {
    /// The kind for a configured name (`"envoy"` → `Envoy`, `"foo"` → `Other("foo")`).
    pub fn from_name(name: &str) -> Self {
        match name {
            "envoy" => Self::Envoy,
            "linkerd2-proxy" => Self::Linkerd2Proxy,
            "haproxy" => Self::Haproxy,
            "nginx" => Self::Nginx,
            "traefik" => Self::Traefik,
            "ztunnel" => Self::Ztunnel,
            other => Self::Other(other.to_string()),
        }
    }

    /// Lower-case name, as used in labels.
    pub fn name(&self) -> &str {
        match self {
            Self::Envoy => "envoy",
            Self::Linkerd2Proxy => "linkerd2-proxy",
            Self::Haproxy => "haproxy",
            Self::Nginx => "nginx",
            Self::Traefik => "traefik",
            Self::Ztunnel => "ztunnel",
            Self::Other(n) => n,
        }
    }

    /// What the agent knows about this kind (`None` for `Other`).
    pub fn known(&self) -> Option<&'static KnownKind> {
        KNOWN.iter().find(|k| k.name == self.name())
    }
}

impl fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_the_enum_and_the_defaults_agree() {
        for k in KNOWN {
            let kind = ProxyKind::from_name(k.name);
            assert!(
                !matches!(kind, ProxyKind::Other(_)),
                "{} has no variant",
                k.name
            );
            assert_eq!(kind.name(), k.name);
            assert_eq!(kind.known(), Some(k));
        }
        let defaults: Vec<&str> = KNOWN.iter().filter(|k| k.default).map(|k| k.name).collect();
        assert_eq!(DEFAULT_PROXY_NAMES, defaults.as_slice());
        assert_eq!(ProxyKind::from_name("myproxy").known(), None);
    }
}
