//! rustls configuration: the one place that builds server and client TLS configs.
//!
//! The crypto provider is pinned to `ring` and passed explicitly (no process-wide
//! default), protocol versions are TLS 1.2 and 1.3 with rustls' default suites. PEM is
//! parsed with `rustls-pki-types` (`rustls-pemfile` is unmaintained).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN ids, preferred first.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A TLS problem, worded for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The pinned provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| TlsError(format!("cannot read {}: {err}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError(format!("{} is not valid PEM: {err}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{} holds no certificate", path.display())));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1/RSA or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| match err {
        rustls_pki_types::pem::Error::NoItemsFound => {
            TlsError(format!("{} holds no private key", path.display()))
        }
        err => TlsError(format!(
            "cannot read a private key from {}: {err}",
            path.display()
        )),
    })
}

fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|err| {
            TlsError(format!(
                "{}: not a usable CA certificate: {err}",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

/// The listener's config: ALPN h2 then http/1.1; with `client_ca`, clients must
/// present a certificate it signed (mutual TLS).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| TlsError(err.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots_from(ca)?), provider())
                    .build()
                    .map_err(|err| TlsError(format!("{}: {err}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key_der).map_err(|err| {
        TlsError(format!(
            "{} and {} do not make a usable certificate (does the key match the certificate?): {err}",
            cert.display(),
            key.display()
        ))
    })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(config)
}

/// An upstream's config: server certificates verified against `ca_file` when given,
/// else the webpki roots; an optional client certificate for upstream mTLS.
pub fn client_config(
    ca_file: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let roots = match ca_file {
        Some(ca) => roots_from(ca)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|err| TlsError(err.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| TlsError(err.to_string()))?
        .with_webpki_verifier(verifier);
    match client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|err| {
                TlsError(format!(
                    "{} and {} do not make a usable client certificate: {err}",
                    cert.display(),
                    key.display()
                ))
            }),
    }
}
