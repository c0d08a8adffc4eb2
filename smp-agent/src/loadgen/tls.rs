//! TLS client configuration: rustls with the `ring` provider (no cmake/clang needed), ALPN
//! from the protocol, trust from `--ca-file` (SMP `ssl_certificate`) or the webpki roots.

use std::sync::Arc;

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{pem::PemObject as _, CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::{LoadError, LoadSpec, Protocol};

/// Builds the TLS connector for a run.
pub fn connector(spec: &LoadSpec) -> Result<tokio_rustls::TlsConnector, LoadError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::Tls(e.to_string()))?;
    let mut config = if spec.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        if let Some(pem) = &spec.ca_pem {
            let fail = |reason: String| LoadError::Tls(format!("inline CA certificate: {reason}"));
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(e.to_string()))?;
            if certs.is_empty() {
                return Err(fail("no PEM certificate in it".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| fail(e.to_string()))?;
            }
        }
        match &spec.ca_file {
            Some(path) => {
                let fail = |reason: String| LoadError::CaFile {
                    path: path.clone(),
                    reason,
                };
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| fail(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| fail(e.to_string()))?;
                if certs.is_empty() {
                    return Err(fail("no PEM certificate in it".into()));
                }
                for c in certs {
                    roots.add(c).map_err(|e| fail(e.to_string()))?;
                }
            }
            None if spec.ca_pem.is_none() => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            None => {}
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = match spec.protocol {
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::Http2 | Protocol::Grpc => vec![b"h2".to_vec()],
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// `--insecure`: accepts any certificate (signatures are still checked for well-formedness).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_ca_file_is_an_error() {
        let mut s = LoadSpec::new(vec!["https://127.0.0.1/".into()]);
        s.ca_file = Some("/nonexistent/ca.pem".into());
        let e = connector(&s).err().expect("must fail").to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("smp-loadgen-tls-{}", std::process::id()));
        std::fs::write(&dir, "not a pem").unwrap();
        s.ca_file = Some(dir.clone());
        let e = connector(&s).err().expect("must fail").to_string();
        let _ = std::fs::remove_file(&dir);
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn default_roots_and_insecure_build() {
        let mut s = LoadSpec::new(vec!["https://127.0.0.1/".into()]);
        connector(&s).unwrap();
        s.insecure = true;
        s.protocol = Protocol::Http2;
        connector(&s).unwrap();
    }
}
