//! SIGHUP: apply the settings that can change while the server runs, from a configuration read
//! anew (the file and the environment, under the same flags).
//!
//! Each setting that reloads is one [`Step`] in [`STEPS`]: `check` compares what runs with the
//! new configuration, says what would change, and may refuse (a certificate that does not
//! load, a key that does not parse); `apply` puts it in force. Every step is checked before any
//! is applied, so a bad file changes nothing: the error is logged and the old settings stay.
//! Key and certificate files are re-read on every SIGHUP even when their paths did not change
//! (that is how a renewed certificate or a rotated key is taken). Everything else needs a
//! restart, and a reload that finds such a change says which options it ignored.

use std::sync::atomic::Ordering::Release;
use std::sync::{Arc, PoisonError};

use log::{error, info, warn};

use super::Shared;
use crate::config::{logging, Config};

/// One setting that reloads.
pub(crate) struct Step {
    /// What the log calls it.
    pub name: &'static str,
    /// `Ok(Some(what changed))`, `Ok(None)` if nothing did, or why the new value is refused;
    /// given what runs (`Shared`, and the configuration it was started or last reloaded with).
    pub check: fn(&Shared, &Config, &Config) -> Result<Option<String>, String>,
    /// Puts the new value in force; called only after every step's check passed.
    pub apply: fn(&Shared, &Config),
}

/// Every setting SIGHUP applies, in order.
pub(crate) const STEPS: &[Step] = &[
    Step { name: "log filter", check: |_, current, new| log_check(current, new), apply: log_apply },
    Step { name: "CORS origins", check: |_, current, new| cors_check(current, new), apply: cors_apply },
    Step { name: "auth", check: auth_check, apply: auth_apply },
    Step { name: "TLS certificate", check: tls_check, apply: tls_apply },
];

/// One reload: `load` re-reads the configuration; `current` is what runs, and becomes the new
/// configuration (with its restart-only options as they were) when the reload succeeds.
/// Never fails the server: errors are logged.
pub(crate) fn reload(shared: &Shared, current: &mut Config, load: &dyn Fn() -> Result<Config, String>) {
    let new = match load() {
        Ok(new) => new,
        Err(e) => return error!("SIGHUP: configuration not reloaded, the old settings stay: {e}"),
    };
    let mut changes = Vec::new();
    for step in STEPS {
        match (step.check)(shared, current, &new) {
            Ok(Some(change)) => changes.push((step, change)),
            Ok(None) => {}
            Err(e) => return error!("SIGHUP: {} refused, nothing reloaded, the old settings stay: {e}", step.name),
        }
    }
    let ignored = needs_restart(current, &new);
    if !ignored.is_empty() {
        warn!("SIGHUP: changed options that need a restart, not applied: {}", ignored.join(", "));
    }
    if changes.is_empty() {
        return info!("SIGHUP: configuration reloaded; nothing that reloads has changed");
    }
    for (step, change) in &changes {
        (step.apply)(shared, &new);
        info!("SIGHUP: {}: {change}", step.name);
    }
    current.log = new.log;
    current.access.cors_origins = new.access.cors_origins;
    current.access.cors_publish_origins = new.access.cors_publish_origins;
    current.auth = new.auth;
}

/// The sections and options of `new` that differ from `current` beyond what reloads.
fn needs_restart(current: &Config, new: &Config) -> Vec<&'static str> {
    let mut same = new.clone();
    same.log.clone_from(&current.log);
    same.access.cors_origins.clone_from(&current.access.cors_origins);
    same.access.cors_publish_origins.clone_from(&current.access.cors_publish_origins);
    same.auth.clone_from(&current.auth);
    let differs = [
        ("workers", same.workers != current.workers),
        ("no-pin", same.pin_workers != current.pin_workers),
        ("log-format", same.log_format != current.log_format),
        ("state-dir", same.state_dir != current.state_dir),
        ("access-log", same.access_log != current.access_log),
        ("[network]", same.network != current.network),
        ("[http]", same.http != current.http),
        ("[timeouts]", same.timeouts != current.timeouts),
        ("[longpoll]", same.longpoll != current.longpoll),
        ("[history]", same.history != current.history),
        ("[streams]", same.streams != current.streams),
        ("[sessions]", same.sessions != current.sessions),
        ("client-publish, trusted-proxies", same.access != current.access),
        ("[web]", same.web != current.web),
        ("[tls] paths (turning TLS on or off, or other files)", same.tls != current.tls),
    ];
    differs.into_iter().filter(|(_, differs)| *differs).map(|(name, _)| name).collect()
}

