//! Metering: invocation records, prices, the REPORT line, and the batching writer that
//! persists records off the request path.
//!
//! Money is kept in integer pico-dollars ([`PicoUsd`]), so sums over millions of
//! invocations are exact. This crate has no wasmtime or storage dependency: the server
//! turns a runtime outcome into an [`InvocationRecord`], and any [`RecordSink`] (the
//! control-plane store) persists batches of them.

mod writer;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use writer::{MAX_BACKLOG, MeterHandle, MeterStats, MeterWriter, RecordSink, SinkError};

/// An amount of money in US dollars × 10⁻¹²: small enough for one 1 ms invocation at 128 MB
/// (about 2,083 pUSD of compute), large enough for ±9.2 million dollars in an `i64`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PicoUsd(pub u64);

impl PicoUsd {
    /// The amount in dollars, for display and Prometheus (which only has floats).
    pub fn as_usd(self) -> f64 {
        self.0 as f64 / 1e12
    }
}

impl std::ops::Add for PicoUsd {
    type Output = PicoUsd;

    fn add(self, other: PicoUsd) -> PicoUsd {
        PicoUsd(self.0 + other.0)
    }
}

impl fmt::Display for PicoUsd {
    /// `$0.000000208333`: dollars with all twelve decimals, so a single invocation is visible.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "${}.{:012}",
            self.0 / 1_000_000_000_000,
            self.0 % 1_000_000_000_000
        )
    }
}

impl std::str::FromStr for PicoUsd {
    type Err = String;

    /// Parses a decimal dollar amount such as `0.0000166667` exactly.
    fn from_str(text: &str) -> Result<PicoUsd, String> {
        let bad = || {
            format!("invalid price `{text}`: write dollars as a decimal, such as `0.0000166667`")
        };
        let trimmed = text.trim().trim_start_matches('$');
        let (whole, fraction) = trimmed.split_once('.').unwrap_or((trimmed, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole.chars().all(|c| c.is_ascii_digit())
            || !fraction.chars().all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        if fraction.len() > 12 {
            return Err(format!(
                "invalid price `{text}`: at most 12 decimals (one pico-dollar)"
            ));
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let fraction_value: u64 = format!("{fraction:0<12}").parse().map_err(|_| bad())?;
        whole
            .checked_mul(1_000_000_000_000)
            .and_then(|w| w.checked_add(fraction_value))
            .map(PicoUsd)
            .ok_or_else(bad)
    }
}

/// What compute and requests cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pricing {
    /// Price of one GB-second (memory size in GB × billed seconds).
    pub per_gb_second: PicoUsd,
    /// Price of one request, whatever it did.
    pub per_request: PicoUsd,
}

impl Pricing {
    /// AWS Lambda's published on-demand x86 prices (us-east-1, first pricing tier):
    /// $0.0000166667 per GB-second and $0.20 per million requests.
    /// Source: <https://aws.amazon.com/lambda/pricing/>.
    pub const AWS_LAMBDA_X86: Pricing = Pricing {
        per_gb_second: PicoUsd(16_666_700),
        per_request: PicoUsd(200_000),
    };

    /// Bills one invocation: duration rounded up to the next millisecond, memory in GB as
    /// Lambda counts it (MB / 1024).
    pub fn charge(&self, memory_mb: u64, duration: Duration) -> Charge {
        let billed_ms = (duration.as_nanos().div_ceil(1_000_000) as u64).max(1);
        // GB-seconds = memory_mb / 1024 × billed_ms / 1000; keep it exact in integers.
        let mb_ms = u128::from(memory_mb) * u128::from(billed_ms);
        let compute = mb_ms * u128::from(self.per_gb_second.0) / 1_024_000;
        Charge {
            billed_ms,
            gb_seconds: mb_ms as f64 / 1_024_000.0,
            cost: PicoUsd(compute as u64 + self.per_request.0),
        }
    }
}

impl Default for Pricing {
    fn default() -> Pricing {
        Pricing::AWS_LAMBDA_X86
    }
}

/// What one invocation is billed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charge {
    /// Duration rounded up to a whole millisecond (at least 1).
    pub billed_ms: u64,
    /// Memory size in GB × billed seconds.
    pub gb_seconds: f64,
    /// Compute plus request price.
    pub cost: PicoUsd,
}

/// How an invocation ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum InvocationStatus {
    /// The handler returned.
    Ok,
    /// Trap, failed instantiation or no response.
    Error,
    /// Stopped at its timeout.
    Timeout,
    /// Failed after memory growth was refused.
    OutOfMemory,
    /// The caller went away before the response was complete, and the guest was stopped
    /// (billed up to that moment; not the function's failure).
    ClientGone,
}

