//! Who may call what: control-plane tokens and their roles, API keys for invoking functions,
//! JWT verification against a JWKS, and per-key request rates.
//!
//! Secrets (tokens, API keys) are high-entropy random strings shown once; only their SHA-256
//! is stored. A fast hash is enough because the secret has 256 bits of entropy: there is no
//! password to guess, so a slow KDF would only slow every request down. This crate has no
//! storage, HTTP or wasmtime dependency: the server asks it to mint, hash and verify.

mod jwt;
mod rate;

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use jwt::{JwtError, JwtRefusal, JwtSettings, JwtVerifier, MAX_LEEWAY};
pub use rate::{KeyedRateLimiter, Rate, RateLimiter};

/// What a control-plane token may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Read: functions, releases, logs, cost, audit, metrics, jobs.
    Viewer,
    /// Change what runs: upload, deploy, invoke, enqueue, extend, secrets, schema, API keys.
    Deployer,
    /// Everything, including control-plane tokens.
    Admin,
}

impl Role {
    /// The role's name as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}`: use admin, deployer or viewer"
            )),
        }
    }
}

/// Prefix of control-plane tokens, so a leaked one is recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "rwy_";
/// Prefix of function API keys.
pub const API_KEY_PREFIX: &str = "rwk_";

/// A freshly minted credential: the secret (shown once) and the hash to store.
#[derive(Clone)]
pub struct Minted {
    /// Public id, safe to show and log (`t-…` or `k-…`).
    pub id: String,
    /// The secret the caller presents; never stored.
    pub secret: String,
    /// What the store keeps.
    pub hash: SecretHash,
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minted")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of a presented secret, as 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecretHash(pub String);

impl SecretHash {
    /// Hashes a presented secret.
    pub fn of(secret: &str) -> SecretHash {
        SecretHash(hex::encode(Sha256::digest(secret.as_bytes())))
    }
}

/// Random bytes from the operating system.
fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

/// A random id for jobs and records: 16 hex digits.
pub fn random_id() -> String {
    hex::encode(random::<8>())
}

fn mint(prefix: &str, id_prefix: &str) -> Minted {
    let secret = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>())
    );
    Minted {
        id: format!("{id_prefix}{}", hex::encode(random::<6>())),
        hash: SecretHash::of(&secret),
        secret,
    }
}

/// Mints a control-plane token.
pub fn mint_token() -> Minted {
    mint(TOKEN_PREFIX, "t-")
}

/// Mints a function API key.
pub fn mint_api_key() -> Minted {
    mint(API_KEY_PREFIX, "k-")
}

/// The shortest bootstrap token accepted from `RUNWAY_ADMIN_TOKEN`.
pub const MIN_BOOTSTRAP_TOKEN_LEN: usize = 24;

/// Checks an operator-chosen bootstrap token (`RUNWAY_ADMIN_TOKEN`).
pub fn check_bootstrap_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_BOOTSTRAP_TOKEN_LEN {
        return Err(format!(
            "RUNWAY_ADMIN_TOKEN is {} characters; use at least {MIN_BOOTSTRAP_TOKEN_LEN} random \
             characters (for example `openssl rand -base64 32`)",
            token.len()
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("RUNWAY_ADMIN_TOKEN contains whitespace or control characters".into());
    }
    Ok(())
}

/// The credential in an `Authorization: Bearer …` header value, if that is its form.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|token| !token.is_empty())
}

/// Longest lifetime of a token or API key: ten years.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86_400);

/// Parses a lifetime such as `30d`, `12h` or `90m` (at most [`MAX_TTL`]).
pub fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|err| {
        format!("invalid lifetime `{text}`: {err}; use a duration such as `7d`, `12h` or `30m`")
    })?;
    if ttl.is_zero() {
        return Err(format!(
            "invalid lifetime `{text}`: it must be longer than zero"
        ));
    }
    if ttl > MAX_TTL {
        return Err(format!(
            "invalid lifetime `{text}`: at most 3650d; long-lived credentials should be rotated"
        ));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_are_distinct_high_entropy_and_hash_to_what_is_stored() {
        let a = mint_token();
        let b = mint_token();
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.id, b.id);
        assert!(a.secret.starts_with(TOKEN_PREFIX));
        // 32 random bytes in unpadded base64url.
        assert_eq!(a.secret.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(SecretHash::of(&a.secret), a.hash);
        assert_ne!(SecretHash::of(&b.secret), a.hash);
        assert!(mint_api_key().secret.starts_with(API_KEY_PREFIX));
    }

    #[test]
    fn roles_order_and_parse() {
        assert!(Role::Admin > Role::Deployer && Role::Deployer > Role::Viewer);
        assert_eq!("deployer".parse::<Role>().unwrap(), Role::Deployer);
        assert!(
            "root"
                .parse::<Role>()
                .unwrap_err()
                .contains("admin, deployer or viewer")
        );
    }

    #[test]
    fn bearer_needs_the_scheme_and_a_value() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn lifetimes_are_bounded_and_secrets_never_debug_printed() {
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("3651d").unwrap_err().contains("at most"));
        assert_eq!(parse_ttl("7d").unwrap().as_secs(), 7 * 86_400);
        let minted = mint_api_key();
        assert!(!format!("{minted:?}").contains(&minted.secret));
    }

    #[test]
    fn bootstrap_tokens_must_be_long() {
        assert!(check_bootstrap_token("short").is_err());
        assert!(check_bootstrap_token("a-long-enough-bootstrap-token-value").is_ok());
        assert!(check_bootstrap_token("a long enough bootstrap token value").is_err());
    }
}
