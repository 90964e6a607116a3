//! Secrets at rest: ChaCha20-Poly1305 under a node key kept in a file, not in the database.

use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// Problems with the node key or a sealed secret.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key file could not be read or created.
    #[error("secret key file {path}: {source}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file does not hold a 256-bit key in hex.
    #[error(
        "secret key file {path} does not hold a 64-character hex key; restore the original \
         file (secrets sealed with another key cannot be read)"
    )]
    BadKey {
        /// The key file.
        path: PathBuf,
    },
    /// A stored secret failed authentication: wrong key, or the ciphertext was altered.
    #[error(
        "secret `{name}` in environment `{environment}` cannot be decrypted with this node's \
         key (wrong key file, or the stored value was altered); set it again"
    )]
    Unreadable {
        /// The environment.
        environment: String,
        /// The secret's name.
        name: String,
    },
}

/// A sealed secret as stored: nonce and ciphertext (with its authentication tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The 96-bit nonce, unique per sealing.
    pub nonce: Vec<u8>,
    /// The ciphertext followed by the 128-bit tag.
    pub ciphertext: Vec<u8>,
}

/// Encrypts and decrypts secrets with the node key.
pub struct Vault {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault { key: <hidden> }")
    }
}

impl Vault {
    /// Loads the key from `path`, creating a fresh random key (mode 0600) if the file is
    /// missing.
    pub fn open_or_create(path: &Path) -> Result<Vault, VaultError> {
        let key_file = |source| VaultError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let key = ChaCha20Poly1305::generate_key(&mut OsRng);
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(key_file)?;
                let text = hex::encode(key);
                file.write_all(format!("{text}\n").as_bytes())
                    .map_err(key_file)?;
                file.sync_all().map_err(key_file)?;
                text
            }
            Err(err) => return Err(key_file(err)),
        };
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| VaultError::BadKey {
                path: path.to_path_buf(),
            })?;
        Ok(Vault {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
        })
    }

    /// The associated data binding a ciphertext to its environment and name, so a sealed
    /// value copied to another name or environment fails to decrypt.
    fn binding(environment: &str, name: &str) -> Vec<u8> {
        format!("runway-secret\0{environment}\0{name}").into_bytes()
    }

    /// Encrypts `value` for secret `name` of `environment`.
    pub fn seal(&self, environment: &str, name: &str, value: &str) -> Sealed {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = Self::binding(environment, name);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Decrypts a sealed secret.
    pub fn open(
        &self,
        environment: &str,
        name: &str,
        sealed: &Sealed,
    ) -> Result<String, VaultError> {
        let unreadable = || VaultError::Unreadable {
            environment: environment.to_owned(),
            name: name.to_owned(),
        };
        if sealed.nonce.len() != 12 {
            return Err(unreadable());
        }
        let aad = Self::binding(environment, name);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| unreadable())?;
        String::from_utf8(plain).map_err(|_| unreadable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_name_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let vault = Vault::open_or_create(&path).unwrap();
        let sealed = vault.seal("prod", "PAYMENT_KEY", "sk_live_123");
        assert!(!sealed.ciphertext.windows(11).any(|w| w == b"sk_live_123"));
        assert_eq!(
            vault.open("prod", "PAYMENT_KEY", &sealed).unwrap(),
            "sk_live_123"
        );
        assert!(vault.open("prod", "OTHER", &sealed).is_err());
        assert!(vault.open("staging", "PAYMENT_KEY", &sealed).is_err());
        // The same key file opens it again; another key does not.
        let again = Vault::open_or_create(&path).unwrap();
        assert_eq!(
            again.open("prod", "PAYMENT_KEY", &sealed).unwrap(),
            "sk_live_123"
        );
        let other = Vault::open_or_create(&dir.path().join("other.key")).unwrap();
        let err = other
            .open("prod", "PAYMENT_KEY", &sealed)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("sk_live"), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        std::fs::write(&path, "not hex").unwrap();
        let err = Vault::open_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("64-character hex key"), "{err}");
    }
}
