//! Optional enrichment: pod UID → namespace/name from the Kubernetes API server, with the
//! in-cluster service-account credentials. No Kubernetes client crate: one `GET` of the pods on
//! this node over rustls (already a dependency), parsed with serde_json.
//!
//! Without an API server (not in a cluster, no RBAC to list pods, network policy) callers keep
//! reporting the pod UID from the cgroup path; every failure here is a typed error, never a
//! panic. The DaemonSet needs `get/list` on `pods` and `NODE_NAME` from the downward API.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use rustls::pki_types::{pem::PemObject as _, CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Where the in-cluster service-account files live.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Largest response accepted (a pod list of one node is far smaller).
const MAX_RESPONSE: usize = 64 << 20;

/// A pod's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

/// Talking to the API server failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid API server address {host:?}")]
    BadHost { host: String },
    #[error("no usable CA certificate in {what}")]
    BadCa { what: String },
    #[error("cannot connect to the API server at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("API server request timed out after {seconds} s")]
    Timeout { seconds: u64 },
    #[error("API server answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("malformed API server response: {reason}")]
    Malformed { reason: String },
}

/// A minimal API server client (list pods only).
#[derive(Clone)]
pub struct KubeClient {
    host: String,
    port: u16,
    token: TokenSource,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

#[derive(Clone)]
enum TokenSource {
    /// Re-read on every request: bound service-account tokens rotate.
    File(PathBuf),
    Fixed(String),
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl KubeClient {
    /// The in-cluster client, or `Ok(None)` when not running in a pod
    /// (`KUBERNETES_SERVICE_HOST` unset).
    pub fn in_cluster() -> Result<Option<Self>, KubeError> {
        let Ok(host) = std::env::var("KUBERNETES_SERVICE_HOST") else {
            return Ok(None);
        };
        let port = std::env::var("KUBERNETES_SERVICE_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(443);
        let dir = PathBuf::from(SERVICE_ACCOUNT_DIR);
        let ca_path = dir.join("ca.crt");
        let ca = std::fs::read(&ca_path).map_err(|source| KubeError::ReadFile {
            path: ca_path.clone(),
            source,
        })?;
        let mut c = Self::new(&host, port, String::new(), &ca)?;
        c.token = TokenSource::File(dir.join("token"));
        Ok(Some(c))
    }

    /// A client for `https://host:port` trusting the PEM CA bundle `ca_pem`.
    pub fn new(host: &str, port: u16, token: String, ca_pem: &[u8]) -> Result<Self, KubeError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|_| KubeError::BadCa {
                what: "the CA bundle".into(),
            })?;
            roots.add(cert).map_err(|_| KubeError::BadCa {
                what: "the CA bundle".into(),
            })?;
        }
        if roots.is_empty() {
            return Err(KubeError::BadCa {
                what: "the CA bundle".into(),
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|_| KubeError::BadCa {
                what: "the TLS configuration".into(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Validate the host now rather than at the first request.
        ServerName::try_from(host.to_string()).map_err(|_| KubeError::BadHost {
            host: host.to_string(),
        })?;
        Ok(Self {
            host: host.to_string(),
            port,
            token: TokenSource::Fixed(token),
            tls: Arc::new(tls),
            timeout: Duration::from_secs(10),
        })
    }

    /// Pods on `node` (all pods when `None`), by UID.
    pub async fn pods(&self, node: Option<&str>) -> Result<HashMap<String, PodRef>, KubeError> {
        let path = match node {
            Some(n) => format!(
                "/api/v1/pods?fieldSelector=spec.nodeName%3D{}",
                url_escape(n)
            ),
            None => "/api/v1/pods".to_string(),
        };
        let body = self.get(&path).await?;
        parse_pod_list(&body)
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, KubeError> {
        let seconds = self.timeout.as_secs();
        tokio::time::timeout(self.timeout, self.get_inner(path))
            .await
            .map_err(|_| KubeError::Timeout { seconds })?
    }

    async fn get_inner(&self, path: &str) -> Result<Vec<u8>, KubeError> {
        let token = match &self.token {
            TokenSource::Fixed(t) => t.clone(),
            TokenSource::File(p) => std::fs::read_to_string(p)
                .map_err(|source| KubeError::ReadFile {
                    path: p.clone(),
                    source,
                })?
                .trim()
                .to_string(),
        };
        let addr = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let connect_err = |source| KubeError::Connect {
            addr: addr.clone(),
            source,
        };
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(connect_err)?;
        let name = ServerName::try_from(self.host.clone()).map_err(|_| KubeError::BadHost {
            host: self.host.clone(),
        })?;
        let mut tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(connect_err)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Accept: application/json\r\nUser-Agent: smp-agent\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(req.as_bytes()).await.map_err(connect_err)?;
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if raw.len() > MAX_RESPONSE {
                        return Err(KubeError::Malformed {
                            reason: format!("response larger than {MAX_RESPONSE} bytes"),
                        });
                    }
                }
                // Peers that close without close_notify: what we have is the response.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
                Err(e) => return Err(connect_err(e)),
            }
        }
        parse_http_response(&raw)
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Status check, headers and body (chunked or not) of a complete HTTP/1.1 response.
pub fn parse_http_response(raw: &[u8]) -> Result<Vec<u8>, KubeError> {
    let malformed = |reason: &str| KubeError::Malformed {
        reason: reason.to_string(),
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(malformed("truncated headers")),
        Err(e) => return Err(malformed(&format!("bad headers: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let chunked = resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let body = &raw[head_len..];
    let body = if chunked {
        decode_chunked(body)?
    } else {
        body.to_vec()
    };
    if status != 200 {
        // Kubernetes returns a Status object with a message.
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        return Err(KubeError::Status { status, message });
    }
    Ok(body)
}

/// Decodes a `Transfer-Encoding: chunked` body. Sizes are checked before any arithmetic: a
/// chunk larger than what is left of the body, or a body decoding to more than
/// [`MAX_RESPONSE`] bytes, is an error (a hostile or broken peer cannot make it overflow,
/// panic or allocate without bound).
pub fn decode_chunked(mut body: &[u8]) -> Result<Vec<u8>, KubeError> {
    let bad = |reason: &str| KubeError::Malformed {
        reason: format!("chunked body: {reason}"),
    };
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("missing chunk size line"))?;
        let size_text = std::str::from_utf8(&body[..line_end]).map_err(|_| bad("size not text"))?;
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("size not hex"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if size > MAX_RESPONSE || out.len() + size > MAX_RESPONSE {
            return Err(bad(&format!("larger than {MAX_RESPONSE} bytes")));
        }
        // `size <= MAX_RESPONSE`, so `size + 2` cannot overflow; still say so in the types.
        let end = size.checked_add(2).ok_or_else(|| bad("chunk size"))?;
        match body.get(size..end) {
            Some(b"\r\n") => {}
            _ => return Err(bad("truncated chunk")),
        }
        out.extend_from_slice(&body[..size]);
        body = &body[end..];
    }
}

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<PodItem>,
}

#[derive(Deserialize)]
struct PodItem {
    metadata: PodMeta,
}

#[derive(Deserialize)]
struct PodMeta {
    uid: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
}

/// UID → pod name from a `PodList` JSON document. Items without a uid are skipped.
pub fn parse_pod_list(body: &[u8]) -> Result<HashMap<String, PodRef>, KubeError> {
    let list: PodList = serde_json::from_slice(body).map_err(|e| KubeError::Malformed {
        reason: format!("pod list: {e}"),
    })?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|p| {
            Some((
                p.metadata.uid?.to_ascii_lowercase(),
                PodRef {
                    namespace: p.metadata.namespace.unwrap_or_default(),
                    name: p.metadata.name?,
                },
            ))
        })
        .collect())
}

/// For tests: a TLS listener on 127.0.0.1 with a fresh self-signed certificate (a fake API
/// server); returns the listener, its acceptor and the certificate to trust (PEM).
#[cfg(test)]
pub(crate) async fn test_tls_listener(
) -> (tokio::net::TcpListener, tokio_rustls::TlsAcceptor, String) {
    use std::sync::Arc;
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (listener, acceptor, ck.cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},
      "items":[
        {"metadata":{"name":"web-7d4b9","namespace":"shop","uid":"1C2A3B4D-5E6F-4A1B-9C8D-0123456789AB"}},
        {"metadata":{"name":"no-uid","namespace":"x"}},
        {"metadata":{"name":"db-0","namespace":"shop","uid":"0f5c3b0e2c9e6c8b7a2a1f1e0d3c4b5a"},"spec":{"nodeName":"n1"}}
      ]}"#;

    #[test]
    fn pod_list() {
        let m = parse_pod_list(LIST.as_bytes()).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            m["1c2a3b4d-5e6f-4a1b-9c8d-0123456789ab"],
            PodRef {
                namespace: "shop".into(),
                name: "web-7d4b9".into()
            }
        );
        assert!(parse_pod_list(b"{}").unwrap().is_empty());
        assert!(matches!(
            parse_pod_list(b"<html>"),
            Err(KubeError::Malformed { .. })
        ));
    }

    #[test]
    fn http_and_chunked() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(raw).unwrap(), b"hello world");
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_http_response(plain).unwrap(), b"{}");
        let denied = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 60\r\n\r\n{\"kind\":\"Status\",\"message\":\"pods is forbidden\",\"code\":403}";
        match parse_http_response(denied) {
            Err(KubeError::Status {
                status: 403,
                message,
            }) => assert_eq!(message, "pods is forbidden"),
            other => panic!("{other:?}"),
        }
        assert!(parse_http_response(b"HTTP/1.1 200").is_err());
        assert!(decode_chunked(b"zz\r\n").is_err());
        assert!(decode_chunked(b"5\r\nhel").is_err());
        assert!(decode_chunked(b"5\r\nhelloXX0\r\n\r\n").is_err());
        // Sizes near usize::MAX: `size + 2` used to overflow (a panic in debug builds, a
        // slice panic in release).
        for huge in ["ffffffffffffffff", "fffffffffffffffe", "7fffffffffffffff"] {
            let raw = format!("{huge}\r\nabc\r\n0\r\n\r\n");
            match decode_chunked(raw.as_bytes()) {
                Err(KubeError::Malformed { reason }) => {
                    assert!(reason.contains("larger"), "{reason}")
                }
                other => panic!("{huge}: {other:?}"),
            }
        }
        // Chunks that together exceed the cap.
        let mut many = Vec::new();
        for _ in 0..3 {
            many.extend_from_slice(format!("{:x}\r\n", MAX_RESPONSE / 2).as_bytes());
            many.extend(std::iter::repeat_n(b'a', MAX_RESPONSE / 2));
            many.extend_from_slice(b"\r\n");
        }
        many.extend_from_slice(b"0\r\n\r\n");
        assert!(decode_chunked(&many).is_err());
        assert_eq!(url_escape("node-1.example"), "node-1.example");
        assert_eq!(url_escape("a b"), "a%20b");
    }

