//! JWT bearer authentication for the chat surfaces (seed 004).
//!
//! Tokens are HS256 only, signed with the shared secret `VOXGATE_JWT_SECRET` (`config.chat.jwt_secret`),
//! and carry the user id in `sub`. The validation is deliberately narrow:
//! - exactly one accepted algorithm (HS256), so `alg: none`, `HS512` or an RSA header are refused before
//!   any signature check;
//! - `exp` and `sub` are required; `exp` and `nbf` must be numbers (jsonwebtoken >= 10.3 refuses a
//!   wrongly typed `exp` instead of skipping the check);
//! - `nbf` is checked when present;
//! - a small leeway ([`CLOCK_LEEWAY_SECS`]) absorbs clock skew between the issuer and us.
//!
//! This module knows nothing of HTTP: the surfaces turn an [`AuthError`] into their own error shape.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const CLOCK_LEEWAY_SECS: u64 = 30;

/// Longest accepted token, in bytes: a bound on the work an unauthenticated client can ask for.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims voxgate reads from a token. Other claims are ignored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not-before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued-at, seconds since the Unix epoch (informative only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Why a token was refused. The `Display` text is safe to show to the client: it names the problem,
/// never the secret or the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header (or `token` query parameter on the WebSocket).
    #[error("missing bearer token")]
    Missing,
    /// The `Authorization` header is not of the form `Bearer <token>`.
    #[error("authorization header must be 'Bearer <token>'")]
    NotBearer,
    /// The token is not a well-formed JWT (bad base64, bad JSON, wrong number of parts, too long).
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than HS256 (including `none`).
    #[error("token algorithm not accepted (only HS256)")]
    Algorithm,
    /// The signature does not match.
    #[error("invalid token signature")]
    Signature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// A required claim is absent, or present with a type the library cannot read (a string `exp`).
    #[error("missing or malformed required claim '{0}'")]
    MissingClaim(String),
    /// A claim has the wrong type or an unusable value.
    #[error("invalid claim '{0}'")]
    InvalidClaim(String),
}

/// Verifies HS256 tokens against one secret. Cheap to share (`Arc`) and to call concurrently.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never print it.
        f.debug_struct("JwtVerifier").finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = CLOCK_LEEWAY_SECS;
        // voxgate tokens carry no audience; a token that has one is still ours if the signature holds.
        validation.validate_aud = false;
        JwtVerifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Checks `token` and returns its claims.
    ///
    /// # Errors
    /// An [`AuthError`] naming the first problem found.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
            .map_err(|error| map_error(error.kind()))?;
        // The library has validated presence and types of `exp`/`nbf` and the presence of `sub`;
        // the typed view below catches a `sub` that is present but not a usable string.
        let claims: Claims = serde_json::from_value(data.claims).map_err(|error| {
            let text = error.to_string();
            if text.contains("`sub`") || text.contains("string") {
                AuthError::InvalidClaim("sub".into())
            } else {
                AuthError::InvalidClaim("exp".into())
            }
        })?;
        if claims.sub.trim().is_empty() || claims.sub.len() > 256 {
            return Err(AuthError::InvalidClaim("sub".into()));
        }
        Ok(claims)
    }

    /// Reads the token from an `Authorization` header value and verifies it.
    ///
    /// # Errors
    /// [`AuthError::Missing`] for `None`, [`AuthError::NotBearer`] for another scheme, else as [`Self::verify`].
    pub fn verify_authorization(&self, header: Option<&str>) -> Result<Claims, AuthError> {
        let header = header
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .ok_or(AuthError::Missing)?;
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        self.verify(token.trim())
    }
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::Signature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        ErrorKind::InvalidClaimFormat(claim) => AuthError::InvalidClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthError::Algorithm,
        // A header whose `alg` is not a known algorithm (such as "none") fails to deserialize.
        ErrorKind::Json(error) if error.to_string().contains("variant") => AuthError::Algorithm,
        _ => AuthError::Malformed,
    }
}

