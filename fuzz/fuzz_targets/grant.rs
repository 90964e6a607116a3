//! Grant strings → [`SqlGrant`], [`KvGrant`], [`OutboundGrant`] and [`SecretName`]: never
//! panics, and every grant accepted displays as text that parses back to the same grant.
//!
//! That round trip matters beyond tidiness: a release stores its policy as these strings
//! (serde `into = "String"`), so a grant whose display parsed differently would change what
//! a function is allowed after a restart. Each accepted grant must also cover what it names.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runway_policy::{KvGrant, OutboundGrant, SecretName, SqlGrant};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(grant) = SqlGrant::parse(text) {
        let shown = grant.to_string();
        assert_eq!(
            SqlGrant::parse(&shown).as_ref(),
            Ok(&grant),
            "{text:?} → {shown:?}"
        );
        assert_eq!(grant.table, grant.table.to_ascii_lowercase());
    }
    if let Ok(grant) = KvGrant::parse(text) {
        let shown = grant.to_string();
        assert_eq!(
            KvGrant::parse(&shown).as_ref(),
            Ok(&grant),
            "{text:?} → {shown:?}"
        );
        assert!(grant.covers(grant.access, &grant.key), "{text:?}");
        if grant.prefix {
            assert!(
                grant.covers(grant.access, &format!("{}x", grant.key)),
                "{text:?}"
            );
        }
    }
    if let Ok(grant) = OutboundGrant::parse(text) {
        let shown = grant.to_string();
        assert_eq!(
            OutboundGrant::parse(&shown).as_ref(),
            Ok(&grant),
            "{text:?} → {shown:?}"
        );
        assert!(
            grant.covers(grant.scheme, &grant.host, grant.port),
            "{text:?}"
        );
        assert_ne!(grant.port, 0, "{text:?}");
        // Deciding whether it names an internal destination must not panic either.
        let _ = grant.names_internal_destination();
    }
    if let Ok(name) = SecretName::parse(text) {
        assert_eq!(name.as_str(), text);
        assert_eq!(SecretName::parse(&name.to_string()).as_ref(), Ok(&name));
    }
});
