//! Control-plane tokens: minting and revoking them, with the rules on scope and on keeping
//! one way in (the last unscoped admin token cannot be revoked).

use std::sync::Mutex;

use runway_access::Role;
use runway_store::{ControlStore, StoreError, TokenRecord};

/// Lifetime of a token created without one.
pub(crate) const DEFAULT_TTL: &str = "30d";

/// Who acts: a token's id and the one environment it is scoped to, if any.
pub(crate) struct Actor<'a> {
    pub(crate) id: &'a str,
    pub(crate) scope: Option<&'a str>,
}

/// What is asked for when a token is created.
pub(crate) struct NewToken {
    pub(crate) role: Role,
    pub(crate) environment: Option<String>,
    pub(crate) ttl: Option<String>,
    pub(crate) label: Option<String>,
}

/// Why a token was not created or revoked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// The lifetime does not parse or is out of range.
    #[error("{0}")]
    InvalidTtl(String),
    /// A scoped admin asked for a token of another scope.
    #[error(
        "token {actor} is scoped to environment `{scope}`; it can only create tokens scoped to \
         `{scope}` (pass --env {scope})"
    )]
    ForeignScope { actor: String, scope: String },
    /// The scope names no environment.
    #[error("environment `{0}` does not exist; `runway env ls` lists them")]
    NoSuchEnvironment(String),
    /// No token of that id that the actor manages.
    #[error("no token `{0}`; `runway token ls` lists them")]
    NoSuchToken(String),
    /// The token is revoked already.
    #[error("token `{0}` is already revoked")]
    AlreadyRevoked(String),
    /// Revoking it would leave no unscoped admin token.
    #[error(
        "token `{0}` is the last unscoped admin token; create another admin token first, or \
         nobody could manage tokens again"
    )]
    LastAdminToken(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `actor` may see and manage `token`: an unscoped admin every token, a scoped admin
/// only tokens of its own scope.
pub(crate) fn manages(actor: &Actor<'_>, token: &TokenRecord) -> bool {
    actor
        .scope
        .is_none_or(|scope| token.environment.as_deref() == Some(scope))
}

/// The token service of a node.
pub(crate) struct Tokens<'a> {
    store: &'a dyn ControlStore,
    /// Held across the last-admin check and the revocation.
    access_lock: &'a Mutex<()>,
}