    #[test]
    fn bad_ca_is_an_error() {
        assert!(matches!(
            KubeClient::new("127.0.0.1", 443, String::new(), b"not pem"),
            Err(KubeError::BadCa { .. })
        ));
    }

    /// A fake API server on 127.0.0.1 with a self-signed certificate.
    #[tokio::test]
    async fn lists_pods_over_tls() {
        let (listener, acceptor, ca_pem) = crate::proxy::kube::test_tls_listener().await;
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tls.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            let body = LIST.as_bytes();
            let mut resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for chunk in body.chunks(100) {
                resp.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                resp.extend_from_slice(chunk);
                resp.extend_from_slice(b"\r\n");
            }
            resp.extend_from_slice(b"0\r\n\r\n");
            tls.write_all(&resp).await.unwrap();
            tls.shutdown().await.unwrap();
            String::from_utf8(req).unwrap()
        });
        let client = KubeClient::new("127.0.0.1", port, "tok3n".into(), ca_pem.as_bytes()).unwrap();
        let pods = client.pods(Some("n1")).await.unwrap();
        assert_eq!(pods.len(), 2);
        let req = server.await.unwrap();
        assert!(
            req.starts_with("GET /api/v1/pods?fieldSelector=spec.nodeName%3Dn1 HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.contains("Authorization: Bearer tok3n\r\n"));

        // Nothing listening: a connect error, not a panic.
        let closed = KubeClient::new("127.0.0.1", 1, String::new(), ca_pem.as_bytes()).unwrap();
        assert!(matches!(
            closed.pods(None).await,
            Err(KubeError::Connect { .. })
        ));
    }
}
