//! Socket set-up shared by the event loops: loopback-only targets, non-blocking connects bound
//! to a chosen 127.0.0.x source address, and the process's open-file limit.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// File descriptors a process keeps for itself (stdio, epoll, wakers, pipes) beyond sockets.
pub const RESERVED_FDS: u64 = 100;

/// Resolve `spec` and insist that every address it names is loopback (127.0.0.0/8 or ::1):
/// halley-load never sends load anywhere else.
pub fn loopback_target(spec: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> =
        spec.to_socket_addrs().map_err(|e| format!("cannot resolve target {spec:?}: {e}"))?.collect();
    let Some(first) = addrs.first().copied() else {
        return Err(format!("target {spec:?} resolves to nothing"));
    };
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "refusing non-loopback target {bad} (from {spec:?}): halley-load only loads 127.0.0.0/8 and ::1"
        ));
    }
    Ok(first)
}

/// The source address for subscriber `index`: 127.0.0.1 ..= 127.0.0.`count`, round-robin, so
/// no single address runs out of ephemeral ports.
pub fn source_addr(index: u32, count: u8) -> Ipv4Addr {
    let count = u32::from(count.max(1));
    Ipv4Addr::new(127, 0, 0, 1 + (index % count) as u8)
}

/// Start a non-blocking connect from `source` (any port) to `target`.
/// The connect completes when the stream becomes writable; check `take_error` then.
pub fn connect_from(source: Option<Ipv4Addr>, target: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let domain = Domain::for_address(target);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let (Some(src), IpAddr::V4(_)) = (source, target.ip()) {
        // Let connect() pick the port per 4-tuple instead of reserving one per source address
        // at bind time (Linux IP_BIND_ADDRESS_NO_PORT); best effort on older kernels.
        let _ = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true);
        socket.bind(&SockAddr::from(SocketAddr::new(IpAddr::V4(src), 0)))?;
    }
    match socket.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// A process's open-file limit (`RLIMIT_NOFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    pub soft: u64,
    pub hard: u64,
}

/// Raise the soft open-file limit to the hard one and return the limit now in force; sockets
/// per process must stay below its soft value (minus [`RESERVED_FDS`]). Children inherit it.
pub fn raise_nofile() -> NoFile {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                NoFile { soft: hard, hard }
            } else {
                NoFile { soft, hard }
            }
        }
        Err(_) => NoFile { soft: 1024, hard: 1024 },
    }
}

/// Did a socket call fail because the process or the system ran out of file descriptors?
pub fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(loopback_target("127.0.0.1:8080").is_ok());
        assert!(loopback_target("127.9.9.9:1").is_ok());
        assert!(loopback_target("[::1]:80").is_ok());
        assert!(loopback_target("10.0.0.1:80").is_err());
        assert!(loopback_target("192.168.1.1:80").is_err());
        assert!(loopback_target("8.8.8.8:53").is_err());
        assert!(loopback_target("not an address").is_err());
    }

    #[test]
    fn sources_rotate_over_the_range() {
        assert_eq!(source_addr(0, 4), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_addr(3, 4), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(source_addr(4, 4), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_addr(9, 0), Ipv4Addr::new(127, 0, 0, 1));
    }

    #[test]
    fn connects_from_a_chosen_source() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = listener.local_addr().expect("addr");
        let stream = connect_from(Some(Ipv4Addr::new(127, 0, 0, 3)), target).expect("connect");
        let (_peer, from) = listener.accept().expect("accept");
        assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        drop(stream);
    }
}