impl<'a> Tokens<'a> {
    /// The service over a node's store and access lock.
    pub(crate) fn new(store: &'a dyn ControlStore, access_lock: &'a Mutex<()>) -> Tokens<'a> {
        Tokens { store, access_lock }
    }

    /// Creates a token; returns its record and its secret, which is never shown again.
    pub(crate) fn create(
        &self,
        actor: &Actor<'_>,
        request: NewToken,
        now_ms: i64,
    ) -> Result<(TokenRecord, String), TokenError> {
        let lifetime = runway_access::parse_ttl(request.ttl.as_deref().unwrap_or(DEFAULT_TTL))
            .map_err(TokenError::InvalidTtl)?;
        if let Some(scope) = actor.scope
            && request.environment.as_deref() != Some(scope)
        {
            return Err(TokenError::ForeignScope {
                actor: actor.id.to_owned(),
                scope: scope.to_owned(),
            });
        }
        if let Some(scope) = &request.environment
            && !self.store.environments()?.iter().any(|e| &e.name == scope)
        {
            return Err(TokenError::NoSuchEnvironment(scope.clone()));
        }
        let minted = runway_access::mint_token();
        let record = TokenRecord {
            id: minted.id,
            hash: minted.hash.0,
            role: request.role,
            environment: request.environment,
            label: request.label.unwrap_or_default(),
            created_at_ms: now_ms,
            expires_at_ms: Some(now_ms.saturating_add(lifetime.as_millis() as i64)),
            revoked_at_ms: None,
            created_by: actor.id.to_owned(),
        };
        self.store.create_token(&record)?;
        Ok((record, minted.secret))
    }

    /// Revokes token `id`, unless it is the last unscoped admin token that works.
    pub(crate) fn revoke(
        &self,
        actor: &Actor<'_>,
        id: &str,
        now_ms: i64,
    ) -> Result<(), TokenError> {
        let _changing = self.access_lock.lock().unwrap_or_else(|e| e.into_inner());
        let tokens = self.store.tokens()?;
        let Some(token) = tokens.iter().find(|t| t.id == id && manages(actor, t)) else {
            return Err(TokenError::NoSuchToken(id.to_owned()));
        };
        if token.revoked_at_ms.is_some() {
            return Err(TokenError::AlreadyRevoked(id.to_owned()));
        }
        let working_admin = |t: &TokenRecord| {
            t.role == Role::Admin
                && t.environment.is_none()
                && t.revoked_at_ms.is_none()
                && t.expires_at_ms.is_none_or(|at| at > now_ms)
        };
        let admins = tokens.iter().filter(|t| working_admin(t)).count();
        if working_admin(token) && admins == 1 {
            return Err(TokenError::LastAdminToken(id.to_owned()));
        }
        self.store.revoke_token(id, now_ms)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use runway_store::{AccessStore, EnvironmentRecord, EnvironmentStore};
    use runway_store_sqlite::SqliteStore;

    use super::*;

    const ROOT: Actor<'static> = Actor {
        id: "bootstrap",
        scope: None,
    };

    fn token(role: Role, environment: Option<&str>) -> NewToken {
        NewToken {
            role,
            environment: environment.map(str::to_owned),
            ttl: Some("1d".into()),
            label: None,
        }
    }

    #[test]
    fn scoped_admins_mint_only_their_scope_and_scopes_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .ensure_environment(&EnvironmentRecord {
                name: "staging".into(),
                created_at_ms: 0,
                expires_at_ms: None,
                created_by: "system".into(),
                source: None,
                rules: Default::default(),
            })
            .unwrap();
        let lock = Mutex::new(());
        let tokens = Tokens::new(&store, &lock);
        let (record, secret) = tokens
            .create(&ROOT, token(Role::Deployer, Some("staging")), 1_000)
            .unwrap();
        assert!(secret.starts_with("rwy_"));
        assert_eq!(record.expires_at_ms, Some(1_000 + 86_400_000));
        let scoped = Actor {
            id: &record.id,
            scope: Some("staging"),
        };
        assert!(matches!(
            tokens.create(&scoped, token(Role::Admin, None), 0),
            Err(TokenError::ForeignScope { .. })
        ));
        assert!(matches!(
            tokens.create(&ROOT, token(Role::Viewer, Some("nowhere")), 0),
            Err(TokenError::NoSuchEnvironment(name)) if name == "nowhere"
        ));
        assert_eq!(store.tokens().unwrap().len(), 1);
    }

    #[test]
    fn the_last_working_admin_token_cannot_be_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let lock = Mutex::new(());
        let tokens = Tokens::new(&store, &lock);
        let (first, _) = tokens.create(&ROOT, token(Role::Admin, None), 0).unwrap();
        assert!(matches!(
            tokens.revoke(&ROOT, &first.id, 1),
            Err(TokenError::LastAdminToken(_))
        ));
        let (second, _) = tokens.create(&ROOT, token(Role::Admin, None), 0).unwrap();
        tokens.revoke(&ROOT, &first.id, 2).unwrap();
        assert!(matches!(
            tokens.revoke(&ROOT, &first.id, 3),
            Err(TokenError::AlreadyRevoked(_))
        ));
        assert!(matches!(
            tokens.revoke(&ROOT, &second.id, 4),
            Err(TokenError::LastAdminToken(_))
        ));
        assert!(matches!(
            tokens.revoke(&ROOT, "t-nothing", 5),
            Err(TokenError::NoSuchToken(_))
        ));
    }
}
