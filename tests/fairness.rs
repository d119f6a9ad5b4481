//! One client cannot monopolise a worker: a connection that keeps sending pipelined requests
//! and reading the answers as fast as the server serves them gets a bounded share of each loop
//! turn (`io::pump`'s round limit), so another client on the same worker is still answered,
//! and a graceful shutdown still finishes.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::TestServer;

#[test]
fn a_client_that_never_stops_sending_does_not_starve_the_others_on_its_worker() {
    let mut server = TestServer::with(|c| c.workers = 1);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = TcpStream::connect(server.addr).expect("connect");
    busy.set_nodelay(true).expect("nodelay");
    let mut reader = busy.try_clone().expect("clone");
    reader.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let read_stop = Arc::clone(&stop);
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        while !read_stop.load(Ordering::Relaxed) {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(_) => {}
            }
        }
        total
    });
    let write_stop = Arc::clone(&stop);
    let mut writer = busy;
    let flood = thread::spawn(move || {
        let batch = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n".repeat(64);
        while !write_stop.load(Ordering::Relaxed) {
            if writer.write_all(&batch).is_err() {
                break;
            }
        }
    });
    // Let the flood get going: wait until the server has answered a good number of requests.
    let deadline = Instant::now() + util::WAIT;
    while server.worker_total("requests") < 20_000 {
        assert!(Instant::now() < deadline, "the flood did not get going");
        thread::sleep(Duration::from_millis(5));
    }
    // Another client on the same (only) worker is answered while the flood goes on.
    let mut rtts = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut c = server.client();
        assert_eq!(c.get("/health").status, 200);
        rtts.push(started.elapsed());
    }
    rtts.sort();
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood");
    let answered = drain.join().expect("drain");
    assert!(answered > 0);
    assert!(rtts[2] < Duration::from_secs(1), "median round trip beside the flood: {:?}", rtts[2]);
    server.shutdown();
}
