//! JSON Web Tokens: verifying a client's token with the configured keys (HS256 with the shared
//! secret; RS256 or ES256 with the PEM public key, so the application minting tokens keeps its
//! private key), and minting HS256 tokens for `halley token`. The `jsonwebtoken` crate does the
//! cryptography and the standard checks; this file decides which algorithms are accepted and
//! reads Halley's claims.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Denied, TokenGrant};
use crate::config::Secret;
use crate::model::Selector;

/// Most patterns a token may list in `publish` or `subscribe`: a token is a request header, and
/// every check walks its lists.
pub const MAX_TOKEN_PATTERNS: usize = 256;

/// The claims Halley reads. `exp` is required (checked by the crate as well).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch (required: a token without one is refused).
    #[serde(default)]
    pub exp: u64,
    /// Who the token is for, shown in logs and as a Pushlet sender if the application wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Topic patterns the holder may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic patterns the holder may subscribe to (a subscription must be covered whole).
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// The keys tokens are checked with.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    /// The public key and the one algorithm it is used with.
    public: Option<(DecodingKey, Algorithm)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let public = self.public.as_ref().map(|(_, alg)| *alg);
        f.debug_struct("Verifier").field("hs256", &self.hmac.is_some()).field("public", &public).finish()
    }
}

impl Verifier {
    /// Keys from the secret and the public key file; an error names what is wrong with the key
    /// (never its content).
    pub fn new(secret: Option<&Secret>, public_key: Option<&Path>) -> Result<Verifier, String> {
        let hmac = secret.map(|s| DecodingKey::from_secret(s.0.as_bytes()));
        let public = match public_key {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let key = match DecodingKey::from_rsa_pem(&pem) {
                    Ok(key) => (key, Algorithm::RS256),
                    Err(_) => match DecodingKey::from_ec_pem(&pem) {
                        Ok(key) => (key, Algorithm::ES256),
                        Err(_) => {
                            return Err(format!(
                                "{} holds no RSA or EC public key in PEM form (BEGIN PUBLIC KEY)",
                                path.display()
                            ))
                        }
                    },
                };
                Some(key)
            }
        };
        Ok(Verifier { hmac, public })
    }

    /// Checks the signature, the algorithm (only the configured ones: a token cannot pick HS256
    /// to be checked against the public key, nor `none`), the expiry against `now_secs`, and
    /// the claims' shape; the rights it grants, its patterns parsed.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<TokenGrant, Denied> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Denied::BadToken("malformed token"))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hmac.as_ref(),
            alg => self.public.as_ref().filter(|(_, want)| *want == alg).map(|(key, _)| key),
        };
        let Some(key) = key else { return Err(Denied::BadToken("token algorithm not accepted here")) };
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        // Expiry is checked below against the server's own clock (the one its timers use).
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            Denied::BadToken(match e.kind() {
                ErrorKind::InvalidSignature => "token signature does not verify",
                ErrorKind::MissingRequiredClaim(_) => "token has no exp claim",
                ErrorKind::Json(_) => "token claims are not valid (exp, sub, publish, subscribe)",
                _ => "token is not valid",
            })
        })?;
        let claims = data.claims;
        if claims.exp == 0 {
            return Err(Denied::BadToken("token has no exp claim"));
        }
        if claims.exp <= now_secs {
            return Err(Denied::Expired);
        }
        if claims.publish.len() > MAX_TOKEN_PATTERNS || claims.subscribe.len() > MAX_TOKEN_PATTERNS {
            return Err(Denied::BadToken("token lists too many patterns"));
        }
        let parse = |list: &[String]| -> Result<Vec<Selector>, Denied> {
            list.iter()
                .map(|p| Selector::parse(p).map_err(|_| Denied::BadToken("token holds an invalid pattern")))
                .collect()
        };
        Ok(TokenGrant {
            sub: claims.sub.map(Into::into),
            expires_ms: claims.exp.saturating_mul(1000),
            publish: parse(&claims.publish)?,
            subscribe: parse(&claims.subscribe)?,
        })
    }
}

/// An HS256 token with these claims (for `halley token` and tests).
pub fn mint_hs256(secret: &Secret, claims: &Claims) -> Result<String, String> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.0.as_bytes()))
        .map_err(|e| format!("cannot sign the token: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims { exp, sub: Some("ann".into()), publish: vec!["/chat/**".into()], subscribe: vec!["/news/*".into()] }
    }

    #[test]
    fn a_minted_token_verifies_with_its_secret_only() {
        let secret = Secret("s3cret".into());
        let token = mint_hs256(&secret, &claims(2_000)).expect("mint");
        let verifier = Verifier::new(Some(&secret), None).expect("verifier");
        let ok = verifier.verify(&token, 1_000).expect("valid");
        assert_eq!(ok.sub.as_deref(), Some("ann"));
        assert_eq!(ok.publish[0].as_str(), "/chat/**");
        assert!(matches!(verifier.verify(&token, 2_000), Err(Denied::Expired)));
        let other = Verifier::new(Some(&Secret("other".into())), None).expect("verifier");
        assert!(matches!(other.verify(&token, 1_000), Err(Denied::BadToken(_))));
        assert!(matches!(verifier.verify("not.a.token", 1_000), Err(Denied::BadToken(_))));
    }

    #[test]
    fn only_configured_algorithms_and_valid_claims_pass() {
        let secret = Secret("s3cret".into());
        // No secret configured: an HS256 token is refused whatever its signature.
        let token = mint_hs256(&secret, &claims(2_000)).expect("mint");
        let none = Verifier { hmac: None, public: None };
        assert!(matches!(none.verify(&token, 1_000), Err(Denied::BadToken("token algorithm not accepted here"))));
        // A pattern that is no pattern makes the token invalid, not a narrower grant.
        let bad = Claims { subscribe: vec!["chat".into()], ..claims(2_000) };
        let token = mint_hs256(&secret, &bad).expect("mint");
        let verifier = Verifier::new(Some(&secret), None).expect("verifier");
        assert!(matches!(verifier.verify(&token, 1_000), Err(Denied::BadToken(_))));
        // No exp at all.
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "x"}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .expect("encode");
        assert!(matches!(verifier.verify(&no_exp, 1_000), Err(Denied::BadToken("token has no exp claim"))));
    }
}
