//! TLS configuration of the HTTP listener: reading the PEM certificate chain and key into a
//! rustls `ServerConfig`, and the swappable cell every worker takes it from when it accepts a
//! connection (`TlsCell::current`). `TlsCell::reload` re-reads both files and swaps the config
//! in: connections accepted afterwards use the new certificate, those already open keep the
//! one they were accepted with (each `ServerConnection` holds its own `Arc`). A reload that
//! fails leaves the old config in place.
//!
//! The per-connection side (the sans-I/O `ServerConnection` driven by the mio loop) is
//! `conn/socket.rs`.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha1::{Digest, Sha1};

use crate::config::Tls;

/// Largest PEM file read (a certificate chain is a few KiB; this refuses a wrong path to a
/// huge file before it is read into memory).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// The current TLS config of the HTTP listener, swappable at run time.
pub struct TlsCell {
    paths: Tls,
    current: RwLock<Loaded>,
}

/// A config with what identifies its certificate, to say what a reload changed.
#[derive(Clone)]
struct Loaded {
    config: Arc<ServerConfig>,
    /// SHA-1 of the leaf certificate's DER, as hex (what `openssl x509 -fingerprint` shows).
    fingerprint: String,
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The leaf certificate's SHA-1 fingerprint before the reload.
    pub old_fingerprint: String,
    /// And after it.
    pub new_fingerprint: String,
}

impl Reloaded {
    /// False when the files held the same certificate as before (the key may still differ).
    pub fn changed(&self) -> bool {
        self.old_fingerprint != self.new_fingerprint
    }
}

impl fmt::Display for Reloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changed() {
            write!(f, "TLS certificate changed: sha1 {} -> {}", self.old_fingerprint, self.new_fingerprint)
        } else {
            write!(f, "TLS certificate unchanged (sha1 {})", self.new_fingerprint)
        }
    }
}

/// Why a certificate or key could not be loaded: one line, naming the file.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e.0)
    }
}

impl fmt::Debug for TlsCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCell").field("cert", &self.paths.cert).field("key", &self.paths.key).finish()
    }
}

impl TlsCell {
    /// Loads the certificate and key named by `paths`.
    pub fn load(paths: &Tls) -> Result<TlsCell, TlsError> {
        let loaded = load(&paths.cert, &paths.key)?;
        Ok(TlsCell { paths: paths.clone(), current: RwLock::new(loaded) })
    }

    /// The config new connections are accepted with.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner).config)
    }

    /// The leaf certificate's SHA-1 fingerprint (hex) new connections are given.
    pub fn fingerprint(&self) -> String {
        self.current.read().unwrap_or_else(PoisonError::into_inner).fingerprint.clone()
    }

    /// Re-reads the certificate and key from their files and swaps them in for new
    /// connections. On error the old ones stay.
    pub fn reload(&self) -> Result<Reloaded, TlsError> {
        let loaded = load(&self.paths.cert, &self.paths.key)?;
        let new_fingerprint = loaded.fingerprint.clone();
        let old = std::mem::replace(&mut *self.current.write().unwrap_or_else(PoisonError::into_inner), loaded);
        Ok(Reloaded { old_fingerprint: old.fingerprint, new_fingerprint })
    }
}

/// Reads the chain and key and builds the server config (TLS 1.2 and 1.3, the `ring`
/// provider's safe defaults, ALPN `http/1.1`).
fn load(cert: &Path, key: &Path) -> Result<Loaded, TlsError> {
    let cert_pem = read_pem(cert, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("TLS certificate {}: {e}", cert.display())))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError(format!("TLS certificate {}: no CERTIFICATE block in the file", cert.display())));
    };
    let fingerprint = hex(&Sha1::digest(leaf.as_ref()));
    let key_pem = read_pem(key, "key")?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError(format!("TLS key {}: no usable private key ({e})", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError(format!("TLS certificate {} and key {}: {e}", cert.display(), key.display())))?;
    // Halley speaks HTTP/1.1 (and WebSocket over it); a client offering h2 as well picks this.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded { config: Arc::new(config), fingerprint })
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let fail = |e: io::Error| TlsError(format!("cannot read TLS {what} {}: {e}", path.display()));
    let mut bytes = Vec::new();
    std::fs::File::open(path).map_err(fail)?.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes).map_err(fail)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError(format!("TLS {what} {}: larger than {MAX_PEM_BYTES} bytes", path.display())));
    }
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}