fn log_check(current: &Config, new: &Config) -> Result<Option<String>, String> {
    Ok((current.log != new.log).then(|| format!("{:?} -> {:?}", current.log, new.log)))
}

fn log_apply(_: &Shared, new: &Config) {
    if !logging::set_filter(&new.log) {
        warn!("SIGHUP: no reloadable logger installed; the log filter stays");
    }
}

fn cors_check(current: &Config, new: &Config) -> Result<Option<String>, String> {
    let (old, new) = (&current.access, &new.access);
    let changed = old.cors_origins != new.cors_origins || old.cors_publish_origins != new.cors_publish_origins;
    Ok(changed.then(|| {
        format!(
            "cors-origins {:?} -> {:?}, cors-publish-origins {:?} -> {:?}",
            old.cors_origins, new.cors_origins, old.cors_publish_origins, new.cors_publish_origins
        )
    }))
}

fn cors_apply(shared: &Shared, new: &Config) {
    let mut access = (**shared.access.read().unwrap_or_else(PoisonError::into_inner)).clone();
    access.cors_origins.clone_from(&new.access.cors_origins);
    access.cors_publish_origins.clone_from(&new.access.cors_publish_origins);
    *shared.access.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(access);
    shared.access_generation.fetch_add(1, Release);
    // Workers take the new lists on their next loop turn; wake them so it is now.
    for peer in &shared.peers {
        let _ = peer.waker.wake();
    }
}

/// The token policy, its key or secret files read again: refused when they no longer load.
fn auth_check(shared: &Shared, _: &Config, new: &Config) -> Result<Option<String>, String> {
    let trial = crate::auth::Policy::new(&new.auth)?;
    let changes = shared.auth.current().changes_to(&trial);
    Ok((!changes.is_empty()).then(|| changes.join("; ")))
}

fn auth_apply(shared: &Shared, new: &Config) {
    // The files were read by the check a moment ago; one that broke since keeps the old policy.
    if let Err(e) = shared.auth.reload(&new.auth) {
        error!("SIGHUP: auth: {e}; the old keys stay");
    }
}

/// The certificate and key, read again from the same paths (new paths need a restart):
/// refused when they no longer load; a change is named by the certificates' fingerprints.
fn tls_check(shared: &Shared, _: &Config, new: &Config) -> Result<Option<String>, String> {
    let (Some(cell), Some(paths)) = (&shared.tls, &new.tls) else { return Ok(None) };
    let trial = super::tls::TlsCell::load(paths).map_err(|e| e.to_string())?;
    let (old, new) = (cell.fingerprint(), trial.fingerprint());
    Ok((old != new).then(|| format!("sha1 {old} -> {new}")))
}

fn tls_apply(shared: &Shared, _: &Config) {
    if let Some(cell) = &shared.tls {
        if let Err(e) = cell.reload() {
            error!("SIGHUP: TLS certificate: {e}; the old certificate stays");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_changes_are_named_and_reloadable_ones_are_not() {
        let current = Config::default();
        let mut new = current.clone();
        new.log = "debug".into();
        new.access.cors_origins = vec!["https://a.test".into()];
        assert!(needs_restart(&current, &new).is_empty());
        assert!(log_check(&current, &new).expect("ok").is_some());
        assert!(cors_check(&current, &new).expect("ok").is_some());
        new.workers += 1;
        new.http.max_body += 1;
        new.access.client_publish.clear();
        assert_eq!(needs_restart(&current, &new), ["workers", "[http]", "client-publish, trusted-proxies"]);
    }
}
