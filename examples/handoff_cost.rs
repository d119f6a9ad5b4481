//! Measures what handing a connection to its session's owner costs.
//!
//! Runs Halley in-process with 2 workers, makes one Pushlet session, then sends `hb` control
//! requests for it, each on a fresh connection. The kernel gives each connection to either
//! worker; requests that land on the non-owner are handed over (the socket, the parsed request,
//! through the owner's inbox and `mio::Waker`). Each request is classified by whether the
//! owner's `handoffs_in` counter moved, and the median round trips of the two classes are
//! compared: their difference is the latency one hand-off adds.
//!
//! `cargo run --release --example handoff_cost [requests]`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use halley::config::Config;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests: usize = std::env::args().nth(1).map_or(Ok(4000), |n| n.parse())?;
    let mut config = Config { workers: 2, pin_workers: false, ..Config::default() };
    config.network.listen = "127.0.0.1:0".parse()?;
    let server = halley::server::start(config)?;
    let addr = server.local_addr();
    let join = get(addr, "/pushlet.srv?p_event=join&p_format=xml-strict")?;
    let id = join
        .split("p_id=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or("no p_id in the join-ack")?
        .to_owned();
    let handoffs = |server: &halley::server::Server| -> u64 {
        let stats = server.stats();
        stats["workers"].as_array().map_or(0, |w| w.iter().map(|w| w["handoffs_in"].as_u64().unwrap_or(0)).sum())
    };
    let path = format!("/pushlet.srv?p_event=hb&p_id={id}&p_format=xml-strict");
    // Warm up both workers' code paths.
    for _ in 0..200 {
        get(addr, &path)?;
    }
    let (mut local, mut handed) = (Vec::new(), Vec::new());
    for _ in 0..requests {
        let before = handoffs(&server);
        let started = Instant::now();
        let reply = get(addr, &path)?;
        let took = started.elapsed();
        if !reply.contains("hb-ack") {
            return Err(format!("unexpected reply: {reply}").into());
        }
        if handoffs(&server) > before {
            handed.push(took)
        } else {
            local.push(took)
        }
    }
    server.shutdown();
    let (l, h) = (median(&mut local), median(&mut handed));
    println!("requests={requests} local={} handed_over={}", local.len(), handed.len());
    println!("median round trip: owner worker {:.1} us, other worker (handed over) {:.1} us", micros(l), micros(h));
    println!("cost of one hand-off: {:.1} us of latency", micros(h.saturating_sub(l)));
    Ok(())
}

/// One request on a fresh connection, read to the end (the reply closes the connection).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
