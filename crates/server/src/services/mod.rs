//! Domain services: what the admin API (and later the console) asks the node to do, with no
//! HTTP types. Each service has its own error type; `error.rs` maps them to status codes in
//! one place, and handlers only parse requests, call a service and shape the answer.
//!
//! The move is made one domain at a time: API keys, tokens, budgets and
//! the operator's view of jobs so far.

pub(crate) mod api_keys;
pub(crate) mod budgets;
pub(crate) mod jobs;
pub(crate) mod tokens;

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
