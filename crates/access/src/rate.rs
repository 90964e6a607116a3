//! Request rates (`100/s`, `600/min`) and the token bucket that enforces one.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A request rate: `count` requests per `per`, with bursts of up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate {
    /// Requests allowed per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl TryFrom<String> for Rate {
    type Error = String;

    fn try_from(text: String) -> Result<Rate, String> {
        text.parse()
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        let invalid = |why: &str| {
            format!(
                "invalid rate `{text}`: {why}; write it as COUNT/UNIT, e.g. `100/s`, `600/min` or `5000/h`"
            )
        };
        let (count, unit) = text.split_once('/').ok_or_else(|| invalid("no `/`"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| invalid("the count is not a whole number"))?;
        if count == 0 {
            return Err(invalid("the count must be at least 1"));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(invalid("the unit must be s, min, h or d")),
        };
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => "d",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl From<Rate> for String {
    fn from(rate: Rate) -> String {
        rate.to_string()
    }
}

/// A token bucket for one rate: full at the start, refilled continuously.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    /// A full bucket for `rate`.
    pub fn new(rate: Rate) -> RateLimiter {
        RateLimiter {
            rate,
            state: Mutex::new(Bucket::full(rate, Instant::now())),
        }
    }

    /// The rate it enforces.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one request's token, or says how long until one is available.
    pub fn try_acquire(&self, now: Instant) -> Result<(), Duration> {
        let mut bucket = self.state.lock().unwrap_or_else(|e| e.into_inner());
        bucket.take(self.rate, now)
    }
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.count),
            refilled_at: now,
        }
    }

    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        if rate.count == 0 {
            // A node's share of a cluster-wide rate can be nothing: it never admits.
            return Err(rate.per);
        }
        let capacity = f64::from(rate.count);
        let per_second = capacity / rate.per.as_secs_f64();
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(capacity);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_second))
        }
    }

    /// Whether the bucket would be full again by `now` (nothing to remember about its key).
    fn refilled_by(&self, rate: Rate, now: Instant) -> bool {
        let per_second = f64::from(rate.count) / rate.per.as_secs_f64();
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens + elapsed * per_second >= f64::from(rate.count)
    }
}

/// One token bucket per key (a client address, a token id), holding at most `max_keys`
/// buckets: a flood of distinct keys cannot grow it without bound.
#[derive(Debug)]
pub struct KeyedRateLimiter {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<std::collections::HashMap<String, Bucket>>,
}

impl KeyedRateLimiter {
    /// Buckets for `rate`, at most `max_keys` of them.
    pub fn new(rate: Rate, max_keys: usize) -> KeyedRateLimiter {
        KeyedRateLimiter {
            rate,
            max_keys,
            buckets: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is available.
    ///
    /// When the table is full, buckets that have refilled are forgotten first; if that
    /// frees nothing, every bucket is (a flood of new keys resets the others' budgets
    /// rather than growing memory).
    pub fn try_acquire(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            return bucket.take(self.rate, now);
        }
        if buckets.len() >= self.max_keys {
            let rate = self.rate;
            buckets.retain(|_, bucket| !bucket.refilled_by(rate, now));
            if buckets.len() >= self.max_keys {
                buckets.clear();
            }
        }
        let mut bucket = Bucket::full(self.rate, now);
        let taken = bucket.take(self.rate, now);
        buckets.insert(key.to_owned(), bucket);
        taken
    }
}

/// A rate travels as the text written (`100/s`).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Rate {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .description(Some("Requests per second, minute or hour: `COUNT/UNIT`."))
            .examples(["100/s"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Rate {}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rate_of_nothing_refuses_every_request_and_never_panics() {
        let limiter = RateLimiter::new(Rate {
            count: 0,
            per: Duration::from_secs(60),
        });
        let now = Instant::now();
        assert_eq!(limiter.try_acquire(now), Err(Duration::from_secs(60)));
        assert!(
            limiter
                .try_acquire(now + Duration::from_secs(3600))
                .is_err()
        );
    }

    use super::*;

    #[test]
    fn keyed_buckets_are_separate_and_bounded_in_number() {
        let limiter = KeyedRateLimiter::new("2/min".parse().unwrap(), 3);
        let now = Instant::now();
        assert!(limiter.try_acquire("a", now).is_ok());
        assert!(limiter.try_acquire("a", now).is_ok());
        assert!(limiter.try_acquire("a", now).is_err());
        assert!(
            limiter.try_acquire("b", now).is_ok(),
            "another key has its own budget"
        );
        for key in ["c", "d", "e", "f"] {
            _ = limiter.try_acquire(key, now);
        }
        assert!(limiter.buckets.lock().unwrap().len() <= 3);
        // A minute later every bucket has refilled and is forgotten to make room.
        let later = now + Duration::from_secs(60);
        assert!(limiter.try_acquire("a", later).is_ok());
    }

    #[test]
    fn rates_parse_and_print_back() {
        let rate: Rate = "600/min".parse().unwrap();
        assert_eq!(rate.count, 600);
        assert_eq!(rate.per, Duration::from_secs(60));
        assert_eq!(rate.to_string(), "600/min");
        for bad in ["10", "0/s", "x/s", "10/week"] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn a_bucket_allows_a_burst_then_refuses_until_it_refills() {
        let limiter = RateLimiter::new("2/s".parse().unwrap());
        let start = Instant::now();
        assert!(limiter.try_acquire(start).is_ok());
        assert!(limiter.try_acquire(start).is_ok());
        let wait = limiter.try_acquire(start).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(
            limiter
                .try_acquire(start + Duration::from_millis(500))
                .is_ok()
        );
        assert!(
            limiter
                .try_acquire(start + Duration::from_millis(500))
                .is_err()
        );
    }
}
