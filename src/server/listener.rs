//! Listening sockets: one `SO_REUSEPORT` listener per worker, so the kernel spreads new
//! connections across workers without any user-space hand-off.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `count` listeners on `addr` with `SO_REUSEPORT`.
///
/// When `addr` has port 0 the first listener picks a free port and the others bind to that
/// same port (each `bind(…:0)` would otherwise get a different one).
///
/// An address something else already listens on is refused, not shared: `SO_REUSEPORT` would
/// let a second Halley (same user) join the port silently, and the kernel would then split the
/// clients, and the message space, between two servers that know nothing of each other.
pub fn bind_all(addr: SocketAddr, count: usize, backlog: u32) -> io::Result<Vec<mio::net::TcpListener>> {
    if addr.port() != 0 {
        ensure_unused(addr)?;
    }
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let listener = bind_one(addr, backlog)?;
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Fails with `AddrInUse` and a one-line reason when a socket is already bound to `addr`: a
/// probe bound without `SO_REUSEPORT` cannot share the port with anyone. (Two servers started at
/// the same instant can both pass; from the moment one is bound, the other is refused.)
fn ensure_unused(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Connections of an earlier run in TIME_WAIT do not count as a listener.
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr} is already in use by another process (another halley?); refusing to share it"),
        )),
        other => other,
    }
}

fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // The kernel caps the backlog at net.core.somaxconn; asking for more is harmless.
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}
