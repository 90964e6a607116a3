//! Domain services: what the admin API (and later the console) asks the node to do, with no
//! admin-API types. Each service has its own error type; `api/error.rs` maps them to status
//! codes in one place, and handlers only parse requests, call a service and shape the answer.
//! See docs/decisions/008-service-layer.md.

pub(crate) mod api_keys;
pub(crate) mod artifacts;
pub(crate) mod budgets;
pub(crate) mod environments;
pub(crate) mod jobs;
pub(crate) mod releases;
pub(crate) mod tokens;
pub(crate) mod worker;

/// Writes one control-plane audit record; a failure is logged, never hidden from the log.
pub(crate) async fn audit(
    shared: &std::sync::Arc<crate::Shared>,
    record: runway_store::ControlAuditRecord,
) {
    let store = shared.store.clone();
    let written = tokio::task::spawn_blocking(move || store.append_control_audit(&record)).await;
    match written {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::error!(error = %err, "writing the control-plane audit log failed"),
        Err(err) => tracing::error!(error = %err, "the audit task failed"),
    }
}

/// An environment with no functions and no keys loaded, for the services' unit tests.
#[cfg(test)]
pub(crate) fn test_environment(name: &str) -> crate::environments::Environment {
    crate::environments::Environment::new(
        runway_store::EnvironmentRecord {
            name: name.into(),
            created_at_ms: 0,
            expires_at_ms: None,
            created_by: "system".into(),
            source: None,
            rules: Default::default(),
        },
        crate::environments::Rules::default(),
        true,
        crate::live::RouteTable::default(),
        crate::invocation::ApiKeyTable::default(),
    )
}

#[cfg(test)]
mod tests {
    /// Every service's source, by file name.
    const SOURCES: &[(&str, &str)] = &[
        ("api_keys.rs", include_str!("api_keys.rs")),
        ("artifacts.rs", include_str!("artifacts.rs")),
        ("budgets.rs", include_str!("budgets.rs")),
        ("environments.rs", include_str!("environments.rs")),
        ("jobs.rs", include_str!("jobs.rs")),
        ("releases.rs", include_str!("releases.rs")),
        ("tokens.rs", include_str!("tokens.rs")),
        ("worker.rs", include_str!("worker.rs")),
        ("mod.rs", include_str!("mod.rs")),
    ];

    #[test]
    fn services_know_nothing_of_the_admin_api() {
        // Split so that this test's own text does not match.
        let forbidden = [
            ["crate::", "api"].concat(),
            ["axum", "::"].concat(),
            ["Api", "Error"].concat(),
        ];
        for (file, source) in SOURCES {
            for word in &forbidden {
                assert!(
                    !source.contains(word.as_str()),
                    "services/{file} uses `{word}`: a service returns its own error type and \
                     the admin API maps it in api/error.rs"
                );
            }
        }
        let listed = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/services"))
            .unwrap()
            .count();
        assert_eq!(
            listed,
            SOURCES.len(),
            "a service file is missing from SOURCES"
        );
    }
}
