//! Verification of a LiveKit webhook request, in the order LiveKit's receivers use
//! (`protocol/webhook/verifier.go`): token first, then the body hash, and only then is the body
//! parsed. The result is the only way to obtain a [`VerifiedEvent`].

use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::keys::KeySet;
use super::token::{self, TokenError};
use crate::event::{EventError, VerifiedEvent};

/// Why a webhook request is not authentic. `code()` is stable (API errors and metric labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the request has no Authorization header")]
    MissingAuthorization,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the token carries no sha256 claim")]
    MissingBodyHash,
    #[error("the body does not match the token's sha256 claim")]
    BodyHashMismatch,
}

impl VerifyError {
    pub fn code(self) -> &'static str {
        match self {
            VerifyError::MissingAuthorization => "missing_authorization",
            VerifyError::Token(e) => e.code(),
            VerifyError::MissingBodyHash => "missing_body_hash",
            VerifyError::BodyHashMismatch => "body_hash_mismatch",
        }
    }
}

/// Why a webhook request was refused: not authentic, or authentic but not a usable event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Unauthorized(#[from] VerifyError),
    #[error(transparent)]
    Invalid(#[from] EventError),
}

/// Checks that `body` was signed by LiveKit with one of `keys`, at `now` (unix seconds).
/// `authorization` is the raw header value: a bare JWT, as LiveKit sends it, or `Bearer <jwt>`.
pub fn verify(authorization: Option<&[u8]>, body: &[u8], keys: &KeySet, now: i64) -> Result<(), VerifyError> {
    let header = authorization.ok_or(VerifyError::MissingAuthorization)?;
    let header = std::str::from_utf8(header).map_err(|_| TokenError::Malformed)?.trim();
    let jwt = strip_bearer(header);
    if jwt.is_empty() {
        return Err(VerifyError::MissingAuthorization);
    }
    let claims = token::verify(jwt, keys, now)?;
    let claimed = claims.sha256.ok_or(VerifyError::MissingBodyHash)?;
    let actual = body_hash(body);
    if !bool::from(claimed.as_bytes().ct_eq(actual.as_bytes())) {
        return Err(VerifyError::BodyHashMismatch);
    }
    Ok(())
}

/// Verifies the request, then parses it into the event that will be stored.
pub fn receive(
    authorization: Option<&[u8]>,
    body: Bytes,
    keys: &KeySet,
    now: i64,
    received_at_ms: i64,
) -> Result<VerifiedEvent, ReceiveError> {
    verify(authorization, &body, keys, now)?;
    Ok(VerifiedEvent::parse(body, received_at_ms)?)
}

/// The token LiveKit sends with a webhook `body` (the gateway only verifies; load tools and
/// tests sign): HS256, `iss` = the API key, valid for 5 minutes from `now` (unix seconds),
/// `sha256` = the body's hash.
pub fn sign_request(body: &[u8], api_key: &str, secret: &super::keys::Secret, now: i64) -> String {
    let claims = token::Claims {
        iss: api_key.to_owned(),
        nbf: Some(now),
        exp: Some(now + 5 * 60),
        sha256: Some(body_hash(body)),
        ..Default::default()
    };
    token::sign(&claims, secret)
}

/// base64 (standard alphabet, padded) of the body's SHA-256: the `sha256` claim LiveKit signs.
pub fn body_hash(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
}

/// LiveKit sends the bare token; a `Bearer ` prefix is tolerated.
fn strip_bearer(header: &str) -> &str {
    token::after_bearer_prefix(header).unwrap_or(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_a_bearer_prefix_in_any_case_only_at_the_start() {
        assert_eq!(strip_bearer("Bearer abc"), "abc");
        assert_eq!(strip_bearer("bearer  abc"), "abc");
        assert_eq!(strip_bearer("abc"), "abc");
        assert_eq!(strip_bearer("Bear"), "Bear");
        assert_eq!(strip_bearer("xBearer abc"), "xBearer abc");
        assert_eq!(strip_bearer("é€"), "é€");
    }

    #[test]
    fn a_signed_request_verifies_for_its_body_only_and_expires_after_5_minutes() {
        let keys = KeySet::parse("alpha: 0123456789abcdef0123456789abcdef").unwrap();
        let (api_key, secret) = keys.first();
        let token = sign_request(b"{}", api_key, secret, 1_800_000_000);
        assert_eq!(verify(Some(token.as_bytes()), b"{}", &keys, 1_800_000_000 + 299), Ok(()));
        assert_eq!(verify(Some(token.as_bytes()), b"{ }", &keys, 1_800_000_000), Err(VerifyError::BodyHashMismatch));
        assert!(verify(Some(token.as_bytes()), b"{}", &keys, 1_800_000_000 + 300 + 61).is_err());
    }

    #[test]
    fn body_hash_is_standard_padded_base64() {
        assert_eq!(body_hash(b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }
}
