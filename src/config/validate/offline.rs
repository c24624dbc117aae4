//! `check --offline`: validating a config away from its host. The files it names
//! (token, certificates, keys, CAs, the webhook secret) are recorded as not checked
//! instead of read, and the TLS configs that would be built from them are placeholders
//! that complete no handshake: an offline `Config` is for reading, never for serving.

use std::path::Path;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::Ctx;
use crate::config::NotChecked;

/// The listener certificate of an offline load: there is none, so every handshake
/// fails.
#[derive(Debug)]
struct NoCertificate;

// === impl Ctx ===

impl Ctx<'_> {
    /// In an offline load, records that `path` (the value of `key`) was not read and
    /// returns true; otherwise returns false and the caller reads it.
    pub(super) fn skip_offline(&mut self, key: &str, path: &Path) -> bool {
        if self.offline {
            self.not_checked.push(NotChecked {
                key: key.to_owned(),
                path: path.to_path_buf(),
            });
        }
        self.offline
    }
}

// === impl NoCertificate ===

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// A listener TLS config without a certificate (offline loads only).
pub(super) fn placeholder_server_config() -> Result<rustls::ServerConfig, rustls::Error> {
    Ok(
        rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NoCertificate)),
    )
}
