//! The deployment kit in `deploy/` and `halley check-config`'s TOML, on the real binary:
//! check-config's output is a config file that reads back to the same configuration;
//! `deploy/halley.toml` lists every option the configuration knows (taken from check-config,
//! which writes each one) in its table, and check-config accepts it; the systemd unit passes
//! `systemd-analyze verify` with no complaint and has what the issue asks of it. The
//! Dockerfile is not built here (no Docker daemon on the test machine).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `halley check-config ARGS` with no HALLEY_* or RUST_LOG from the caller's environment.
fn check_config(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_halley"));
    cmd.arg("check-config").args(args).env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("HALLEY_") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run halley check-config")
}

fn stdout_ok(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

/// Every option in check-config's output, as (table, key); `None` for the top level.
fn options(text: &str) -> Vec<(Option<String>, String)> {
    let mut table = None;
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = Some(name.to_owned());
        } else if let Some((key, _)) = line.split_once(" = ") {
            out.push((table.clone(), key.to_owned()));
        } else if let Some(key) = line.strip_prefix("# ").and_then(|l| l.strip_suffix(" is not set")) {
            out.push((table.clone(), key.to_owned()));
        }
    }
    out
}

#[test]
fn check_config_output_reads_back_as_the_same_configuration() {
    let first = stdout_ok(&check_config(&[
        "--workers",
        "3",
        "--history-age",
        "1d",
        "--max-body",
        "3MiB",
        "--history-bytes",
        "4MiB",
        "--header-timeout",
        "2.5",
        "--cors-origins",
        "https://a.example,http://b.example:8080",
        "--client-publish",
        "",
        "--admin-listen",
        "127.0.0.1:9090",
        "--access-log",
        "-",
        "--no-web",
    ]));
    assert!(first.contains("max_body = \"3MiB\""), "{first}");
    let dir = std::env::temp_dir().join(format!("halley-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("effective.toml");
    std::fs::write(&file, &first).expect("write");
    let second = stdout_ok(&check_config(&["--config", file.to_str().expect("path")]));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(first, second);
}

#[test]
fn the_example_file_lists_every_option_and_is_accepted() {
    let example = repo("deploy/halley.toml");
    let text = std::fs::read_to_string(&example).expect("deploy/halley.toml");
    let known = options(&stdout_ok(&check_config(&[])));
    assert!(known.len() > 40, "{known:?}");
    // Where each key appears in the example: `key = ...` or `# key = ...`, under its table.
    let mut table: Option<String> = None;
    let mut listed = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = Some(name.to_owned());
            continue;
        }
        let entry = line.strip_prefix("# ").unwrap_or(line);
        if let Some((key, _)) = entry.split_once(" = ") {
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                listed.push((table.clone(), key.to_owned()));
            }
        }
    }
    for option in &known {
        assert!(listed.contains(option), "deploy/halley.toml does not list {option:?}");
    }
    stdout_ok(&check_config(&["--config", example.to_str().expect("path")]));
}

#[test]
fn the_systemd_unit_verifies_and_has_what_operators_expect() {
    let unit = std::fs::read_to_string(repo("deploy/halley.service")).expect("deploy/halley.service");
    for line in [
        "LimitNOFILE=1048576",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
    // systemd-analyze checks that the binary exists: point the unit at the one just built.
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        panic!("systemd-analyze is missing: apt-get install -y --no-install-recommends systemd");
    }
    let dir = std::env::temp_dir().join(format!("halley-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("halley.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/halley", env!("CARGO_BIN_EXE_halley"))).expect("write");
    let output = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // verify exits 0 on directives it ignores, and says so on stderr: both must be clean.
    let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains("halley.service")).collect();
    assert!(output.status.success() && complaints.is_empty(), "{stderr}");
}
