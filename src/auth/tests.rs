//! The policy's decisions: 401 vs 403, public patterns, the loopback rule with auth off,
//! coverage of patterns, reload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::config::Secret;

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn on(public_subscribe: &[&str]) -> config::Auth {
    config::Auth {
        secret: Some(Secret("s3cret".into())),
        public_subscribe: public_subscribe.iter().map(|s| (*s).to_owned()).collect(),
        ..config::Auth::default()
    }
}

fn token(exp_in_secs: i64, publish: &[&str], subscribe: &[&str]) -> String {
    let exp = (now_ms() / 1000) as i64 + exp_in_secs;
    let claims = Claims {
        exp: exp.max(0) as u64,
        sub: Some("ann".into()),
        publish: publish.iter().map(|s| (*s).to_owned()).collect(),
        subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
    };
    mint_hs256(&Secret("s3cret".into()), &claims).expect("mint")
}

#[test]
fn loopback_is_all_of_127_8_and_ipv6_loopback_and_mapped() {
    assert!(is_loopback(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))));
    assert!(is_loopback(IpAddr::V4(Ipv4Addr::new(127, 9, 8, 7))));
    assert!(is_loopback(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert!(is_loopback("::ffff:127.0.0.2".parse().expect("ip")));
    assert!(!is_loopback(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
    assert!(!is_loopback(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2))));
    assert!(!is_loopback("::ffff:10.0.0.1".parse().expect("ip")));
    assert!(!is_loopback("2001:db8::1".parse().expect("ip")));
}

#[test]
fn with_auth_off_anyone_reads_and_only_loopback_publishes() {
    let policy = Policy::new(&config::Auth::default()).expect("policy");
    assert!(!policy.is_on());
    let remote = policy.resolve(None, Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)))).expect("grant");
    let local = policy.resolve(Some("ignored"), Some(IpAddr::V4(Ipv4Addr::LOCALHOST))).expect("grant");
    assert_eq!(policy.may_subscribe(&remote, &[sel("/**")]), Ok(()));
    assert_eq!(policy.may_publish(&remote, "/a"), Err(Denied::LoopbackOnly));
    assert_eq!(Reject::from(Denied::LoopbackOnly).status, 403);
    assert_eq!(policy.may_publish(&local, "/a"), Ok(()));
    // No peer address known (a socket already gone): not loopback.
    assert_eq!(policy.may_publish(&policy.resolve(None, None).expect("grant"), "/a"), Err(Denied::LoopbackOnly));
    // A grant made while auth was on (or a default one) proves nothing about the peer: a SIGHUP
    // that turns auth off must not let it publish from anywhere.
    assert_eq!(policy.may_publish(&Grant::Anonymous, "/a"), Err(Denied::LoopbackOnly));
}

#[test]
fn no_token_is_401_a_token_that_does_not_cover_is_403() {
    let policy = Policy::new(&on(&["/public/**"])).expect("policy");
    let anonymous = policy.resolve(None, None).expect("grant");
    assert_eq!(policy.may_subscribe(&anonymous, &[sel("/public/a"), sel("/public/*")]), Ok(()));
    let denied = policy.may_subscribe(&anonymous, &[sel("/chat/a")]).expect_err("no token");
    let reject = Reject::from(denied);
    assert_eq!(reject.status, 401);
    assert!(reject.headers.iter().any(|(n, v)| *n == "WWW-Authenticate" && v.starts_with("Bearer")));
    assert_eq!(policy.may_publish(&anonymous, "/public/a").map_err(|d| d.status()), Err(401));

    let grant = policy.resolve(Some(&token(60, &["/chat/*"], &["/chat/**"])), None).expect("grant");
    assert_eq!(grant.sub(), Some("ann"));
    assert_eq!(policy.may_subscribe(&grant, &[sel("/chat/a"), sel("/chat/**"), sel("/public/x")]), Ok(()));
    let wider = policy.may_subscribe(&grant, &[sel("/chat/a"), sel("/**")]).expect_err("not covered");
    assert_eq!(wider.status(), 403);
    assert_eq!(wider.reason(), "the token does not allow to subscribe to /**");
    assert_eq!(policy.may_publish(&grant, "/chat/a"), Ok(()));
    assert_eq!(policy.may_publish(&grant, "/chat/a/b").map_err(|d| d.status()), Err(403));
}

#[test]
fn bad_and_expired_tokens_are_401_and_never_echoed() {
    let policy = Policy::new(&on(&["/**"])).expect("policy");
    let forged = token(60, &["/**"], &["/**"]).replace('.', ".x");
    let bad = policy.resolve(Some(&forged), None).expect_err("bad");
    let expired = policy.resolve(Some(&token(-5, &["/**"], &["/**"])), None).expect_err("expired");
    assert_eq!(expired, Denied::Expired);
    for denied in [bad, expired] {
        let reject = Reject::from(denied);
        assert_eq!(reject.status, 401);
        assert!(!reject.reason.contains("eyJ"), "{}", reject.reason);
        let challenge =
            reject.header_pairs().iter().find(|(n, _)| *n == "WWW-Authenticate").map(|(_, v)| v.to_string());
        assert!(challenge.is_some_and(|c| c.contains("error=\"invalid_token\"")));
    }
}

#[test]
fn a_grant_checked_after_its_expiry_is_refused() {
    let policy = Policy::new(&on(&[])).expect("policy");
    let grant = policy.resolve(Some(&token(60, &["/a"], &["/a"])), None).expect("grant");
    let Grant::Token(inner) = &grant else { panic!("{grant:?}") };
    let stale = Grant::Token(Arc::new(TokenGrant {
        sub: None,
        expires_ms: now_ms() - 1,
        publish: inner.publish.clone(),
        subscribe: inner.subscribe.clone(),
    }));
    assert_eq!(policy.may_subscribe(&stale, &[sel("/a")]), Err(Denied::Expired));
    assert_eq!(policy.may_publish(&stale, "/a"), Err(Denied::Expired));
}

#[test]
fn reload_replaces_the_policy_and_says_what_changed() {
    let auth = Auth::new(&config::Auth::default()).expect("auth");
    assert!(!auth.current().is_on());
    let changes = auth.reload(&on(&["/news/**"])).expect("reload");
    assert!(auth.current().is_on());
    assert!(changes.contains(&"auth.secret changed".to_owned()), "{changes:?}");
    assert!(changes.iter().any(|c| c.starts_with("auth.public_subscribe")), "{changes:?}");
    assert!(changes.iter().all(|c| !c.contains("s3cret")), "{changes:?}");
    let bad = config::Auth { public_key: Some("/nonexistent/key.pem".into()), ..on(&[]) };
    assert!(auth.reload(&bad).is_err());
    assert!(auth.current().is_on(), "a failed reload keeps the old policy");
    assert_eq!(auth.reload(&on(&["/news/**"])).expect("same"), Vec::<String>::new());
}
