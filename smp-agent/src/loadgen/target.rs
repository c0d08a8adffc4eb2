//! Targets (what to send where) prepared once before the run, and the connections to them.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{BufMut as _, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::{LoadError, LoadSpec};

/// One endpoint URL with its request prepared once.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Index into the endpoint list (one per scheme + host + port).
    pub endpoint: usize,
    /// The complete HTTP/1.1 request: head and body, ready to write.
    pub h1_request: Bytes,
    /// `true` for HEAD requests (responses have no body).
    pub head: bool,
    /// HTTP/2: method, URI, headers and body.
    pub method: Method,
    pub uri: Uri,
    pub h2_headers: HeaderMap,
    pub body: Bytes,
}

/// Where connections go: one per distinct scheme + host + port.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// First URL that uses this endpoint (for messages).
    pub url: String,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `https`.
    pub tls: bool,
    /// Resolved address (after [`Endpoint::resolve`]).
    pub addr: Option<SocketAddr>,
    /// TLS server name (SNI and certificate check).
    pub server_name: ServerName<'static>,
}

/// Headers a client must not send over HTTP/2 (RFC 9113 §8.2.2); dropped there.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Parses every URL and builds its request. Pure: no network.
pub(crate) fn prepare(spec: &LoadSpec) -> Result<(Vec<Target>, Vec<Endpoint>), LoadError> {
    if spec.urls.is_empty() {
        return Err(LoadError::NoUrls);
    }
    let method = Method::from_bytes(spec.method.trim().as_bytes())
        .map_err(|_| LoadError::InvalidMethod(spec.method.clone()))?;
    let mut user_headers = Vec::with_capacity(spec.headers.len() + 2);
    for (name, value) in &spec.headers {
        let shown = || format!("{name}: {value}");
        let n = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            LoadError::InvalidHeader {
                header: shown(),
                reason: "not a valid header name",
            }
        })?;
        let v = HeaderValue::from_str(value.trim()).map_err(|_| LoadError::InvalidHeader {
            header: shown(),
            reason: "not a valid header value",
        })?;
        user_headers.push((n, v));
    }
    if !spec.cookies.is_empty() {
        let joined = spec.cookies.join("; ");
        let v = HeaderValue::from_str(&joined).map_err(|_| LoadError::InvalidHeader {
            header: format!("cookie: {joined}"),
            reason: "not a valid cookie value",
        })?;
        user_headers.push((header::COOKIE, v));
    }
    if let Some(ct) = &spec.content_type {
        let v = HeaderValue::from_str(ct.trim()).map_err(|_| LoadError::InvalidHeader {
            header: format!("content-type: {ct}"),
            reason: "not a valid header value",
        })?;
        user_headers.retain(|(n, _)| n != header::CONTENT_TYPE);
        user_headers.push((header::CONTENT_TYPE, v));
    }
    let has = |h: &HeaderName| user_headers.iter().any(|(n, _)| n == h);
    let body = Bytes::from(spec.body.clone());
    let send_length =
        !body.is_empty() || matches!(method, Method::POST | Method::PUT | Method::PATCH);

    let mut targets = Vec::with_capacity(spec.urls.len());
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for url in &spec.urls {
        let bad = |reason: &str| LoadError::InvalidUrl {
            url: url.clone(),
            reason: reason.to_string(),
        };
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err(bad("scheme must be http or https")),
            None => return Err(bad("missing scheme (http:// or https://)")),
        };
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?.clone();
        if authority.as_str().contains('@') {
            return Err(bad("user info in URLs is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        // `Authority::port` hides out-of-range ports, so look at the text.
        let after_host = authority
            .as_str()
            .rsplit_once(']')
            .map_or(authority.as_str(), |(_, rest)| rest);
        let port = match after_host.rsplit_once(':') {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some((_, p)) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad("port must be 1 to 65535")),
            },
        };
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| bad("host is not a valid DNS name or IP address"))?;
        let endpoint = match endpoints
            .iter()
            .position(|e| e.host == host && e.port == port && e.tls == tls)
        {
            Some(i) => i,
            None => {
                endpoints.push(Endpoint {
                    url: url.clone(),
                    host: host.to_string(),
                    port,
                    tls,
                    addr: None,
                    server_name,
                });
                endpoints.len() - 1
            }
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.is_empty() { "/" } else { path };

        // HTTP/1.1: the whole request, built once.
        let mut b = BytesMut::with_capacity(256 + body.len());
        b.put_slice(method.as_str().as_bytes());
        b.put_u8(b' ');
        b.put_slice(path.as_bytes());
        b.put_slice(b" HTTP/1.1\r\n");
        if !has(&header::HOST) {
            b.put_slice(b"host: ");
            b.put_slice(authority.as_str().as_bytes());
            b.put_slice(b"\r\n");
        }
        if !has(&header::USER_AGENT) {
            b.put_slice(
                concat!("user-agent: smp-agent/", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes(),
            );
        }
        for (n, v) in &user_headers {
            if n == header::CONTENT_LENGTH {
                continue;
            }
            b.put_slice(n.as_str().as_bytes());
            b.put_slice(b": ");
            b.put_slice(v.as_bytes());
            b.put_slice(b"\r\n");
        }
        if send_length {
            b.put_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        b.put_slice(b"\r\n");
        b.put_slice(&body);

        // HTTP/2: the parts, cloned per request.
        let mut h2_headers = HeaderMap::with_capacity(user_headers.len());
        let mut h2_uri = uri.clone();
        for (n, v) in &user_headers {
            if n == header::HOST {
                // :authority replaces Host.
                let mut parts = uri.clone().into_parts();
                parts.authority = v.to_str().ok().and_then(|s| s.parse().ok());
                if let Ok(u) = Uri::from_parts(parts) {
                    h2_uri = u;
                }
                continue;
            }
            if CONNECTION_SPECIFIC.contains(&n.as_str()) || n == header::CONTENT_LENGTH {
                continue;
            }
            h2_headers.append(n.clone(), v.clone());
        }
        if !has(&header::USER_AGENT) {
            h2_headers.insert(
                header::USER_AGENT,
                HeaderValue::from_static(concat!("smp-agent/", env!("CARGO_PKG_VERSION"))),
            );
        }
        if send_length {
            h2_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }

        targets.push(Target {
            url: url.clone(),
            endpoint,
            h1_request: b.freeze(),
            head: method == Method::HEAD,
            method: method.clone(),
            uri: h2_uri,
            h2_headers,
            body: body.clone(),
        });
    }
    Ok((targets, endpoints))
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub(crate) struct ConnectFailure(pub String);

impl Endpoint {
    /// Resolves the host name once, before the run.
    pub async fn resolve(&mut self) -> Result<(), LoadError> {
        let hostport = format!("{}:{}", self.host, self.port);
        let mut addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|source| LoadError::Resolve {
                host: hostport.clone(),
                source,
            })?;
        self.addr = Some(addrs.next().ok_or_else(|| LoadError::Resolve {
            host: hostport,
            source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
        })?);
        Ok(())
    }

    /// One TCP (+ TLS) connection within the connect timeout.
    pub(crate) async fn connect(
        &self,
        spec: &LoadSpec,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> Result<Stream, ConnectFailure> {
        let addr = self
            .addr
            .ok_or_else(|| ConnectFailure("address not resolved".into()))?;
        let fut = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| ConnectFailure(e.to_string()))?;
            // Requests are written in one piece; do not let Nagle hold them back.
            let _ = tcp.set_nodelay(true);
            if !self.tls {
                return Ok(Stream::Plain(tcp));
            }
            let connector = tls.ok_or_else(|| ConnectFailure("TLS not configured".into()))?;
            let s = connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| ConnectFailure(format!("TLS handshake failed: {e}")))?;
            Ok(Stream::Tls(Box::new(s)))
        };
        match tokio::time::timeout(spec.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ConnectFailure(format!(
                "timed out after {}",
                crate::duration::format(spec.connect_timeout)
            ))),
        }
    }

    /// Connects once before the run so that a wrong port, an unreachable host or a TLS
    /// problem is a clear error instead of a run full of connect errors.
    pub(crate) async fn preflight(
        &self,
        spec: &LoadSpec,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> Result<(), LoadError> {
        let fail = |reason: String| LoadError::Connect {
            url: self.url.clone(),
            reason,
        };
        let stream = self.connect(spec, tls).await.map_err(|e| fail(e.0))?;
        if let Stream::Tls(s) = &stream {
            if spec.protocol.is_h2() && s.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(fail(
                    "the server did not agree to HTTP/2 (ALPN h2); use HTTP/1.1".into(),
                ));
            }
        }
        Ok(())
    }
}

