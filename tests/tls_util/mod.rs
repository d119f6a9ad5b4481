//! TLS test helpers: a test CA and a server certificate made with rcgen and written to files
//! (`CertFiles`), and a blocking rustls client speaking just enough HTTP/1.1 and WebSocket
//! (`TlsClient`).
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use sha1::{Digest, Sha1};

use crate::util::{fill_from, parse_head, Response, WAIT};

/// A fresh CA, and a certificate for `localhost` and 127.0.0.1 signed by it, as PEM files in a
/// directory of their own (removed on drop).
pub struct CertFiles {
    dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA certificate as PEM, for clients that take a file (curl, Node).
    pub ca_file: PathBuf,
    pub ca: CertificateDer<'static>,
}

impl CertFiles {
    pub fn new(host: &str) -> CertFiles {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("halley-tls-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, format!("Halley test CA {n}"));
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec![host.to_owned(), "127.0.0.1".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, host);
        let cert = params.signed_by(&key, &ca, &ca_key).expect("server certificate");
        let files = CertFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca_file: dir.join("ca.pem"),
            ca: ca.der().clone(),
            dir,
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        std::fs::write(&files.ca_file, ca.pem()).expect("write CA");
        files
    }

    /// Overwrites this certificate and key with `other`'s (a renewal in place).
    pub fn replace_with(&self, other: &CertFiles) {
        std::fs::copy(&other.cert, &self.cert).expect("copy cert");
        std::fs::copy(&other.key, &self.key).expect("copy key");
    }
}

impl Drop for CertFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client config trusting only `ca`.
pub fn client_config(ca: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("CA certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// SHA-1 of a certificate, as the server's reload reports it.
pub fn fingerprint(cert: &[u8]) -> String {
    Sha1::digest(cert).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// One TLS connection (handshake done), read as HTTP/1.1 responses or WebSocket frames.
pub struct TlsClient {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    pub fn connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> TlsClient {
        TlsClient::try_connect(addr, ca).expect("TLS handshake")
    }

    /// Connects and completes the handshake (the error says why it failed, e.g. an unknown
    /// issuer).
    pub fn try_connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> Result<TlsClient, std::io::Error> {
        let mut tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(WAIT))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").expect("name");
        let mut conn = ClientConnection::new(client_config(ca), name).map_err(std::io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        Ok(TlsClient { stream: StreamOwned::new(conn, tcp), buf: Vec::new() })
    }

    /// The fingerprint of the certificate the server presented.
    pub fn peer_fingerprint(&self) -> String {
        let certs = self.stream.conn.peer_certificates().expect("a server certificate");
        fingerprint(&certs[0])
    }

    pub fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).expect("write");
        self.stream.flush().expect("flush");
    }

    /// Sends a request and reads its response.
    pub fn request(&mut self, text: &str) -> Response {
        self.send(text);
        self.response()
    }

    /// Reads more plaintext; false on EOF (or close_notify).
    pub fn fill(&mut self) -> bool {
        fill_from(&mut self.stream, &mut self.buf, std::io::ErrorKind::UnexpectedEof)
    }

    /// Reads a response head; the body stays buffered for `response` or `read_until`.
    pub fn head(&mut self) -> Response {
        loop {
            if let Some((response, len)) = parse_head(&self.buf) {
                self.buf.drain(..len);
                return response;
            }
            assert!(self.fill(), "closed before a response head");
        }
    }

    /// Reads one response with a `Content-Length` body.
    pub fn response(&mut self) -> Response {
        let mut response = self.head();
        let len: usize = response.header("content-length").map_or(0, |l| l.trim().parse().expect("length"));
        while self.buf.len() < len {
            assert!(self.fill(), "closed inside a body");
        }
        response.body = self.buf.drain(..len).collect();
        response
    }

    /// Reads until the bytes after the head (chunk framing and all) satisfy `done`.
    pub fn read_until(&mut self, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&String::from_utf8_lossy(&self.buf)) {
            assert!(Instant::now() < deadline, "timed out; got {:?}", String::from_utf8_lossy(&self.buf));
            assert!(self.fill(), "closed; got {:?}", String::from_utf8_lossy(&self.buf));
        }
    }

    /// Sends a masked WebSocket text frame.
    pub fn ws_send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&u16::try_from(n).expect("short frame").to_be_bytes());
            }
        }
        let key = [0x12, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream.write_all(&frame).expect("write frame");
        self.stream.flush().expect("flush");
    }

    /// The next WebSocket text frame as JSON (pings skipped).
    pub fn ws_json(&mut self) -> serde_json::Value {
        loop {
            let (opcode, payload) = self.ws_frame();
            match opcode {
                1 => return serde_json::from_slice(&payload).expect("JSON text frame"),
                9 | 10 => continue,
                op => panic!("expected a text frame, got opcode {op}: {payload:?}"),
            }
        }
    }

    fn ws_frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let opcode = self.buf[0] & 0x0f;
                let (len, start) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4),
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (usize::try_from(u64::from_be_bytes(b)).expect("size"), 10)
                    }
                    n if n < 126 => (usize::from(n), 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= start + len {
                    let payload = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    return (opcode, payload);
                }
            }
            assert!(self.fill(), "closed while reading a frame");
        }
    }
}
