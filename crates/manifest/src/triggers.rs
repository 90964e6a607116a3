//! The triggers other than plain HTTP routes, invocation access, and lifespan: cron
//! schedules with time zones, the queue's retry settings, `auth` on HTTP routes and
//! `expires`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::units::HumanDuration;

/// Who may call an HTTP route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum InvocationAuth {
    /// Anyone who reaches the gateway.
    #[default]
    Public,
    /// A caller holding an API key issued for this function (`runway key create`).
    ApiKey,
    /// A caller holding a JWT that the function's `[function.jwt]` key set verifies.
    Jwt,
}

impl InvocationAuth {
    /// The name as written in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationAuth::Public => "public",
            InvocationAuth::ApiKey => "api-key",
            InvocationAuth::Jwt => "jwt",
        }
    }

    pub(crate) fn is_public(&self) -> bool {
        *self == InvocationAuth::Public
    }
}

/// A cron expression: five fields (minute first), or six with seconds first.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CronExpr {
    text: String,
    cron: croner::Cron,
}

impl CronExpr {
    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?})", self.text)
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &CronExpr) -> bool {
        self.text == other.text
    }
}

impl Eq for CronExpr {}

impl TryFrom<String> for CronExpr {
    type Error = String;

    fn try_from(text: String) -> Result<CronExpr, String> {
        let fields = text.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "invalid cron expression `{text}`: it has {fields} fields; write 5 (minute hour \
                 day-of-month month day-of-week, e.g. `0 3 * * *`) or 6 with seconds first \
                 (e.g. `*/10 * * * * *`)"
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(&text)
            .map_err(|err| format!("invalid cron expression `{text}`: {err}"))?;
        Ok(CronExpr { text, cron })
    }
}

impl From<CronExpr> for String {
    fn from(expr: CronExpr) -> String {
        expr.text
    }
}

/// An IANA time zone name (`Europe/Paris`), or `UTC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, example = "Europe/Paris"))]
pub struct Zone(chrono_tz::Tz);

impl Default for Zone {
    fn default() -> Zone {
        Zone(chrono_tz::UTC)
    }
}

impl TryFrom<String> for Zone {
    type Error = String;

    fn try_from(text: String) -> Result<Zone, String> {
        chrono_tz::Tz::from_str(&text).map(Zone).map_err(|_| {
            format!(
                "unknown time zone `{text}`: use an IANA name such as `UTC`, `Europe/Paris` or \
                 `America/New_York`"
            )
        })
    }
}

impl From<Zone> for String {
    fn from(zone: Zone) -> String {
        zone.0.name().to_owned()
    }
}

fn is_utc(zone: &Zone) -> bool {
    zone.0 == chrono_tz::UTC
}

/// What a schedule does about ticks that passed while no node was running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MissedTicks {
    /// Run once for the latest missed tick, then carry on (like anacron).
    #[default]
    RunOnce,
    /// Skip them all and wait for the next tick.
    Skip,
}

fn is_run_once(missed: &MissedTicks) -> bool {
    *missed == MissedTicks::RunOnce
}

/// `schedule = { cron = "0 3 * * *", timezone = "Europe/Paris" }`: a run per tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleTrigger {
    /// When to run.
    pub cron: CronExpr,
    /// The zone the expression is read in; default UTC.
    #[serde(default, skip_serializing_if = "is_utc")]
    pub timezone: Zone,
    /// Path of the request the function receives; default `/`.
    #[serde(default = "default_schedule_path")]
    pub path: String,
    /// What to do about ticks missed while no node ran.
    #[serde(default, skip_serializing_if = "is_run_once")]
    pub missed: MissedTicks,
}

fn default_schedule_path() -> String {
    "/".into()
}

impl ScheduleTrigger {
    pub(crate) fn problems(&self, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.path.starts_with('/') {
            problems.push(format!(
                "function `{name}`: schedule path = \"{}\" must start with `/`",
                self.path
            ));
        }
        problems
    }

    /// The first tick strictly after `after_ms`, in milliseconds since the Unix epoch.
    pub fn next_tick_after(&self, after_ms: i64) -> Option<i64> {
        let after = self.zoned(after_ms)?;
        self.cron
            .cron
            .find_next_occurrence(&after, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The latest tick at or before `at_ms`.
    pub fn latest_tick_at_or_before(&self, at_ms: i64) -> Option<i64> {
        let at = self.zoned(at_ms)?;
        self.cron
            .cron
            .find_previous_occurrence(&at, true)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    fn zoned(&self, ms: i64) -> Option<DateTime<chrono_tz::Tz>> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.with_timezone(&self.timezone.0))
    }
}

/// `queue = { max_attempts = 5, backoff = "1s", max_backoff = "5m" }`: asynchronous
/// invocations, retried with exponential backoff, then dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueTrigger {
    /// Attempts before a job is dead-lettered (1 means no retry).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry; doubled for each retry after it.
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
    /// Longest delay between retries.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
}

