//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the headers every
//! delivery carries, so that a receiver can check with a stock library that the request comes
//! from us, unchanged, and recently.
//!
//! The signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`, signed with HMAC-SHA256
//! under the endpoint's secret (`whsec_` followed by the key in base64); `webhook-signature` is
//! `v1,<base64 signature>`, one per secret, separated by spaces, so that during a rotation a
//! receiver holding either the old or the new secret accepts the request.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit as _, Mac as _};

/// Shortest key accepted: the specification asks for 24 to 64 bytes.
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;

/// An endpoint's signing secret (the key bytes, never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("a webhook secret starts with whsec_")]
    MissingPrefix,
    #[error("a webhook secret is whsec_ followed by base64: {0}")]
    NotBase64(String),
    #[error("a webhook secret's key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {0}")]
    Length(usize),
}

impl Secret {
    /// Parses `whsec_<base64 key>`, as receivers' libraries expect it.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text.trim().strip_prefix("whsec_").ok_or(SecretError::MissingPrefix)?;
        let key = STANDARD.decode(encoded).map_err(|e| SecretError::NotBase64(e.to_string()))?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Secret(key))
    }

    /// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
    fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The three headers of a delivery: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
}

/// Signs `body` as message `id` sent at `timestamp` (Unix seconds) with every secret in
/// `secrets` (the current one first, then those still accepted during a rotation).
pub fn sign(id: &str, timestamp: i64, body: &[u8], secrets: &[Secret]) -> SignedHeaders {
    let signature = secrets.iter().map(|secret| secret.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ");
    SignedHeaders { id: id.to_owned(), timestamp, signature }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference libraries (standard-webhooks, the
    /// JavaScript and Python test suites): this secret, id, timestamp and payload sign to this.
    #[test]
    fn signs_the_reference_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let headers =
            sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#, std::slice::from_ref(&secret));
        assert_eq!(headers.signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_rotation_signs_with_every_secret_and_each_signature_differs() {
        let old = Secret::parse(&format!("whsec_{}", STANDARD.encode([1u8; 32]))).unwrap();
        let new = Secret::parse(&format!("whsec_{}", STANDARD.encode([2u8; 32]))).unwrap();
        let headers = sign("msg_1", 1, b"{}", &[new.clone(), old.clone()]);
        let parts: Vec<&str> = headers.signature.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign("msg_1", 1, b"{}", &[new]).signature);
        assert_eq!(parts[1], sign("msg_1", 1, b"{}", &[old]).signature);
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert_eq!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Err(SecretError::MissingPrefix));
        assert!(matches!(Secret::parse("whsec_not base64!"), Err(SecretError::NotBase64(_))));
        assert_eq!(Secret::parse(&format!("whsec_{}", STANDARD.encode([0u8; 8]))), Err(SecretError::Length(8)));
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(…)");
    }
}
