//! Trust in artifacts: which artifacts an environment admits (not revoked; signed by a key it
//! trusts when it requires signatures), storing a signature, and revoking an artifact so that
//! every release running it stops serving at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use runway_signing::{TrustedKeys, Verdict};
use runway_store::{ArtifactSignature, Digest, RevokedArtifact, StoreError};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::environments::Environment;
use crate::services::tokens::Actor;

/// Why a signature was not stored or an artifact not revoked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArtifactError {
    /// The signature file does not parse, or claims a trusted key it does not verify for.
    #[error("{0}")]
    InvalidSignature(String),
    /// The signature is for another artifact.
    #[error("the signature is for artifact {signed}, not {digest}; sign the file you deploy")]
    SignatureDigestMismatch { signed: String, digest: Digest },
    /// No artifact of that digest is stored.
    #[error("{0}")]
    ArtifactMissing(String),
    /// A token scoped to one environment asked to revoke (which stops it everywhere).
    #[error(
        "token {actor} is scoped to environment `{scope}`; revoking an artifact stops it in every environment and needs a token for every environment"
    )]
    Scoped { actor: String, scope: String },
    /// The artifact is revoked already.
    #[error("artifact {0} is already revoked")]
    AlreadyRevoked(Digest),
    /// A task of the node failed; the detail is logged.
    #[error("{0}")]
    Internal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ArtifactError> + Send + 'static,
) -> Result<T, ArtifactError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ArtifactError::Internal(format!("an artifact task failed: {err}")))?
}

/// The answer to a signature upload.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignatureResponse {
    /// The artifact.
    pub digest: String,
    /// The signing key's id.
    pub key_id: String,
    /// Whether the environment trusts that key (`None`: it requires no signatures).
    pub trusted: Option<bool>,
}

/// Stores the `runway sign` signature `text` for stored artifact `digest`, saying whether
/// `env` trusts its key. A signature claiming a key some environment trusts must verify:
/// otherwise it could replace that key's good signature and block every later deploy.
pub(crate) async fn sign(
    shared: &Arc<Shared>,
    env: &Environment,
    digest: Digest,
    text: &str,
) -> Result<SignatureResponse, ArtifactError> {
    let signature = runway_signing::parse_signature(text, "the uploaded signature")
        .map_err(|err| ArtifactError::InvalidSignature(err.to_string()))?;
    if signature.digest != digest.as_str() {
        return Err(ArtifactError::SignatureDigestMismatch {
            signed: signature.digest,
            digest,
        });
    }
    let verifies = |keys: &TrustedKeys| {
        matches!(
            keys.check(digest.as_str(), std::slice::from_ref(&signature)),
            Verdict::Trusted(_)
        )
    };
    let trusted = env.rules.trusted_keys.as_ref().map(verifies);
    let claims_trusted = shared.environments.load().all().any(|e| {
        e.rules
            .trusted_keys
            .as_ref()
            .is_some_and(|keys| keys.knows(&signature.key_id) && !verifies(keys))
    });
    if claims_trusted {
        return Err(ArtifactError::InvalidSignature(format!(
            "the signature claims trusted key {} but does not verify for artifact {}",
            signature.key_id,
            digest.short()
        )));
    }
    let record = ArtifactSignature {
        digest: signature.digest.clone(),
        key_id: signature.key_id.clone(),
        signature: signature.signature,
    };
    {
        let shared = shared.clone();
        let digest = digest.clone();
        blocking(move || {
            if !shared.store.has_artifact(&digest)? {
                return Err(ArtifactError::ArtifactMissing(format!(
                    "artifact {digest} is not stored; upload it first"
                )));
            }
            Ok(shared.store.add_signature(&record)?)
        })
        .await?;
    }
    Ok(SignatureResponse {
        digest: digest.to_string(),
        key_id: signature.key_id,
        trusted,
    })
}

/// What a revocation did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevokeResponse {
    /// The artifact.
    pub digest: String,
    /// Functions (`environment/function`) that were serving it and now answer 503.
    pub stopped: Vec<String>,
}