impl Default for QueueTrigger {
    fn default() -> QueueTrigger {
        QueueTrigger {
            max_attempts: default_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_attempts() -> u32 {
    5
}

fn default_backoff() -> HumanDuration {
    HumanDuration::from_millis(1_000)
}

fn default_max_backoff() -> HumanDuration {
    HumanDuration::from_millis(300_000)
}

/// Most attempts a queue may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest delay between retries: a day.
pub const MAX_BACKOFF: HumanDuration = HumanDuration::from_millis(86_400_000);

impl QueueTrigger {
    /// How long to wait after failed attempt number `attempt` (1-based) before the next.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let base = self.backoff.as_duration();
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        base.saturating_mul(factor)
            .min(self.max_backoff.as_duration())
    }

    pub(crate) fn problems(&self, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            problems.push(format!(
                "function `{name}`: queue max_attempts = {} is outside 1 to {MAX_ATTEMPTS}",
                self.max_attempts
            ));
        }
        if self.max_backoff > MAX_BACKOFF {
            problems.push(format!(
                "function `{name}`: queue max_backoff = \"{}\" is over {MAX_BACKOFF}",
                self.max_backoff
            ));
        }
        if self.backoff.millis() == 0 || self.backoff > self.max_backoff {
            problems.push(format!(
                "function `{name}`: queue backoff = \"{}\" must be above zero and at most \
                 max_backoff = \"{}\"",
                self.backoff, self.max_backoff
            ));
        }
        problems
    }
}

/// When a function stops serving: `expires = "2027-06-30"` (through the end of that day, UTC)
/// or an RFC 3339 instant (`2027-06-30T12:00:00+02:00`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Expiry {
    text: String,
    at_ms: i64,
}

impl Expiry {
    /// The first instant the function no longer serves, in milliseconds since the Unix epoch.
    pub fn at_ms(&self) -> i64 {
        self.at_ms
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Expiry {
    type Err = String;

    fn from_str(text: &str) -> Result<Expiry, String> {
        let at_ms = if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            let next_day = date
                .succ_opt()
                .ok_or_else(|| format!("date `{text}` is out of range"))?;
            next_day
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc()
                .timestamp_millis()
        } else if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
            instant.timestamp_millis()
        } else {
            return Err(format!(
                "invalid expiry `{text}`: write a date such as \"2027-06-30\" (the function serves \
                 through the end of that day, UTC) or an RFC 3339 time such as \
                 \"2027-06-30T18:00:00Z\""
            ));
        };
        Ok(Expiry {
            text: text.to_owned(),
            at_ms,
        })
    }
}

impl TryFrom<String> for Expiry {
    type Error = String;

    fn try_from(text: String) -> Result<Expiry, String> {
        text.parse()
    }
}

impl From<Expiry> for String {
    fn from(expiry: Expiry) -> String {
        expiry.text
    }
}

/// One `[[function.trigger]]` table: exactly one of `http`, `schedule` or `queue`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrigger {
    #[serde(default)]
    pub(crate) http: Option<crate::HttpTrigger>,
    #[serde(default)]
    pub(crate) schedule: Option<ScheduleTrigger>,
    #[serde(default)]
    pub(crate) queue: Option<QueueTrigger>,
}

/// `[function.jwt]` as written: the key set is a file beside the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwt {
    pub(crate) jwks: std::path::PathBuf,
    pub(crate) issuer: String,
    pub(crate) audience: String,
    #[serde(default)]
    pub(crate) leeway: Option<HumanDuration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, zone: &str) -> ScheduleTrigger {
        ScheduleTrigger {
            cron: CronExpr::try_from(cron.to_owned()).unwrap(),
            timezone: Zone::try_from(zone.to_owned()).unwrap(),
            path: "/".into(),
            missed: MissedTicks::RunOnce,
        }
    }

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn ticks_follow_the_time_zone() {
        let daily = schedule("0 3 * * *", "Europe/Paris");
        // 03:00 in Paris in winter is 02:00 UTC.
        let next = daily.next_tick_after(ms("2026-12-01T10:00:00Z")).unwrap();
        assert_eq!(next, ms("2026-12-02T02:00:00Z"));
        let utc = schedule("0 3 * * *", "UTC");
        assert_eq!(
            utc.next_tick_after(ms("2026-12-01T10:00:00Z")).unwrap(),
            ms("2026-12-02T03:00:00Z")
        );
        assert_eq!(
            utc.latest_tick_at_or_before(ms("2026-12-02T03:00:00Z"))
                .unwrap(),
            ms("2026-12-02T03:00:00Z")
        );
    }

    #[test]
    fn six_fields_mean_seconds() {
        let every_ten = schedule("*/10 * * * * *", "UTC");
        assert_eq!(
            every_ten
                .next_tick_after(ms("2026-12-01T10:00:01Z"))
                .unwrap(),
            ms("2026-12-01T10:00:10Z")
        );
    }

    #[test]
    fn bad_cron_and_zone_are_named() {
        let err = CronExpr::try_from("* * *".to_owned()).unwrap_err();
        assert!(err.contains("3 fields"), "{err}");
        let err = CronExpr::try_from("61 * * * *".to_owned()).unwrap_err();
        assert!(err.contains("61 * * * *"), "{err}");
        let err = Zone::try_from("Mars/Olympus".to_owned()).unwrap_err();
        assert!(err.contains("Mars/Olympus"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let queue = QueueTrigger {
            max_attempts: 10,
            backoff: HumanDuration::from_millis(100),
            max_backoff: HumanDuration::from_millis(1_000),
        };
        let delays: Vec<u128> = (1..=6).map(|a| queue.delay_after(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(queue.delay_after(200).as_millis(), 1000);
    }

    #[test]
    fn a_date_expires_at_the_end_of_that_day() {
        let expiry: Expiry = "2027-06-30".parse().unwrap();
        assert_eq!(expiry.at_ms(), ms("2027-07-01T00:00:00Z"));
        let instant: Expiry = "2027-06-30T18:00:00+02:00".parse().unwrap();
        assert_eq!(instant.at_ms(), ms("2027-06-30T16:00:00Z"));
        assert!(
            "30/06/2027"
                .parse::<Expiry>()
                .unwrap_err()
                .contains("30/06/2027")
        );
    }
}
