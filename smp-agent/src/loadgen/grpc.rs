//! Unary gRPC over HTTP/2 (the [`super::http2`] transport): the load generator's `--grpc`
//! mode and the lab app's `/smp.Lab/Echo` method share these definitions.
//!
//! A request is a `POST` to the method's path with `content-type: application/grpc`,
//! `te: trailers` and one length-prefixed message (1 byte "compressed" = 0, 4 bytes big-endian
//! length, the bytes). The message is opaque (the `--body`): no protobuf schema is needed for a
//! bytes-in, bytes-out method. The outcome is the `grpc-status` of the trailers (or of the
//! headers of a trailers-only response); a response without one is a protocol error.

use bytes::{BufMut as _, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method};

use super::{target, Endpoint, LoadError, LoadSpec, Target};

/// The lab app's unary method: answers with the request's message (or its fixed body).
pub const LAB_METHOD: &str = "/smp.Lab/Echo";

/// `base` (a URL ending in `/`, like the lab's) with the lab method as its path.
pub fn lab_method_url(base: &str) -> String {
    format!("{}{LAB_METHOD}", base.trim_end_matches('/'))
}

/// `content-type` of gRPC requests and responses.
pub const CONTENT_TYPE: &str = "application/grpc";

/// Request header that makes the lab app answer with this gRPC status code (0..=16).
pub const STATUS_HEADER: &str = "x-smp-grpc-status";

/// Largest gRPC status code (`UNAUTHENTICATED`); others are counted as themselves but have
/// no name.
pub const MAX_CODE: u32 = 16;

/// Canonical name of a gRPC status code.
pub fn code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "NON_STANDARD",
    }
}

/// One message with its 5-byte prefix (uncompressed).
pub fn frame(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    b.put_slice(message);
    b.freeze()
}

/// Why a body is not a sequence of whole gRPC messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The body ends inside a prefix or a message.
    #[error("truncated gRPC message at byte {offset}")]
    Truncated {
        /// Where the cut message starts.
        offset: usize,
    },
    /// The compressed flag is set (no compression was negotiated).
    #[error("compressed gRPC message at byte {offset} (no encoding negotiated)")]
    Compressed {
        /// Where the message starts.
        offset: usize,
    },
}

/// Splits a body into its messages (borrowed).
pub fn messages(body: &[u8]) -> Result<Vec<&[u8]>, FrameError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let Some(prefix) = body.get(at..at + 5) else {
            return Err(FrameError::Truncated { offset: at });
        };
        if prefix[0] != 0 {
            return Err(FrameError::Compressed { offset: at });
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        let msg = body
            .get(at + 5..(at + 5).saturating_add(len))
            .ok_or(FrameError::Truncated { offset: at })?;
        out.push(msg);
        at += 5 + len;
    }
    Ok(out)
}

/// The `grpc-status` of a response: from its trailers, else from its headers (a
/// trailers-only response). `None` when neither has a valid one.
pub fn status(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Option<u32> {
    let get = |m: &HeaderMap| m.get("grpc-status")?.to_str().ok()?.trim().parse().ok();
    trailers.and_then(get).or_else(|| get(headers))
}

/// The targets of a gRPC run: `POST` with one framed message (the spec's body), the gRPC
/// content type and `te: trailers`. The URL's path names the method.
pub(crate) fn prepare(spec: &LoadSpec) -> Result<(Vec<Target>, Vec<Endpoint>), LoadError> {
    let mut s = spec.clone();
    s.method = Method::POST.to_string();
    s.body = frame(&spec.body).to_vec();
    s.content_type = Some(CONTENT_TYPE.into());
    let (mut targets, endpoints) = target::prepare(&s)?;
    for t in &mut targets {
        t.h2_headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
        // gRPC bodies are delimited by their frames; a content-length is not sent.
        t.h2_headers.remove(header::CONTENT_LENGTH);
    }
    Ok((targets, endpoints))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut body = frame(b"hello").to_vec();
        assert_eq!(&body[..5], &[0, 0, 0, 0, 5]);
        body.extend_from_slice(&frame(b""));
        assert_eq!(messages(&body).unwrap(), [&b"hello"[..], &b""[..]]);
        assert_eq!(messages(&[]).unwrap(), Vec::<&[u8]>::new());
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(
            messages(&[0, 0, 0]),
            Err(FrameError::Truncated { offset: 0 })
        );
        let mut b = frame(b"ab").to_vec();
        b.extend_from_slice(&[0, 0, 0, 0, 9, 1]);
        assert_eq!(messages(&b), Err(FrameError::Truncated { offset: 7 }));
        assert_eq!(
            messages(&[1, 0, 0, 0, 0]),
            Err(FrameError::Compressed { offset: 0 })
        );
        // A length near u32::MAX must not overflow or allocate.
        assert!(messages(&[0, 255, 255, 255, 255]).is_err());
    }

    #[test]
    fn status_prefers_trailers() {
        let mut h = HeaderMap::new();
        let mut t = HeaderMap::new();
        assert_eq!(status(&h, None), None);
        h.insert("grpc-status", HeaderValue::from_static("14"));
        assert_eq!(status(&h, None), Some(14));
        t.insert("grpc-status", HeaderValue::from_static("0"));
        assert_eq!(status(&h, Some(&t)), Some(0));
        t.insert("grpc-status", HeaderValue::from_static("x"));
        assert_eq!(status(&h, Some(&t)), Some(14));
        assert_eq!(code_name(14), "UNAVAILABLE");
        assert_eq!(code_name(99), "NON_STANDARD");
    }

    #[test]
    fn targets_are_grpc_requests() {
        let mut spec = LoadSpec::new(vec!["http://127.0.0.1:1/smp.Lab/Echo".into()]);
        spec.body = b"abc".to_vec();
        let (t, _) = prepare(&spec).unwrap();
        assert_eq!(t[0].method, Method::POST);
        assert_eq!(t[0].body, frame(b"abc"));
        assert_eq!(t[0].h2_headers["te"], "trailers");
        assert_eq!(t[0].h2_headers["content-type"], CONTENT_TYPE);
        assert!(t[0].h2_headers.get("content-length").is_none());
        assert_eq!(t[0].uri.path(), LAB_METHOD);
        assert_eq!(
            lab_method_url("http://10.77.0.2:8080/"),
            "http://10.77.0.2:8080/smp.Lab/Echo"
        );
    }
}