impl InvocationStatus {
    /// Every status, for pre-registering metrics.
    pub const ALL: [InvocationStatus; 5] = [
        InvocationStatus::Ok,
        InvocationStatus::Error,
        InvocationStatus::Timeout,
        InvocationStatus::OutOfMemory,
        InvocationStatus::ClientGone,
    ];

    /// The lower-case name used in records, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationStatus::Ok => "ok",
            InvocationStatus::Error => "error",
            InvocationStatus::Timeout => "timeout",
            InvocationStatus::OutOfMemory => "out_of_memory",
            InvocationStatus::ClientGone => "client_gone",
        }
    }

    /// Whether the function failed (a caller that went away is not the function's failure).
    pub fn is_failure(self) -> bool {
        !matches!(self, InvocationStatus::Ok | InvocationStatus::ClientGone)
    }

    /// Parses the name written by [`InvocationStatus::as_str`].
    pub fn parse(name: &str) -> Option<InvocationStatus> {
        InvocationStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LogStream {
    /// Guest stdout.
    Stdout,
    /// Guest stderr.
    Stderr,
    /// Written by the platform: the REPORT line and failure reasons.
    Platform,
}

impl LogStream {
    /// The lower-case name used in storage and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Platform => "platform",
        }
    }

    /// Parses the name written by [`LogStream::as_str`].
    pub fn parse(name: &str) -> Option<LogStream> {
        [LogStream::Stdout, LogStream::Stderr, LogStream::Platform]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// One metered invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvocationRecord {
    /// Unique id, also sent to the caller as `x-runway-request-id`.
    pub request_id: String,
    /// Environment the function ran in.
    pub environment: String,
    /// Function name.
    pub function: String,
    /// Release number that served it.
    pub release: u32,
    /// Start, in milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// Measured duration, in microseconds.
    pub duration_us: u64,
    /// Duration rounded up to whole milliseconds.
    pub billed_ms: u64,
    /// Memory size of the release, in MiB.
    pub memory_mb: u64,
    /// Linear-memory high-water mark, in bytes.
    pub max_memory_bytes: u64,
    /// Instantiation time, in microseconds.
    pub instantiate_us: u64,
    /// How it ended.
    pub status: InvocationStatus,
    /// HTTP status the caller saw.
    pub http_status: u16,
    /// GB-seconds billed.
    pub gb_seconds: f64,
    /// Cost of this invocation.
    pub cost: PicoUsd,
    /// Guest stdout (capped), not persisted as part of the record but as log lines.
    #[serde(skip)]
    pub stdout: Vec<u8>,
    /// Guest stderr (capped).
    #[serde(skip)]
    pub stderr: Vec<u8>,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time the guest was paused for having used its CPU share (CPU follows memory).
    #[serde(default)]
    pub cpu_throttled_us: u64,
    /// Invocations of the function running when this one started, itself included.
    #[serde(default)]
    pub concurrency: u32,
}

