//! mTLS material for the sidecar-to-sidecar leg: a per-lab CA, a server certificate for the
//! inbound sidecar and a client certificate for the outbound sidecar (rcgen), written as PEM
//! files; and rustls configs for our ground-truth proxy (ring provider).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};

use super::LabError;

/// Paths of the PEM files of one lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    /// CA certificate (trust anchor on both sides).
    pub ca: PathBuf,
    /// Inbound sidecar certificate.
    pub server_cert: PathBuf,
    /// Inbound sidecar key.
    pub server_key: PathBuf,
    /// Inbound sidecar certificate + key in one file (haproxy).
    pub server_bundle: PathBuf,
    /// Outbound sidecar certificate.
    pub client_cert: PathBuf,
    /// Outbound sidecar key.
    pub client_key: PathBuf,
    /// Outbound sidecar certificate + key in one file (haproxy).
    pub client_bundle: PathBuf,
    /// DNS name in the server certificate (SNI and verification name).
    pub server_name: String,
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> LabError {
    LabError::Tls {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// The DNS name of a lab's inbound sidecar.
pub fn server_name(lab: &str) -> String {
    format!("server.{lab}.smp-lab")
}

/// Generates the CA and the two leaf certificates into `dir`; keys are chowned to `uid`
/// (the sidecars' uid) and mode 0600.
pub fn generate(
    dir: &Path,
    lab: &str,
    server_addr: IpAddr,
    uid: u32,
) -> Result<TlsFiles, LabError> {
    let name = server_name(lab);
    let ca_key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("CA", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("smp-lab {lab} CA"));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| tls_err("CA certificate", e))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |cn: &str, sans: Vec<String>, ip: Option<IpAddr>, eku| {
        let key = KeyPair::generate().map_err(|e| tls_err(cn, e))?;
        let mut p = CertificateParams::new(sans).map_err(|e| tls_err(cn, e))?;
        if let Some(ip) = ip {
            p.subject_alt_names.push(SanType::IpAddress(ip));
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &issuer).map_err(|e| tls_err(cn, e))?;
        Ok::<_, LabError>((cert.pem(), key.serialize_pem()))
    };
    let (server_pem, server_key) = leaf(
        &name,
        vec![name.clone()],
        Some(server_addr),
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let client_cn = format!("client.{lab}.smp-lab");
    let (client_pem, client_key) = leaf(
        &client_cn,
        vec![client_cn.clone()],
        None,
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;

    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        server_bundle: dir.join("server-bundle.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        client_bundle: dir.join("client-bundle.pem"),
        server_name: name,
    };
    let write = |path: &Path, text: &str, secret: bool| -> Result<(), LabError> {
        std::fs::write(path, text)
            .map_err(|e| LabError::io(format!("write {}", path.display()), e))?;
        if secret {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| LabError::io(format!("chmod {}", path.display()), e))?;
            std::os::unix::fs::chown(path, Some(uid), Some(uid))
                .map_err(|e| LabError::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    };
    write(&files.ca, &ca_cert.pem(), false)?;
    write(&files.server_cert, &server_pem, false)?;
    write(&files.server_key, &server_key, true)?;
    write(
        &files.server_bundle,
        &format!("{server_pem}{server_key}"),
        true,
    )?;
    write(&files.client_cert, &client_pem, false)?;
    write(&files.client_key, &client_key, true)?;
    write(
        &files.client_bundle,
        &format!("{client_pem}{client_key}"),
        true,
    )?;
    Ok(files)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, LabError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_err(&format!("read {}", path.display()), e))
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, LabError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_err(&format!("read {}", path.display()), e))
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, LabError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| tls_err(&format!("CA {}", ca.display()), e))?;
    }
    Ok(roots)
}

fn alpn(h2: bool) -> Vec<Vec<u8>> {
    if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    }
}

/// Server side (inbound sidecar): presents `cert`, requires a client certificate from `ca`;
/// ALPN `h2` or `http/1.1`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    ca: &Path,
    h2: bool,
) -> Result<Arc<rustls::ServerConfig>, LabError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca)?),
        provider(),
    )
    .build()
    .map_err(|e| tls_err("client verifier", e))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("server config", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| tls_err("server certificate", e))?;
    let mut cfg = cfg;
    cfg.alpn_protocols = alpn(h2);
    Ok(Arc::new(cfg))
}

/// Client side (outbound sidecar): presents `cert`, verifies the server against `ca`;
/// offers ALPN `h2` or `http/1.1`.
pub fn client_config(
    cert: &Path,
    key: &Path,
    ca: &Path,
    h2: bool,
) -> Result<Arc<rustls::ClientConfig>, LabError> {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("client config", e))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| tls_err("client certificate", e))?;
    let mut cfg = cfg;
    cfg.alpn_protocols = alpn(h2);
    Ok(Arc::new(cfg))
}

/// A server name for rustls.
pub fn rustls_name(name: &str) -> Result<ServerName<'static>, LabError> {
    ServerName::try_from(name.to_string()).map_err(|e| tls_err("server name", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_loads_into_rustls() {
        let dir = std::env::temp_dir().join(format!("smp-lab-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let f = generate(&dir, "t", "10.77.0.2".parse().unwrap(), uid).unwrap();
        server_config(&f.server_cert, &f.server_key, &f.ca, false).unwrap();
        client_config(&f.client_cert, &f.client_key, &f.ca, true).unwrap();
        rustls_name(&f.server_name).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
