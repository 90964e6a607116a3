//! Artifact signing: Ed25519 keys, detached signatures over an artifact's SHA-256 digest, and
//! the set of trusted public keys an environment checks them against.
//!
//! Files are plain text so they can be reviewed and committed: a public key is one line
//! `runway-ed25519 <key id> <base64 key>`; a private key is the same with `-secret` and the
//! 32-byte seed (written mode 0600); a signature (`FILE.sig`) is JSON naming the digest, the
//! key id and the signature. What is signed is `runway-artifact-v1:` followed by the digest's
//! 64 hex digits, so a signature can never be replayed as anything else. This crate has no
//! storage, HTTP or wasmtime dependency.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const PUBLIC_TAG: &str = "runway-ed25519";
const SECRET_TAG: &str = "runway-ed25519-secret";
const CONTEXT: &str = "runway-artifact-v1:";

/// What can be wrong with a key, a signature or their files.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key or signature file is not in Runway's format.
    #[error("{what} is not a valid {expected}: {why}")]
    Malformed {
        /// Which file or value.
        what: String,
        /// What it should be.
        expected: &'static str,
        /// What is wrong.
        why: String,
    },
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A public key's id: the first 16 hex digits of the SHA-256 of its bytes.
fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

fn message(digest: &str) -> Vec<u8> {
    format!("{CONTEXT}{digest}").into_bytes()
}

/// A public key that verifies signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    id: String,
    key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PUBLIC_TAG} {} {}",
            self.id,
            b64().encode(self.key.as_bytes())
        )
    }
}