/// Revokes `digest` for `reason`: every function serving it, in every environment, stops at
/// once. Needs a token for every environment.
pub(crate) async fn revoke(
    shared: &Arc<Shared>,
    actor: &Actor<'_>,
    digest: Digest,
    reason: &str,
    now_ms: i64,
) -> Result<RevokeResponse, ArtifactError> {
    if let Some(scope) = actor.scope {
        return Err(ArtifactError::Scoped {
            actor: actor.id.to_owned(),
            scope: scope.to_owned(),
        });
    }
    // No deploy or rollback can bring the artifact in while it is being revoked.
    let _serialised = shared.deploy_lock.lock().await;
    let revoked = RevokedArtifact {
        digest: digest.to_string(),
        revoked_at_ms: now_ms,
        actor: actor.id.to_owned(),
        reason: reason.to_owned(),
    };
    let newly = {
        let (shared, digest) = (shared.clone(), digest.clone());
        blocking(move || {
            if !shared.store.has_artifact(&digest)? {
                return Err(ArtifactError::ArtifactMissing(format!(
                    "no artifact {digest} was ever uploaded here; check the digest (`runway releases NAME` shows it)"
                )));
            }
            Ok(shared.store.revoke_artifact(&revoked)?)
        })
        .await?
    };
    if !newly {
        return Err(ArtifactError::AlreadyRevoked(digest));
    }
    // Every live release of the artifact stops at once: the flag is read on each request.
    let mut stopped = Vec::new();
    for env in shared.environments.load().all() {
        for function in env.routes.load().functions.values() {
            if function.release.digest == digest {
                function.revoked.store(true, Ordering::Release);
                stopped.push(format!("{}/{}", env.name, function.name()));
            }
        }
    }
    stopped.sort();
    Ok(RevokeResponse {
        digest: digest.to_string(),
        stopped,
    })
}

/// Why an artifact may not be deployed here, if it may not: revoked, or (when this node
/// requires signatures) not signed by a trusted key. On success, the trusted key's id.
pub(crate) fn admission(
    store: &dyn runway_store::ControlStore,
    trusted: Option<&TrustedKeys>,
    digest: &Digest,
) -> Result<Result<Option<String>, String>, runway_store::StoreError> {
    if let Some(revoked) = store
        .revoked_artifacts()?
        .into_iter()
        .find(|r| r.digest == digest.as_str())
    {
        return Ok(Err(format!(
            "artifact {} was revoked ({}); build and deploy a fixed one",
            digest.short(),
            revoked.reason
        )));
    }
    let Some(trusted) = trusted else {
        return Ok(Ok(None));
    };
    let signatures: Vec<runway_signing::Signature> = store
        .signatures(digest.as_str())?
        .into_iter()
        .map(|s| runway_signing::Signature {
            digest: s.digest,
            key_id: s.key_id,
            signature: s.signature,
        })
        .collect();
    Ok(match trusted.check(digest.as_str(), &signatures) {
        Verdict::Trusted(key) => Ok(Some(key)),
        Verdict::Untrusted(why) => Err(format!(
            "artifact {} is refused: this node requires a signature by a trusted key ({}), and {why}; \
             sign it with `runway sign FILE --key KEY` and deploy again",
            digest.short(),
            trusted.ids().join(", ")
        )),
    })
}

#[cfg(test)]
mod tests {
    use runway_signing::KeyPair;
    use runway_store::prelude::*;
    use runway_store_sqlite::SqliteStore;

    use super::*;

    #[test]
    fn only_unrevoked_artifacts_signed_by_a_trusted_key_are_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let bytes = b"a component".as_slice();
        let digest = Digest::of(bytes);
        store.put_artifact(&digest, bytes).unwrap();
        let (trusted_key, other_key) = (KeyPair::generate(), KeyPair::generate());
        let trusted = TrustedKeys::new(vec![trusted_key.public()]);

        assert_eq!(admission(&store, None, &digest).unwrap(), Ok(None));
        let unsigned = admission(&store, Some(&trusted), &digest)
            .unwrap()
            .unwrap_err();
        assert!(
            unsigned.contains("requires a signature by a trusted key"),
            "{unsigned}"
        );

        let add = |key: &KeyPair| {
            let signature = key.sign(digest.as_str());
            store
                .add_signature(&ArtifactSignature {
                    digest: signature.digest,
                    key_id: signature.key_id,
                    signature: signature.signature,
                })
                .unwrap();
        };
        add(&other_key);
        assert!(admission(&store, Some(&trusted), &digest).unwrap().is_err());
        add(&trusted_key);
        assert_eq!(
            admission(&store, Some(&trusted), &digest).unwrap(),
            Ok(Some(trusted_key.public().id().to_owned()))
        );

        store
            .revoke_artifact(&RevokedArtifact {
                digest: digest.to_string(),
                revoked_at_ms: 1,
                actor: "t-sec".into(),
                reason: "CVE-2026-1".into(),
            })
            .unwrap();
        for keys in [None, Some(&trusted)] {
            let revoked = admission(&store, keys, &digest).unwrap().unwrap_err();
            assert!(revoked.contains("was revoked (CVE-2026-1)"), "{revoked}");
        }
    }
}
