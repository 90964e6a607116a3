//! JWT bearer tokens checked against a function's JWKS: HS256, RS256 and ES256.
//!
//! Every key's algorithm is fixed when the key set is loaded (from its `alg`, or from its
//! type: `oct` is HS256, `RSA` is RS256, `EC` P-256 is ES256), and a token is verified only
//! with a key of exactly the algorithm its header names. That closes algorithm confusion
//! (an RS256 public key used as an HS256 secret); `alg: none` is refused before anything else.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// A function's JWT settings as frozen into a release: the key set itself, not a path, so
/// the release is self-contained and a key rotation is a new release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JwtSettings {
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim (the token's `aud` must contain it).
    pub audience: String,
    /// The JWKS document (`{"keys": [...]}`) as JSON text.
    pub jwks: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default)]
    pub leeway_seconds: u64,
}

/// Why a key set or JWT setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The JWKS is not valid JSON of the right shape.
    #[error("the JWKS is not a valid key set: {0}")]
    InvalidJwks(String),
    /// A key is of a type or algorithm Runway does not verify with.
    #[error("JWKS key {kid}: {reason}")]
    UnsupportedKey {
        /// The key's `kid`, or its position.
        kid: String,
        /// Why.
        reason: String,
    },
    /// The set holds no key.
    #[error("the JWKS holds no keys")]
    Empty,
}

/// Why a presented JWT was refused; each says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtRefusal {
    /// Not three base64url parts, or a header that is not JSON.
    Malformed(String),
    /// The header says `alg: none`.
    AlgNone,
    /// The header names an algorithm other than HS256, RS256 or ES256.
    UnsupportedAlgorithm(String),
    /// No key has the header's `kid` (or, without a `kid`, the header's algorithm).
    NoKey(String),
    /// The header's algorithm differs from the algorithm of the key it names.
    AlgorithmMismatch {
        /// The header's algorithm.
        token: String,
        /// The key's algorithm.
        key: String,
    },
    /// The signature does not verify.
    BadSignature,
    /// `exp` is in the past.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iss` differs.
    WrongIssuer,
    /// `aud` does not contain the function's audience.
    WrongAudience,
    /// A required claim is absent.
    MissingClaim(String),
}

impl fmt::Display for JwtRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtRefusal::Malformed(why) => write!(f, "the bearer token is not a JWT: {why}"),
            JwtRefusal::AlgNone => f.write_str("unsigned tokens (alg: none) are refused"),
            JwtRefusal::UnsupportedAlgorithm(alg) => {
                write!(
                    f,
                    "algorithm {alg} is not accepted; use HS256, RS256 or ES256"
                )
            }
            JwtRefusal::NoKey(what) => write!(f, "no key in the function's JWKS matches {what}"),
            JwtRefusal::AlgorithmMismatch { token, key } => write!(
                f,
                "the token says {token} but the key it names is a {key} key (algorithm confusion is refused)"
            ),
            JwtRefusal::BadSignature => f.write_str("the token's signature does not verify"),
            JwtRefusal::Expired => f.write_str("the token has expired (exp is in the past)"),
            JwtRefusal::NotYetValid => {
                f.write_str("the token is not valid yet (nbf is in the future)")
            }
            JwtRefusal::WrongIssuer => {
                f.write_str("the token's issuer (iss) is not the one this function trusts")
            }
            JwtRefusal::WrongAudience => {
                f.write_str("the token's audience (aud) does not include this function")
            }
            JwtRefusal::MissingClaim(claim) => write!(f, "the token has no `{claim}` claim"),
        }
    }
}

struct VerifyKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies JWTs for one function: built once per release, used on every request.
pub struct JwtVerifier {
    keys: Vec<VerifyKey>,
    validation: [Validation; 3],
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash's 256 bits).
const MIN_HMAC_SECRET: usize = 32;

const ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256];

fn key_algorithm(jwk: &Jwk, index: usize) -> Result<Algorithm, JwtError> {
    let kid = jwk
        .common
        .key_id
        .clone()
        .unwrap_or_else(|| format!("#{}", index + 1));
    let unsupported = |reason: String| JwtError::UnsupportedKey {
        kid: kid.clone(),
        reason,
    };
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::OctetKey(oct) => {
            let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(oct.value.trim_end_matches('='))
                .map_err(|_| unsupported("its `k` is not base64url".into()))?;
            if secret.len() < MIN_HMAC_SECRET {
                return Err(unsupported(format!(
                    "an HS256 secret of {} bytes is too short to resist guessing; use at least \
                     {MIN_HMAC_SECRET} random bytes",
                    secret.len()
                )));
            }
            Algorithm::HS256
        }
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            return Err(unsupported(format!(
                "curve {:?} is not supported; use P-256 (ES256)",
                ec.curve
            )));
        }
        _ => {
            return Err(unsupported(
                "only oct (HS256), RSA (RS256) and EC P-256 (ES256) keys are supported".into(),
            ));
        }
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let declared = match declared {
            KeyAlgorithm::HS256 => Algorithm::HS256,
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            other => {
                return Err(unsupported(format!(
                    "alg {other:?} is not supported; use HS256, RS256 or ES256"
                )));
            }
        };
        if declared != by_type {
            return Err(unsupported(format!(
                "alg {declared:?} does not fit its key type (a {by_type:?} key)"
            )));
        }
    }
    Ok(by_type)
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
}

