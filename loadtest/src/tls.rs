//! TLS for the load generator (`--tls`): a client config that trusts `--ca` (or, with
//! `--insecure`, any certificate: the load box talks to its own server), and [`Stream`], a
//! non-blocking socket that is either plain TCP or TCP carrying a rustls `ClientConnection`,
//! with the `Read`/`Write`/`mio::event::Source` a plain `TcpStream` has, so the event loops
//! drive both alike.
//!
//! `write` hands plaintext to rustls (bounded by its buffer limit) and writes records until the
//! socket would block; `read` first writes records still waiting (handshake messages, data a
//! blocked write left), then decrypts. Every readiness event reads, so nothing is stranded.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

/// How the load generator speaks TLS to the server.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TlsOptions {
    /// PEM file of the CA that signed the server's certificate; None with `insecure`.
    pub ca: Option<PathBuf>,
    /// Accept any certificate (the load box only talks to loopback).
    pub insecure: bool,
    /// The name sent as SNI and checked against the certificate.
    pub server_name: String,
}

/// Unsent TLS bytes rustls may hold per connection.
const BUFFER_LIMIT: usize = 64 * 1024;

impl TlsOptions {
    /// The client config these options describe.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let config = match (&self.ca, self.insecure) {
            (_, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
            (Some(ca), false) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))? {
                    let cert = cert.map_err(|e| format!("--ca {}: {e}", ca.display()))?;
                    roots.add(cert).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            (None, false) => return Err("--tls needs --ca FILE or --insecure".into()),
        };
        Ok(Arc::new(config))
    }

    pub fn name(&self) -> Result<ServerName<'static>, String> {
        ServerName::try_from(self.server_name.clone()).map_err(|e| format!("--tls-name {:?}: {e}", self.server_name))
    }
}

/// A connection's socket: plain, or with a TLS session.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<(TcpStream, ClientConnection)>),
}

impl Stream {
    /// Wraps a connecting (or connected) socket; with `tls`, a client session starts on it.
    pub fn new(tcp: TcpStream, tls: Option<&(Arc<ClientConfig>, ServerName<'static>)>) -> io::Result<Stream> {
        let Some((config, name)) = tls else { return Ok(Stream::Plain(tcp)) };
        let mut conn = ClientConnection::new(Arc::clone(config), name.clone()).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(Stream::Tls(Box::new((tcp, conn))))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(t) => &t.0,
        }
    }

    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.tcp().take_error()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }
}

/// Writes waiting records until the socket would block (`Ok` then too).
fn write_records(tcp: &mut TcpStream, conn: &mut ClientConnection) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(tcp) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (tcp, conn) = match self {
            Stream::Plain(tcp) => return tcp.read(buf),
            Stream::Tls(t) => (&mut t.0, &mut t.1),
        };
        write_records(tcp, conn)?;
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match conn.read_tls(tcp) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    conn.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    // The handshake may have something to say back.
                    write_records(tcp, conn)?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (tcp, conn) = match self {
            Stream::Plain(tcp) => return tcp.write(buf),
            Stream::Tls(t) => (&mut t.0, &mut t.1),
        };
        write_records(tcp, conn)?;
        let took = conn.writer().write(buf)?;
        write_records(tcp, conn)?;
        if took == 0 && !buf.is_empty() {
            // rustls is full and the socket would block: like a full socket buffer.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(took)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(t) => write_records(&mut t.0, &mut t.1),
        }
    }
}

impl Source for Stream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.register(registry, token, interests),
            Stream::Tls(t) => t.0.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.reregister(registry, token, interests),
            Stream::Tls(t) => t.0.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.deregister(registry),
            Stream::Tls(t) => t.0.deregister(registry),
        }
    }
}

/// `--insecure`: every certificate is accepted; signatures are still checked, so the session
/// is a real TLS session with the server's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
