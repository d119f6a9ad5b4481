//! Tokens signed with a private key the server never sees (`auth.public_key`): RS256 and ES256
//! keys made by `openssl` (scripts/test.sh installs it), tokens minted with the private key,
//! and the server, holding only the public key, accepts them over a real socket. A token that
//! picks another algorithm, or HS256 with the public key as its "secret" (the classic key
//! confusion), is refused with 401.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use halley::auth::{now_ms, Claims};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use util::TestServer;

/// A fresh directory for one test's keys.
fn key_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("halley-keys-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("key dir");
    dir
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl runs (scripts/test.sh installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A key pair in PEM: (private key PKCS#8, public key SubjectPublicKeyInfo).
fn key_pair(dir: &Path, gen: &[&str]) -> (PathBuf, PathBuf) {
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let private_s = private.to_str().expect("utf-8 path");
    let mut args = vec!["genpkey"];
    args.extend_from_slice(gen);
    args.extend_from_slice(&["-out", private_s]);
    openssl(&args);
    openssl(&["pkey", "-in", private_s, "-pubout", "-out", public.to_str().expect("utf-8 path")]);
    (private, public)
}

fn claims() -> Claims {
    Claims {
        exp: now_ms() / 1000 + 60,
        sub: Some("backend".into()),
        publish: vec!["/orders/*".into()],
        subscribe: vec!["/orders/*".into()],
    }
}

fn publish_status(server: &TestServer, token: &str) -> u16 {
    let mut c = server.client();
    c.send(
        format!(
            "POST /pub/orders/7 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: 2\r\n\r\nhi"
        )
        .as_bytes(),
    );
    c.response().status
}

/// The server with only `public`; a token signed by `key` with `alg` publishes, and the
/// confusions are refused.
fn check(name: &str, alg: Algorithm, key: EncodingKey, public: &Path) {
    let public_key = public.to_path_buf();
    let server = TestServer::with(move |c| c.auth.public_key = Some(public_key));
    let good = jsonwebtoken::encode(&Header::new(alg), &claims(), &key).expect("mint");
    assert_eq!(publish_status(&server, &good), 201, "{name}: a token signed with the private key publishes");

    // The public key is public: a token "signed" with it as an HMAC secret must not pass.
    let pem = std::fs::read(public).expect("public key");
    let confused =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(&pem)).expect("mint");
    assert_eq!(publish_status(&server, &confused), 401, "{name}: HS256 keyed with the public key is refused");

    // The right algorithm, a signature altered in its middle (the last base64url character
    // may carry only padding bits).
    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() - 20;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    assert_eq!(publish_status(&server, &tampered), 401, "{name}: a bad signature is refused");
}

#[test]
fn rs256_tokens_verify_with_the_public_key_only() {
    let dir = key_dir("rsa");
    let (private, public) = key_pair(&dir, &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
    let key = EncodingKey::from_rsa_pem(&std::fs::read(&private).expect("private key")).expect("RSA key");
    check("RS256", Algorithm::RS256, key, &public);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn es256_tokens_verify_with_the_public_key_only() {
    let dir = key_dir("ec");
    let (private, public) = key_pair(&dir, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let key = EncodingKey::from_ec_pem(&std::fs::read(&private).expect("private key")).expect("EC key");
    check("ES256", Algorithm::ES256, key, &public);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_public_key_file_without_a_key_stops_the_start() {
    let dir = key_dir("bad");
    let bad = dir.join("public.pem");
    std::fs::write(&bad, "not a key\n").expect("write");
    let config = {
        let mut c = halley::config::Config::default();
        c.network.listen = "127.0.0.1:0".parse().expect("addr");
        c.auth.public_key = Some(bad);
        c
    };
    let Err(err) = halley::server::start(config) else { panic!("the start is refused") };
    assert!(err.to_string().contains("no RSA or EC public key"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