/// A client connection, cleartext or TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(urls: &[&str]) -> LoadSpec {
        LoadSpec::new(urls.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn builds_http1_request_once() {
        let mut s = spec(&["http://127.0.0.1:8080/a?b=1"]);
        s.method = "POST".into();
        s.body = b"{}".to_vec();
        s.content_type = Some("application/json".into());
        s.headers = vec![("X-Test".into(), "1".into())];
        s.cookies = vec!["a=1".into(), "b=2".into()];
        let (t, e) = prepare(&s).unwrap();
        let req = std::str::from_utf8(&t[0].h1_request).unwrap();
        assert!(
            req.starts_with("POST /a?b=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"),
            "{req}"
        );
        assert!(req.contains("x-test: 1\r\n"));
        assert!(req.contains("cookie: a=1; b=2\r\n"));
        assert!(req.contains("content-type: application/json\r\n"));
        assert!(req.ends_with("content-length: 2\r\n\r\n{}"), "{req}");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].port, 8080);
        assert!(!e[0].tls);
    }

    #[test]
    fn endpoints_are_shared_by_authority() {
        let s = spec(&[
            "http://localhost/x",
            "http://localhost:80/y",
            "https://localhost/z",
            "http://[::1]:9000",
        ]);
        let (t, e) = prepare(&s).unwrap();
        assert_eq!(
            t.iter().map(|t| t.endpoint).collect::<Vec<_>>(),
            [0, 0, 1, 2]
        );
        assert_eq!(e[1].port, 443);
        assert_eq!(e[2].host, "::1");
        assert!(std::str::from_utf8(&t[3].h1_request)
            .unwrap()
            .starts_with("GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn bad_urls_are_clear_errors() {
        for (url, want) in [
            ("localhost:8080", "scheme"),
            ("ftp://x/", "scheme must be http or https"),
            ("http://", "invalid URL"),
            ("http:// bad host/", "invalid URL"),
            ("/just/a/path", "missing scheme"),
            ("http://127.0.0.1:99999/", "port must be 1 to 65535"),
            ("http://127.0.0.1:0/", "port must be 1 to 65535"),
        ] {
            let e = prepare(&spec(&[url])).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
            assert!(e.contains("invalid URL"), "{url}: {e}");
        }
    }

    #[test]
    fn bad_headers_and_methods() {
        let mut s = spec(&["http://127.0.0.1/"]);
        s.headers = vec![("bad name".into(), "v".into())];
        assert!(matches!(prepare(&s), Err(LoadError::InvalidHeader { .. })));
        let mut s = spec(&["http://127.0.0.1/"]);
        s.headers = vec![("x".into(), "a\nb".into())];
        assert!(matches!(prepare(&s), Err(LoadError::InvalidHeader { .. })));
        let mut s = spec(&["http://127.0.0.1/"]);
        s.method = "GE T".into();
        assert!(matches!(prepare(&s), Err(LoadError::InvalidMethod(_))));
    }

    #[test]
    fn http2_parts_drop_connection_headers() {
        let mut s = spec(&["http://127.0.0.1:1/p"]);
        s.headers = vec![
            ("connection".into(), "close".into()),
            ("host".into(), "example.test".into()),
        ];
        let (t, _) = prepare(&s).unwrap();
        assert!(t[0].h2_headers.get("connection").is_none());
        assert_eq!(t[0].uri.authority().unwrap().as_str(), "example.test");
        assert_eq!(t[0].uri.path(), "/p");
    }
}