impl InvocationRecord {
    /// The line AWS Lambda users know, e.g.
    /// `REPORT RequestId: … Duration: 1.23 ms Billed Duration: 2 ms Memory Size: 128 MB Max Memory Used: 18 MB`.
    pub fn report_line(&self) -> String {
        format!(
            "REPORT RequestId: {} Duration: {:.2} ms Billed Duration: {} ms Memory Size: {} MB \
             Max Memory Used: {} MB",
            self.request_id,
            self.duration_us as f64 / 1000.0,
            self.billed_ms,
            self.memory_mb,
            self.max_memory_bytes.div_ceil(1 << 20),
        )
    }

    /// Log lines for this invocation: guest output, then the failure reason, then REPORT.
    pub fn log_lines(&self) -> Vec<(LogStream, String)> {
        let mut lines = Vec::new();
        for (stream, bytes) in [
            (LogStream::Stdout, &self.stdout),
            (LogStream::Stderr, &self.stderr),
        ] {
            if bytes.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(bytes);
            lines.extend(text.lines().map(|line| (stream, line.to_owned())));
        }
        if let Some(error) = &self.error {
            lines.push((
                LogStream::Platform,
                format!(
                    "ERROR RequestId: {} Status: {} {error}",
                    self.request_id,
                    self.status.as_str()
                ),
            ));
        }
        lines.push((LogStream::Platform, self.report_line()));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bills_rounded_up_milliseconds_at_lambda_prices() {
        let charge = Pricing::AWS_LAMBDA_X86.charge(128, Duration::from_micros(1_230));
        assert_eq!(charge.billed_ms, 2);
        assert!((charge.gb_seconds - 0.00025).abs() < 1e-12);
        // 0.00025 GB-s × $0.0000166667 = $0.00000000416667..., plus $0.0000002 per request.
        assert_eq!(charge.cost, PicoUsd(4_166 + 200_000));
    }

    #[test]
    fn one_gb_for_one_second_costs_the_gb_second_price_plus_a_request() {
        let charge = Pricing::AWS_LAMBDA_X86.charge(1024, Duration::from_secs(1));
        assert_eq!(charge.billed_ms, 1000);
        assert_eq!(charge.gb_seconds, 1.0);
        assert_eq!(charge.cost, PicoUsd(16_666_700 + 200_000));
    }

    #[test]
    fn parses_prices_exactly() {
        assert_eq!(
            "0.0000166667".parse::<PicoUsd>().unwrap(),
            PicoUsd(16_666_700)
        );
        assert_eq!("0.0000002".parse::<PicoUsd>().unwrap(), PicoUsd(200_000));
        assert_eq!("1".parse::<PicoUsd>().unwrap(), PicoUsd(1_000_000_000_000));
        assert!("0.1234567890123".parse::<PicoUsd>().is_err());
        assert!("cheap".parse::<PicoUsd>().is_err());
        assert_eq!(PicoUsd(200_000).to_string(), "$0.000000200000");
    }

    #[test]
    fn report_line_has_lambda_shape() {
        let record = InvocationRecord {
            cpu_throttled_us: 0,
            concurrency: 1,
            request_id: "r-1".into(),
            environment: "prod".into(),
            function: "hello".into(),
            release: 1,
            started_at_ms: 0,
            duration_us: 1_234,
            billed_ms: 2,
            memory_mb: 128,
            max_memory_bytes: 17 * (1 << 20) + 1,
            instantiate_us: 10,
            status: InvocationStatus::Ok,
            http_status: 200,
            gb_seconds: 0.00025,
            cost: PicoUsd(0),
            stdout: b"one\ntwo\n".to_vec(),
            stderr: Vec::new(),
            error: None,
        };
        assert_eq!(
            record.report_line(),
            "REPORT RequestId: r-1 Duration: 1.23 ms Billed Duration: 2 ms Memory Size: 128 MB \
             Max Memory Used: 18 MB"
        );
        let lines = record.log_lines();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], (LogStream::Stdout, "two".to_owned()));
    }
}
