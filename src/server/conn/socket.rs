//! The socket boundary of a connection: plain TCP, or TCP carrying TLS through rustls's
//! sans-I/O `ServerConnection`, driven by the worker's mio loop with no thread or runtime of
//! its own. Everything above this file reads and writes plaintext and cannot tell the two
//! apart; the plain case is the `TcpStream` itself (an enum, no extra copy or allocation), the
//! TLS case is boxed so a plain connection stays small.
//!
//! TLS input: `read_tls` from the socket, `process_new_packets` (which also advances the
//! handshake and queues what it must send), then the plaintext through `reader`. TLS output
//! (`io.rs`, `Conn::flush`): plaintext into `writer`, records out with `write_tls` until the
//! socket would block. rustls holds at most `TLS_BUFFER_LIMIT` unsent bytes per connection;
//! everything beyond waits in the connection's own output queue, where the usual bounds and
//! overflow rules see it.

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::{ServerConfig, ServerConnection};

/// Bytes of unsent TLS records (or, during the handshake, unsent plaintext) rustls may hold for
/// one connection. One full record and change: enough to keep the socket busy, small enough that
/// the output bound of the connection (its `OutQueue`) is the bound that matters.
pub const TLS_BUFFER_LIMIT: usize = 32 * 1024;

/// A connection's socket.
#[derive(Debug)]
pub enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsSocket>),
}

/// TCP with a TLS session on it.
#[derive(Debug)]
pub struct TlsSocket {
    pub(crate) tcp: TcpStream,
    pub(crate) tls: ServerConnection,
    /// The handshake's completion was counted (`take_handshake_done`).
    counted: bool,
}

impl Socket {
    /// A freshly accepted socket, with a TLS session on `config` when there is one.
    pub fn accept(tcp: TcpStream, config: Option<Arc<ServerConfig>>) -> io::Result<Socket> {
        let Some(config) = config else { return Ok(Socket::Plain(tcp)) };
        let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Ok(Socket::Tls(Box::new(TlsSocket { tcp, tls, counted: false })))
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Plain(tcp) => tcp,
            Socket::Tls(t) => &t.tcp,
        }
    }

    /// The TCP socket underneath, to read past TLS (a draining connection discards its input).
    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Socket::Plain(tcp) => tcp,
            Socket::Tls(t) => &mut t.tcp,
        }
    }

    /// TLS records are waiting to be written (handshake messages, alerts, data rustls took).
    pub fn wants_write(&self) -> bool {
        match self {
            Socket::Plain(_) => false,
            Socket::Tls(t) => t.tls.wants_write(),
        }
    }

    /// The TLS handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Socket::Plain(_) => false,
            Socket::Tls(t) => t.tls.is_handshaking(),
        }
    }

    /// True once per TLS connection, the first time it is asked after the handshake completed.
    pub fn take_handshake_done(&mut self) -> bool {
        match self {
            Socket::Tls(t) if !t.counted && !t.tls.is_handshaking() => {
                t.counted = true;
                true
            }
            _ => false,
        }
    }

    /// Says goodbye in TLS (close_notify, once the handshake is done) and writes what rustls
    /// still holds (that alert, or one explaining a protocol error) as far as the socket takes
    /// it now. Best effort: the caller shuts the socket down next.
    pub fn close_notify(&mut self) {
        let Socket::Tls(t) = self else { return };
        if !t.tls.is_handshaking() {
            t.tls.send_close_notify();
        }
        // A few records at most: the caller is closing, so nothing new joins them.
        for _ in 0..8 {
            if !t.tls.wants_write() {
                break;
            }
            match t.tls.write_tls(&mut t.tcp) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp().shutdown(how)
    }

    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp().peer_addr()
    }
}

impl Read for Socket {
    /// Plaintext: from the socket, or decrypted from the TLS records it carries. `Ok(0)` is the
    /// end of input (FIN, or TLS close_notify); `WouldBlock` means nothing more for now.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(tcp) => tcp.read(buf),
            Socket::Tls(t) => t.read(buf),
        }
    }
}

impl TlsSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Plaintext rustls already decrypted goes first: read_tls is only called with
            // none left, so rustls's own plaintext buffer never overflows.
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match self.tls.read_tls(&mut self.tcp) {
                // FIN without close_notify: for HTTP's own framing that is the end of input
                // like any other (a truncated request is incomplete either way).
                Ok(0) => return Ok(0),
                Ok(_) => {
                    // A protocol error (plain HTTP on the TLS port, a bad record) leaves an
                    // alert queued; the caller closes, and `close_notify` writes it.
                    self.tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Registration is the TCP socket's: TLS changes nothing about readiness.
impl Source for Socket {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.tcp_mut().register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.tcp_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp_mut().deregister(registry)
    }
}
