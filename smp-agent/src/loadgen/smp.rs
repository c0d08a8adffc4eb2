//! The load part of an SMP test configuration (`test.clients[0]`) as a [`LoadSpec`].
//!
//! Files are read by [`crate::report::file::read_test_config`] (exact SMP field names,
//! mesheryctl `{test, mesh}` files); this module only maps the typed client onto a spec.

use crate::report::smp::{PerformanceTestConfig, Protocol as SmpProtocol};

use super::{LoadError, LoadSpec, Protocol, Rate};

impl LoadSpec {
    /// The spec for `test.clients[0]`: `connections`, `rps` (0 = as fast as possible),
    /// `endpoint_urls` (round-robin), `headers`, `cookies`, `body`, `content_type`,
    /// `protocol` (`PROTOCOL_HTTP`: HTTP/1.1, `PROTOCOL_GRPC`: unary gRPC over HTTP/2, the URL
    /// path naming the method) and `ssl_certificate` (a PEM file path or PEM text), plus
    /// `test.duration`. Other clients are ignored, as Meshery does; fields left unset keep the
    /// defaults of [`LoadSpec::new`].
    pub fn from_smp(test: &PerformanceTestConfig) -> Result<LoadSpec, LoadError> {
        let client = test
            .clients
            .first()
            .ok_or_else(|| LoadError::Unsupported("the test config has no clients".into()))?;
        let mut spec = LoadSpec::new(client.endpoint_urls.clone());
        spec.protocol = match client.protocol {
            SmpProtocol::Http => Protocol::Http1,
            SmpProtocol::Grpc => Protocol::Grpc,
            other => {
                return Err(LoadError::Unsupported(format!(
                    "client protocol {other:?}: only PROTOCOL_HTTP (1) and PROTOCOL_GRPC (4) are supported"
                )))
            }
        };
        if client.connections < 0 {
            return Err(LoadError::NoConnections);
        }
        if client.connections > 0 {
            spec.connections = u32::try_from(client.connections).unwrap_or(u32::MAX);
        }
        spec.rate = match client.rps {
            0 => Rate::Max,
            r if r > 0 => Rate::Fixed(r as f64),
            r => return Err(LoadError::InvalidRate(r.to_string())),
        };
        if let Some(d) = &test.duration {
            spec.duration = d.get();
        }
        spec.headers = client
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        spec.cookies = client
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        spec.body = client.body.clone().into_bytes();
        if !client.content_type.is_empty() {
            spec.content_type = Some(client.content_type.clone());
        }
        let cert = client.ssl_certificate.trim();
        if cert.starts_with("-----BEGIN") {
            spec.ca_pem = Some(cert.to_string());
        } else if !cert.is_empty() {
            spec.ca_file = Some(cert.into());
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::*;
    use crate::report::file::parse_test_config;

    #[test]
    fn shared_sample_maps_onto_a_spec() {
        let text = include_str!("../../../tests/fixtures/smp/load-test.yaml");
        let cfg = parse_test_config(text, Path::new("load-test.yaml")).unwrap();
        let spec = LoadSpec::from_smp(&cfg.test).unwrap();
        assert_eq!(spec.urls, ["https://smp-spec.io"]);
        assert_eq!(spec.connections, 2);
        assert_eq!(spec.rate, Rate::Fixed(10.0));
        assert_eq!(spec.duration, Duration::from_secs(60));
        assert!(spec.headers.is_empty() && spec.cookies.is_empty() && spec.body.is_empty());
        assert_eq!(spec.content_type, None);
    }

    #[test]
    fn every_client_field() {
        let text = r#"
test:
  name: t
  clients:
    - protocol: 1
      connections: 3
      rps: 0
      headers: {x-a: "1"}
      cookies: {session: abc}
      body: '{"k":1}'
      content_type: application/json
      endpoint_urls: ['http://127.0.0.1:9/a', 'http://127.0.0.1:9/b']
  duration: 1m30s
mesh:
  type: 3
"#;
        let cfg = parse_test_config(text, Path::new("t.yaml")).unwrap();
        let spec = LoadSpec::from_smp(&cfg.test).unwrap();
        assert_eq!(spec.rate, Rate::Max);
        assert_eq!(spec.connections, 3);
        assert_eq!(spec.duration, Duration::from_secs(90));
        assert_eq!(spec.headers, [("x-a".to_string(), "1".to_string())]);
        assert_eq!(spec.cookies, ["session=abc"]);
        assert_eq!(spec.body, br#"{"k":1}"#);
        assert_eq!(spec.content_type.as_deref(), Some("application/json"));
        assert_eq!(spec.urls.len(), 2);
        spec.validate().unwrap();
    }

    #[test]
    fn unsupported_protocol_and_negative_rps() {
        let base = |extra: &str| {
            format!(
                "test:\n  clients:\n    - endpoint_urls: ['http://127.0.0.1/']\n{extra}mesh:\n  type: 3\n"
            )
        };
        let cfg = parse_test_config(&base("      protocol: 2\n"), Path::new("t.yaml")).unwrap();
        let e = LoadSpec::from_smp(&cfg.test).unwrap_err().to_string();
        assert!(e.contains("only PROTOCOL_HTTP"), "{e}");
        let cfg = parse_test_config(&base("      protocol: grpc\n"), Path::new("t.yaml")).unwrap();
        assert_eq!(
            LoadSpec::from_smp(&cfg.test).unwrap().protocol,
            Protocol::Grpc
        );
        let cfg = parse_test_config(
            &base("      protocol: 1\n      rps: -5\n"),
            Path::new("t.yaml"),
        )
        .unwrap();
        let e = LoadSpec::from_smp(&cfg.test).unwrap_err().to_string();
        assert!(e.contains("invalid rate"), "{e}");
    }
}
