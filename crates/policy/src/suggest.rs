//! The least policy that covers what a function was observed doing.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Attempt, Capability, KvGrant, OutboundGrant, Policy, SecretName, SqlGrant};

/// The current policy widened by exactly the grants the observed attempts needed.
///
/// SQL grants name each table and operation seen; outbound grants each origin; secrets
/// each name. Key-value grants name each key, except that two or more keys of one access
/// sharing a first path segment (`sessions/a`, `sessions/b`) become that prefix
/// (`sessions/*`): keys with generated parts would otherwise never be covered. Attempts no
/// grant can allow (PRAGMA, ATTACH, schema changes) are left out.
pub fn suggest<'a>(current: &Policy, observed: impl IntoIterator<Item = &'a Attempt>) -> Policy {
    let mut sql: BTreeSet<SqlGrant> = current.sql.iter().cloned().collect();
    let mut kv: BTreeSet<KvGrant> = current.kv.iter().cloned().collect();
    let mut outbound: BTreeSet<OutboundGrant> = current.outbound.iter().cloned().collect();
    let mut secrets: BTreeSet<SecretName> = current.secrets.iter().cloned().collect();
    let mut kv_keys: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for attempt in observed {
        let grant = format!("{}:{}", attempt.operation, attempt.target);
        match attempt.capability {
            Capability::Sql => sql.extend(SqlGrant::parse(&grant).ok()),
            Capability::Outbound => outbound.extend(OutboundGrant::parse(&attempt.target).ok()),
            Capability::Secrets => secrets.extend(SecretName::parse(&attempt.target).ok()),
            // A key containing `*` would read as a wildcard grant; it is never suggested.
            Capability::Kv if attempt.target.contains('*') => {}
            Capability::Kv => {
                let segment = match attempt.target.split_once('/') {
                    Some((first, _)) => format!("{first}/"),
                    None => String::new(),
                };
                kv_keys
                    .entry((attempt.operation.clone(), segment))
                    .or_default()
                    .insert(attempt.target.clone());
            }
        }
    }
    for ((access, segment), keys) in kv_keys {
        let patterns: Vec<String> = if !segment.is_empty() && keys.len() > 1 {
            vec![format!("{segment}*")]
        } else {
            keys.into_iter().collect()
        };
        for pattern in patterns {
            if let Ok(grant) = KvGrant::parse(&format!("{access}:{pattern}"))
                && !kv.iter().any(|g| {
                    g.access == grant.access && !grant.prefix && g.covers(grant.access, &grant.key)
                })
            {
                kv.insert(grant);
            }
        }
    }
    Policy {
        sql: sql.into_iter().collect(),
        kv: kv.into_iter().collect(),
        outbound: outbound.into_iter().collect(),
        secrets: secrets.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widens_by_exactly_what_was_seen() {
        let current: Policy = toml::from_str("sql = [\"select:orders\"]").unwrap();
        let seen = [
            Attempt::new(Capability::Sql, "insert", "audit_log"),
            Attempt::new(Capability::Sql, "pragma", "table_info"),
            Attempt::new(Capability::Kv, "write", "sessions/a1"),
            Attempt::new(Capability::Kv, "write", "sessions/b2"),
            Attempt::new(Capability::Kv, "read", "feature-flags"),
            Attempt::new(Capability::Outbound, "GET", "http://127.0.0.1:9000"),
            Attempt::new(Capability::Secrets, "get", "PAYMENT_KEY"),
        ];
        let suggested = suggest(&current, &seen);
        assert_eq!(
            suggested.to_toml(),
            "[function.policy]\nsql = [\"select:orders\", \"insert:audit_log\"]\n\
             kv = [\"read:feature-flags\", \"write:sessions/*\"]\n\
             outbound = [\"http://127.0.0.1:9000\"]\nsecrets = [\"PAYMENT_KEY\"]\n"
        );
    }
}
