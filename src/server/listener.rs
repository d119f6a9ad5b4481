//! Listening sockets: one `SO_REUSEPORT` listener per worker, so the kernel spreads new
//! connections across workers without any user-space hand-off.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `count` listeners on `addr` with `SO_REUSEPORT`.
///
/// When `addr` has port 0 the first listener picks a free port and the others bind to that
/// same port (each `bind(…:0)` would otherwise get a different one).
pub fn bind_all(addr: SocketAddr, count: usize, backlog: u32) -> io::Result<Vec<mio::net::TcpListener>> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let listener = bind_one(addr, backlog)?;
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
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
