//! Lifespan: functions with `expires` warn as the date nears, answer 410 Gone once it has
//! passed (the gateway checks the clock on each request), and are marked retired in the
//! store and the audit log by this watcher.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use runway_store::ControlAuditRecord;
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// Functions expiring within this long are flagged in deploy output, `ls` and `/metrics`.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A time as RFC 3339 UTC, to the second.
pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// Keeps the expiry gauges current and retires functions whose time has come.
pub(crate) async fn watch(shared: Arc<Shared>, stop: CancellationToken) {
    let mut retired: HashSet<(String, i64)> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = crate::now_ms();
        crate::services::environments::remove_expired(&shared, now).await;
        let functions = shared
            .environments
            .load()
            .functions_where(|_| true, |f| f.expires_at_ms.is_some());
        for function in &functions {
            let Some(at) = function.expires_at_ms else {
                continue;
            };
            let labels = [function.name(), function.release.environment.as_str()];
            let soon = at - now <= EXPIRY_WARNING.as_millis() as i64;
            shared
                .metrics
                .expiring_soon
                .with_label_values(&labels)
                .set(i64::from(soon));
            let expired = at <= now;
            shared
                .metrics
                .retired
                .with_label_values(&labels)
                .set(i64::from(expired));
            if !expired || !retired.insert((function.name().to_owned(), at)) {
                continue;
            }
            let store = shared.store.clone();
            let (name, env) = (
                function.name().to_owned(),
                function.release.environment.clone(),
            );
            let marked =
                tokio::task::spawn_blocking(move || -> Result<bool, runway_store::StoreError> {
                    let newly = store.retire(&env, &name, now)?;
                    if newly {
                        store.append_control_audit(&ControlAuditRecord::now(
                            &env,
                            "system",
                            "function.retire",
                            name,
                            410,
                            "ok",
                            format!("expired at {}", format_ms(at)),
                        ))?;
                    }
                    Ok(newly)
                })
                .await;
            match marked {
                Ok(Ok(true)) => tracing::info!(
                    function = function.name(),
                    "function expired and is retired; it answers 410 Gone"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "marking an expired function retired failed")
                }
                Err(err) => tracing::error!(error = %err, "the retire task failed"),
            }
        }
    }
}
