//! LiveKit access tokens: HS256 JWTs whose `iss` is the API key.
//!
//! Verification follows `livekit/protocol` `auth/verifier.go`: only HS256, the secret chosen by
//! the token's own `iss`, the HMAC checked before any claim is trusted, `exp` required, `exp` and
//! `nbf` checked with a 60 s leeway, `iat` ignored. The JWT framing is small enough to do here over
//! audited primitives (`hmac`, `sha2`), which keeps the exact rules visible and testable.
//! Signing is here too: the load generator and the tests mint tokens the way LiveKit does.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::keys::{KeySet, Secret};

/// Clock skew tolerated on `exp` and `nbf`, as LiveKit's verifier does.
pub const LEEWAY_SECS: i64 = 60;

/// JWTs are unpadded base64url; tolerating padding costs nothing and matches lenient signers.
const BASE64_URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token was refused. `code()` is the stable name used in API errors and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is not signed with HS256")]
    UnsupportedAlgorithm,
    #[error("the token names an API key this service does not hold")]
    UnknownKey,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token has no expiry")]
    MissingExpiry,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
}

impl TokenError {
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed_token",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::UnknownKey => "unknown_api_key",
            TokenError::BadSignature => "invalid_signature",
            TokenError::MissingExpiry => "missing_expiry",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
        }
    }
}

/// The `video` grant of a participant token (the part attendance needs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VideoGrant {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub room_join: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub room_admin: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub room_list: bool,
}

/// The claims LiveKit puts in its tokens; unknown claims are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key that signed the token.
    #[serde(default)]
    pub iss: String,
    /// The participant identity (empty or absent on webhook tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "numeric_date")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "numeric_date")]
    pub nbf: Option<i64>,
    /// base64(SHA-256(body)) on webhook tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoGrant>,
    /// This project's own grant (view links); LiveKit ignores it, and a token carrying it and no
    /// `video` grant is worthless to livekit-server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attendance: Option<AttendanceGrant>,
}

/// A view link's grant: read one room's attendance and presence, nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttendanceGrant {
    /// The room name whose attendance it reads.
    pub view: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Verifies a compact JWT against the key set at `now` (unix seconds) and returns its claims.