/// Signs an HS256 token for `sub` valid for `ttl_secs` from now: used by tests and the ops CLI to mint
/// tokens for a configured secret.
///
/// # Errors
/// Only if the signing backend fails, which HS256 with a byte secret does not do in practice.
pub fn sign_hs256(
    secret: &[u8],
    sub: &str,
    ttl_secs: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: sub.to_owned(),
        exp: now + ttl_secs,
        nbf: None,
        iat: Some(now),
    };
    sign_claims(secret, &claims)
}

/// Signs arbitrary JSON claims with HS256 (tests use it to build malformed-but-signed tokens).
///
/// # Errors
/// As [`sign_hs256`].
pub fn sign_claims<T: Serialize>(
    secret: &[u8],
    claims: &T,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"unit-test-secret";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    /// Base64url without padding, written out to avoid a dependency for one test helper.
    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn check(token: &str, expected: Result<&str, AuthError>) {
        let verifier = JwtVerifier::new(SECRET);
        let got = verifier.verify(token).map(|claims| claims.sub);
        assert_eq!(got.as_deref().map_err(Clone::clone), expected);
    }

    #[test]
    fn valid_token_yields_subject() {
        check(&sign_hs256(SECRET, "alice", 60).unwrap(), Ok("alice"));
    }

    #[test]
    fn refusals_name_the_problem() {
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(format!(r#"{{"sub":"alice","exp":{}}}"#, now() + 60).as_bytes())
        );
        check(&unsigned, Err(AuthError::Algorithm));
        check(
            &sign_hs256(b"other", "alice", 60).unwrap(),
            Err(AuthError::Signature),
        );
        let expired = serde_json::json!({"sub": "alice", "exp": now() - 3600});
        check(
            &sign_claims(SECRET, &expired).unwrap(),
            Err(AuthError::Expired),
        );
        let future = serde_json::json!({"sub": "alice", "exp": now() + 7200, "nbf": now() + 3600});
        check(
            &sign_claims(SECRET, &future).unwrap(),
            Err(AuthError::NotYetValid),
        );
        let no_sub = serde_json::json!({"exp": now() + 60});
        check(
            &sign_claims(SECRET, &no_sub).unwrap(),
            Err(AuthError::MissingClaim("sub".into())),
        );
        let no_exp = serde_json::json!({"sub": "alice"});
        check(
            &sign_claims(SECRET, &no_exp).unwrap(),
            Err(AuthError::MissingClaim("exp".into())),
        );
        let exp_string = serde_json::json!({"sub": "alice", "exp": (now() + 60).to_string()});
        check(
            &sign_claims(SECRET, &exp_string).unwrap(),
            Err(AuthError::MissingClaim("exp".into())),
        );
        let sub_number = serde_json::json!({"sub": 42, "exp": now() + 60});
        check(
            &sign_claims(SECRET, &sub_number).unwrap(),
            Err(AuthError::MissingClaim("sub".into())),
        );
        let empty_sub = serde_json::json!({"sub": " ", "exp": now() + 60});
        check(
            &sign_claims(SECRET, &empty_sub).unwrap(),
            Err(AuthError::InvalidClaim("sub".into())),
        );
        check("not-a-jwt", Err(AuthError::Malformed));
        check("", Err(AuthError::Missing));
    }

    #[test]
    fn authorization_header_parsing() {
        let verifier = JwtVerifier::new(SECRET);
        let token = sign_hs256(SECRET, "bob", 60).unwrap();
        assert_eq!(
            verifier
                .verify_authorization(Some(&format!("Bearer {token}")))
                .unwrap()
                .sub,
            "bob"
        );
        assert_eq!(
            verifier
                .verify_authorization(Some(&format!("bearer {token}")))
                .unwrap()
                .sub,
            "bob"
        );
        assert_eq!(verifier.verify_authorization(None), Err(AuthError::Missing));
        assert_eq!(
            verifier.verify_authorization(Some("Basic abc")),
            Err(AuthError::NotBearer)
        );
        assert_eq!(
            verifier.verify_authorization(Some(&token)),
            Err(AuthError::NotBearer)
        );
    }
}
