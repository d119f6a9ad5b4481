//! SIGHUP reloads on the real binary, signalled with `kill`: the auth secret of the config file
//! (a token of the old secret is refused with 401 afterwards, one of the new secret publishes)
//! and the TLS certificate (new connections see the new one, an open connection keeps working,
//! a broken key file keeps the current one and says why). Each step waits for the log line that
//! names what changed, read from the child's stderr, never for a fixed time.

mod tls_util;
mod util;

use std::net::SocketAddr;
use std::path::PathBuf;

use halley::auth::{mint_hs256, now_ms, Claims};
use halley::config::Secret;
use tls_util::{CertFiles, TlsClient};
use util::process::Halley;
use util::Client;

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("halley-reload-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8 path").to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn token(secret: &str) -> String {
    let claims =
        Claims { exp: now_ms() / 1000 + 600, sub: None, publish: vec!["/reload/**".into()], subscribe: Vec::new() };
    mint_hs256(&Secret(secret.into()), &claims).expect("mint")
}

/// The status of a publish with `token`.
fn publish_status(addr: SocketAddr, token: &str) -> u16 {
    let mut c = Client::connect(addr);
    c.send_post("/pub/reload/a", b"hi", &format!("Authorization: Bearer {token}\r\n"));
    c.response().status
}

const SECRET_A: &str = "reload-secret-a";
const SECRET_B: &str = "reload-secret-b";

#[test]
fn sighup_swaps_the_auth_secret_of_the_config_file() {
    let dir = Scratch::new("auth");
    let config = dir.file("halley.toml", &format!("log = \"info\"\n[auth]\nsecret = \"{SECRET_A}\"\n"));
    let halley =
        Halley::spawn(&["serve", "--config", &config, "--workers", "1", "--no-pin", "--listen", "127.0.0.1:0"], &[]);
    let addr = halley.addr();
    let (a, b) = (token(SECRET_A), token(SECRET_B));
    assert_eq!(publish_status(addr, &a), 201);
    assert_eq!(publish_status(addr, &b), 401);

    dir.file("halley.toml", &format!("log = \"info\"\n[auth]\nsecret = \"{SECRET_B}\"\n"));
    halley.signal("HUP");
    let line = halley.line_with("SIGHUP: auth:");
    assert!(line.contains("auth.secret changed"), "{line}");
    assert!(!line.contains(SECRET_A) && !line.contains(SECRET_B), "the log names no secret: {line}");
    assert_eq!(publish_status(addr, &a), 401, "the old secret's token");
    assert_eq!(publish_status(addr, &b), 201, "the new secret's token");
}

/// A GET /health over a TLS connection that stays open.
fn health(c: &mut TlsClient) -> u16 {
    c.request("GET /health HTTP/1.1\r\nHost: t\r\n\r\n").status
}

#[test]
fn sighup_swaps_the_certificate_for_new_connections_and_a_broken_key_keeps_it() {
    let first = CertFiles::new("localhost");
    let (cert, key) = (first.cert.to_str().expect("path"), first.key.to_str().expect("path"));
    let args = ["serve", "--tls-cert", cert, "--tls-key", key, "--workers", "1", "--no-pin", "--listen", "127.0.0.1:0"];
    let halley = Halley::spawn(&args, &[]);
    let addr = halley.addr();
    let mut open = TlsClient::connect(addr, &first.ca);
    assert_eq!(health(&mut open), 200);
    let before = open.peer_fingerprint();

    // Renewed in place (another CA, so the old trust cannot pass by accident).
    let second = CertFiles::new("localhost");
    first.replace_with(&second);
    halley.signal("HUP");
    let line = halley.line_with("SIGHUP: TLS certificate:");
    let mut fresh = TlsClient::connect(addr, &second.ca);
    assert_eq!(health(&mut fresh), 200);
    let after = fresh.peer_fingerprint();
    assert_ne!(after, before);
    assert!(line.contains(&before) && line.contains(&after), "the line names both fingerprints: {line}");
    assert!(TlsClient::try_connect(addr, &first.ca).is_err(), "the first CA no longer verifies");
    assert_eq!(health(&mut open), 200, "the open connection keeps working");
    assert_eq!(open.peer_fingerprint(), before);

    // A broken key file: refused with the reason, the second certificate stays.
    std::fs::write(&first.key, "not a key").expect("write");
    halley.signal("HUP");
    let line = halley.line_with("SIGHUP: TLS certificate refused");
    assert!(line.contains("no usable private key"), "{line}");
    let mut later = TlsClient::connect(addr, &second.ca);
    assert_eq!(health(&mut later), 200);
    assert_eq!(later.peer_fingerprint(), after);
    assert_eq!(health(&mut fresh), 200);
}