impl PublicKey {
    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Parses one `runway-ed25519 <id> <base64>` line; `what` names it in errors.
    pub fn parse(line: &str, what: &str) -> Result<PublicKey, SigningError> {
        let malformed = |why: &str| SigningError::Malformed {
            what: what.to_owned(),
            expected: "Runway public key (`runway-ed25519 <id> <base64>`)",
            why: why.to_owned(),
        };
        let mut parts = line.split_whitespace();
        if parts.next() != Some(PUBLIC_TAG) {
            return Err(malformed("it does not start with `runway-ed25519`"));
        }
        let id = parts
            .next()
            .ok_or_else(|| malformed("the key id is missing"))?;
        let bytes = parts
            .next()
            .and_then(|k| b64().decode(k).ok())
            .ok_or_else(|| malformed("the key is missing or not base64"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| malformed("the key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| malformed("not an Ed25519 key"))?;
        if key.is_weak() {
            return Err(malformed(
                "a weak (small-order) key, which anyone could sign for",
            ));
        }
        if key_id(&key) != id {
            return Err(malformed("the key id does not match the key"));
        }
        Ok(PublicKey {
            id: id.to_owned(),
            key,
        })
    }
}

/// A private signing key.
pub struct KeyPair {
    key: SigningKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({}, [redacted])", self.public().id)
    }
}

impl KeyPair {
    /// A new key from the operating system's randomness.
    pub fn generate() -> KeyPair {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the operating system's random source failed");
        KeyPair {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        let key = self.key.verifying_key();
        PublicKey {
            id: key_id(&key),
            key,
        }
    }

    /// The private key file's text.
    pub fn to_secret_text(&self) -> String {
        let public = self.public();
        format!(
            "{SECRET_TAG} {} {}\n",
            public.id,
            b64().encode(self.key.to_bytes())
        )
    }

    /// Reads a private key file.
    pub fn read(path: &Path) -> Result<KeyPair, SigningError> {
        let text = std::fs::read_to_string(path).map_err(|source| SigningError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let malformed = |why: &str| SigningError::Malformed {
            what: path.display().to_string(),
            expected: "Runway private key (made by `runway keys generate`)",
            why: why.to_owned(),
        };
        let mut parts = text.split_whitespace();
        if parts.next() != Some(SECRET_TAG) {
            return Err(malformed("it does not start with `runway-ed25519-secret`"));
        }
        let id = parts
            .next()
            .ok_or_else(|| malformed("the key id is missing"))?;
        let seed: [u8; 32] = parts
            .next()
            .and_then(|k| b64().decode(k).ok())
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| malformed("the key is missing, not base64 or not 32 bytes"))?;
        let pair = KeyPair {
            key: SigningKey::from_bytes(&seed),
        };
        if pair.public().id != id {
            return Err(malformed("the key id does not match the key"));
        }
        Ok(pair)
    }

    /// Signs an artifact digest (64 hex digits).
    pub fn sign(&self, digest: &str) -> Signature {
        Signature {
            digest: digest.to_owned(),
            key_id: self.public().id,
            signature: b64().encode(self.key.sign(&message(digest)).to_bytes()),
        }
    }
}

/// A detached signature over an artifact digest: the content of a `.sig` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The artifact's SHA-256, 64 hex digits.
    pub digest: String,
    /// The id of the key that signed.
    pub key_id: String,
    /// The Ed25519 signature, base64.
    pub signature: String,
}

/// The public keys an environment trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

/// How a set of signatures fared against the trusted keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by this trusted key.
    Trusted(String),
    /// Not signed by any trusted key; says why.
    Untrusted(String),
}

impl TrustedKeys {
    /// Reads a file of public keys, one per line (`#` comments and blank lines allowed).
    pub fn read(path: &Path) -> Result<TrustedKeys, SigningError> {
        let text = std::fs::read_to_string(path).map_err(|source| SigningError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        TrustedKeys::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a trusted-keys file; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<TrustedKeys, SigningError> {
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let what = format!("{source} line {}", number + 1);
            let key = PublicKey::parse(line, &what)?;
            if keys.iter().any(|k: &PublicKey| k.id == key.id) {
                return Err(SigningError::Malformed {
                    what,
                    expected: "trusted-keys file",
                    why: format!("key {} is listed twice", key.id),
                });
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(SigningError::Malformed {
                what: source.to_owned(),
                expected: "trusted-keys file",
                why: "it lists no keys".into(),
            });
        }
        Ok(TrustedKeys { keys })
    }

    /// A set from keys in hand.
    pub fn new(keys: Vec<PublicKey>) -> TrustedKeys {
        TrustedKeys { keys }
    }

    /// The trusted key ids.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(PublicKey::id).collect()
    }

    /// Whether `signature` is by a key in this set (valid or not).
    pub fn knows(&self, key_id: &str) -> bool {
        self.keys.iter().any(|k| k.id == key_id)
    }

    /// Whether any of `signatures` is a valid signature of `digest` by a trusted key.
    pub fn check(&self, digest: &str, signatures: &[Signature]) -> Verdict {
        if signatures.is_empty() {
            return Verdict::Untrusted("it is not signed".into());
        }
        let mut reasons = Vec::new();
        for signature in signatures {
            if signature.digest != digest {
                reasons.push(format!(
                    "a signature by {} is for another digest",
                    signature.key_id
                ));
                continue;
            }
            let Some(key) = self.keys.iter().find(|k| k.id == signature.key_id) else {
                reasons.push(format!(
                    "signed by {}, which is not a trusted key",
                    signature.key_id
                ));
                continue;
            };
            let valid = b64()
                .decode(&signature.signature)
                .ok()
                .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
                .map(|bytes| ed25519_dalek::Signature::from_bytes(&bytes))
                .is_some_and(|sig| key.key.verify_strict(&message(digest), &sig).is_ok());
            if valid {
                return Verdict::Trusted(key.id.clone());
            }
            reasons.push(format!(
                "the signature claiming trusted key {} does not verify",
                signature.key_id
            ));
        }
        Verdict::Untrusted(reasons.join("; "))
    }
}

/// Parses a `.sig` file's text.
pub fn parse_signature(text: &str, what: &str) -> Result<Signature, SigningError> {
    serde_json::from_str(text).map_err(|err| SigningError::Malformed {
        what: what.to_owned(),
        expected: "Runway signature (made by `runway sign`)",
        why: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "4f2a0000000000000000000000000000000000000000000000000000000000aa";

    #[test]
    fn a_signature_verifies_only_with_its_trusted_key_and_digest() {
        let signer = KeyPair::generate();
        let other = KeyPair::generate();
        let trusted = TrustedKeys::new(vec![signer.public()]);
        let signature = signer.sign(DIGEST);
        assert_eq!(
            trusted.check(DIGEST, std::slice::from_ref(&signature)),
            Verdict::Trusted(signer.public().id().to_owned())
        );
        let Verdict::Untrusted(why) = trusted.check(DIGEST, &[other.sign(DIGEST)]) else {
            panic!("an untrusted key was accepted");
        };
        assert!(why.contains("not a trusted key"), "{why}");
        let mut forged = other.sign(DIGEST);
        forged.key_id = signer.public().id().to_owned();
        let Verdict::Untrusted(why) = trusted.check(DIGEST, &[forged]) else {
            panic!("a forged key id was accepted");
        };
        assert!(why.contains("does not verify"), "{why}");
        let elsewhere = "0".repeat(64);
        assert!(matches!(
            trusted.check(&elsewhere, &[signature]),
            Verdict::Untrusted(_)
        ));
        assert_eq!(
            trusted.check(DIGEST, &[]),
            Verdict::Untrusted("it is not signed".into())
        );
    }

    #[test]
    fn keys_round_trip_through_their_files_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let pair = KeyPair::generate();
        let secret = dir.path().join("team.key");
        std::fs::write(&secret, pair.to_secret_text()).unwrap();
        let read = KeyPair::read(&secret).unwrap();
        assert_eq!(read.public(), pair.public());
        let public = pair.public().to_string();
        assert_eq!(PublicKey::parse(&public, "x").unwrap(), pair.public());
        let trusted = dir.path().join("trusted");
        std::fs::write(&trusted, format!("# the release team\n{public}\n")).unwrap();
        assert_eq!(
            TrustedKeys::read(&trusted).unwrap().ids(),
            [pair.public().id()]
        );
        std::fs::write(&trusted, "runway-ed25519 0000000000000000 AAAA\n").unwrap();
        let err = TrustedKeys::read(&trusted).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("32 bytes"), "{err}");
        assert!(!format!("{pair:?}").contains(&pair.to_secret_text()));
    }
}