impl JwtVerifier {
    /// Loads a function's settings; every key must be usable.
    pub fn new(settings: &JwtSettings) -> Result<JwtVerifier, JwtError> {
        let set: JwkSet = serde_json::from_str(&settings.jwks)
            .map_err(|err| JwtError::InvalidJwks(err.to_string()))?;
        if set.keys.is_empty() {
            return Err(JwtError::Empty);
        }
        let mut keys = Vec::with_capacity(set.keys.len());
        for (index, jwk) in set.keys.iter().enumerate() {
            let algorithm = key_algorithm(jwk, index)?;
            let key = DecodingKey::from_jwk(jwk).map_err(|err| JwtError::UnsupportedKey {
                kid: jwk
                    .common
                    .key_id
                    .clone()
                    .unwrap_or_else(|| format!("#{}", index + 1)),
                reason: err.to_string(),
            })?;
            keys.push(VerifyKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        let validation = ALGORITHMS.map(|algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.set_issuer(&[settings.issuer.as_str()]);
            validation.set_audience(&[settings.audience.as_str()]);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.validate_nbf = true;
            validation.leeway = settings.leeway_seconds;
            validation
        });
        Ok(JwtVerifier { keys, validation })
    }

    /// Number of keys loaded.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Verifies a token; returns its claims.
    pub fn verify(&self, token: &str) -> Result<serde_json::Value, JwtRefusal> {
        let header = token
            .split('.')
            .next()
            .filter(|_| token.split('.').count() == 3)
            .ok_or_else(|| JwtRefusal::Malformed("it does not have three parts".into()))?;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header.trim_end_matches('='))
            .map_err(|_| JwtRefusal::Malformed("its header is not base64url".into()))?;
        let header: Header = serde_json::from_slice(&header)
            .map_err(|_| JwtRefusal::Malformed("its header is not a JSON object".into()))?;
        let alg = header
            .alg
            .ok_or_else(|| JwtRefusal::Malformed("its header has no `alg`".into()))?;
        let algorithm = match alg.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other if other.eq_ignore_ascii_case("none") => return Err(JwtRefusal::AlgNone),
            other => return Err(JwtRefusal::UnsupportedAlgorithm(other.to_owned())),
        };
        let index = ALGORITHMS
            .iter()
            .position(|a| *a == algorithm)
            .expect("algorithm is one of the three");
        let candidates: Vec<&VerifyKey> = match &header.kid {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .ok_or_else(|| JwtRefusal::NoKey(format!("kid `{kid}`")))?;
                if key.algorithm != algorithm {
                    return Err(JwtRefusal::AlgorithmMismatch {
                        token: alg,
                        key: format!("{:?}", key.algorithm),
                    });
                }
                vec![key]
            }
            // Without a kid, every key of the token's algorithm is tried, so a key set in
            // the middle of a rotation accepts tokens signed with either key.
            None => self
                .keys
                .iter()
                .filter(|k| k.algorithm == algorithm)
                .collect(),
        };
        if candidates.is_empty() {
            return Err(JwtRefusal::NoKey(format!("algorithm {alg}")));
        }
        let mut refusal = JwtRefusal::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Value>(
                token,
                &key.key,
                &self.validation[index],
            ) {
                Ok(data) => return Ok(data.claims),
                Err(err) => {
                    refusal = match err.kind() {
                        ErrorKind::InvalidSignature => JwtRefusal::BadSignature,
                        ErrorKind::ExpiredSignature => JwtRefusal::Expired,
                        ErrorKind::ImmatureSignature => JwtRefusal::NotYetValid,
                        ErrorKind::InvalidIssuer => JwtRefusal::WrongIssuer,
                        ErrorKind::InvalidAudience => JwtRefusal::WrongAudience,
                        ErrorKind::MissingRequiredClaim(claim) => {
                            JwtRefusal::MissingClaim(claim.clone())
                        }
                        ErrorKind::InvalidAlgorithm => JwtRefusal::AlgorithmMismatch {
                            token: alg.clone(),
                            key: format!("{:?}", key.algorithm),
                        },
                        other => JwtRefusal::Malformed(format!("{other:?}")),
                    };
                    // Claims are checked only after the signature verified: stop there.
                    if refusal != JwtRefusal::BadSignature {
                        return Err(refusal);
                    }
                }
            }
        }
        Err(refusal)
    }
}

/// Longest leeway a function may set.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests;