pub fn verify(token: &str, keys: &KeySet, now: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = decode_json(header_b64)?;
    if header.alg != "HS256" {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    let claims: Claims = decode_json(claims_b64)?;
    let secret = keys.secret(&claims.iss).ok_or(TokenError::UnknownKey)?;
    let signature = BASE64_URL.decode(signature_b64).map_err(|_| TokenError::Malformed)?;
    let signed_len = header_b64.len() + 1 + claims_b64.len();
    // `verify_slice` compares in constant time.
    mac(secret)
        .chain_update(&token.as_bytes()[..signed_len])
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;

    let exp = claims.exp.ok_or(TokenError::MissingExpiry)?;
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| now < nbf.saturating_sub(LEEWAY_SECS)) {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// Signs claims with HS256 as LiveKit's SDKs do (`iss` must name `api_key`).
pub fn sign(claims: &Claims, secret: &Secret) -> String {
    let header = BASE64_URL.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = BASE64_URL.encode(serde_json::to_vec(claims).expect("claims always serialize"));
    let signing_input = format!("{header}.{payload}");
    let signature = mac(secret).chain_update(signing_input.as_bytes()).finalize().into_bytes();
    format!("{signing_input}.{}", BASE64_URL.encode(signature))
}

/// The bearer token of an `Authorization` header value (`Bearer <token>`, any case), if any.
pub fn bearer(authorization: Option<&[u8]>) -> Option<&str> {
    let value = std::str::from_utf8(authorization?).ok()?.trim();
    after_bearer_prefix(value).map(str::trim).filter(|token| !token.is_empty())
}

/// The token after a `Bearer ` prefix (any case), if the header has one.
pub(crate) fn after_bearer_prefix(header: &str) -> Option<&str> {
    header.get(..7).filter(|prefix| prefix.eq_ignore_ascii_case("bearer ")).map(|_| header[7..].trim_start())
}

fn mac(secret: &Secret) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC takes keys of any length")
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = BASE64_URL.decode(part).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// JWT NumericDate: seconds, which some signers write as a float.
mod numeric_date {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(secs) => serializer.serialize_i64(*secs),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        let number = Option::<serde_json::Number>::deserialize(deserializer)?;
        Ok(number.and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn keys() -> KeySet {
        KeySet::parse("alpha: 0123456789abcdef0123456789abcdef\nbravo: fedcba9876543210fedcba9876543210").unwrap()
    }

    fn claims(iss: &str) -> Claims {
        Claims { iss: iss.into(), exp: Some(NOW + 300), nbf: Some(NOW), ..Default::default() }
    }

    fn signed(claims: &Claims) -> String {
        sign(claims, keys().secret(&claims.iss).unwrap())
    }

    #[test]
    fn round_trips_with_every_configured_key() {
        for iss in ["alpha", "bravo"] {
            assert_eq!(verify(&signed(&claims(iss)), &keys(), NOW), Ok(claims(iss)));
        }
    }

    #[test]
    fn applies_the_leeway_on_both_ends() {
        let token = signed(&claims("alpha"));
        assert!(verify(&token, &keys(), NOW + 300 + LEEWAY_SECS).is_ok());
        assert_eq!(verify(&token, &keys(), NOW + 301 + LEEWAY_SECS), Err(TokenError::Expired));
        assert!(verify(&token, &keys(), NOW - LEEWAY_SECS).is_ok());
        assert_eq!(verify(&token, &keys(), NOW - LEEWAY_SECS - 1), Err(TokenError::NotYetValid));
    }

    #[test]
    fn requires_an_expiry() {
        let token = signed(&Claims { exp: None, ..claims("alpha") });
        assert_eq!(verify(&token, &keys(), NOW), Err(TokenError::MissingExpiry));
    }

    #[test]
    fn refuses_other_algorithms_foreign_keys_and_forged_signatures() {
        let token = signed(&claims("alpha"));
        let (_, rest) = token.split_once('.').unwrap();
        let none_header = BASE64_URL.encode(br#"{"alg":"none"}"#);
        assert_eq!(verify(&format!("{none_header}.{rest}"), &keys(), NOW), Err(TokenError::UnsupportedAlgorithm));

        let foreign = KeySet::parse("alpha: another-secret-0123456789abcdef0123").unwrap();
        assert_eq!(verify(&token, &foreign, NOW), Err(TokenError::BadSignature));
        let stranger = KeySet::parse("charlie: 0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(verify(&token, &stranger, NOW), Err(TokenError::UnknownKey));

        // Claims swapped under a valid signature: the HMAC covers them.
        let other_claims = signed(&Claims { sub: Some("mallory".into()), ..claims("alpha") });
        let forged = format!(
            "{}.{}.{}",
            token.split('.').next().unwrap(),
            other_claims.split('.').nth(1).unwrap(),
            token.split('.').nth(2).unwrap()
        );
        assert_eq!(verify(&forged, &keys(), NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for token in ["", ".", "..", "a.b.c", "a.b.c.d", "%%%.%%%.%%%", "eyJhbGciOiJIUzI1NiJ9..", "\u{1F600}.x.y"] {
            assert!(verify(token, &keys(), NOW).is_err(), "{token:?}");
        }
    }

    #[test]
    fn accepts_float_dates_and_the_python_sdk_empty_subject() {
        let json = br#"{"iss":"alpha","sub":"","exp":1800000300.5,"nbf":1800000000}"#;
        let header = BASE64_URL.encode(br#"{"alg":"HS256"}"#);
        let input = format!("{header}.{}", BASE64_URL.encode(json));
        let sig = mac(keys().secret("alpha").unwrap()).chain_update(input.as_bytes()).finalize().into_bytes();
        let claims = verify(&format!("{input}.{}", BASE64_URL.encode(sig)), &keys(), NOW).unwrap();
        assert_eq!((claims.exp, claims.sub.as_deref()), (Some(NOW + 300), Some("")));
    }
}
