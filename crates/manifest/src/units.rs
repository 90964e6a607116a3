//! Human-readable sizes and durations, validated where they are parsed.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A size in bytes written with a binary unit: `512KiB`, `128MiB`, `1GiB`.
///
/// Decimal units (`MB`) are refused rather than guessed at: AWS Lambda writes "MB" for MiB,
/// so `128MB` is ambiguous and the error asks for `128MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, example = "128MiB"))]
pub struct ByteSize(u64);

impl ByteSize {
    /// A size of `n` mebibytes.
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n * 1024 * 1024)
    }

    /// A size of `n` bytes.
    pub const fn from_bytes(n: u64) -> ByteSize {
        ByteSize(n)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size in whole MiB, rounded up (what Lambda's REPORT line calls "MB").
    pub const fn mib_ceil(self) -> u64 {
        self.0.div_ceil(1024 * 1024)
    }
}

const UNITS: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

impl TryFrom<String> for ByteSize {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let digits_end = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(digits_end);
        let unit = unit.trim();
        let hint = || {
            format!(
                "invalid size `{text}`: write a whole number and a binary unit, such as \
                 `128MiB`, `512KiB` or `1GiB`"
            )
        };
        let number: u64 = number.parse().map_err(|_| hint())?;
        let Some((_, multiplier)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            let decimal = match unit.to_ascii_uppercase().as_str() {
                "KB" | "K" => Some("KiB"),
                "MB" | "M" => Some("MiB"),
                "GB" | "G" => Some("GiB"),
                _ => None,
            };
            return Err(match decimal {
                Some(binary) => format!(
                    "invalid size `{text}`: `{unit}` is ambiguous; write `{number}{binary}`"
                ),
                None => hint(),
            });
        };
        number
            .checked_mul(*multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size `{text}`: too large"))
    }
}

impl From<ByteSize> for String {
    fn from(size: ByteSize) -> String {
        size.to_string()
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, multiplier) in UNITS {
            if self.0 >= multiplier && self.0.is_multiple_of(multiplier) {
                return write!(f, "{}{name}", self.0 / multiplier);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A duration written with a unit: `250ms`, `3s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, example = "3s"))]
pub struct HumanDuration(u64);

impl HumanDuration {
    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> HumanDuration {
        HumanDuration(ms)
    }

    /// The duration in milliseconds.
    pub const fn millis(self) -> u64 {
        self.0
    }

    /// The duration as a [`Duration`].
    pub const fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parsed = humantime::parse_duration(text.trim()).map_err(|err| {
            format!("invalid duration `{text}`: {err}; write a number and a unit, such as `3s`, `250ms` or `2m`")
        })?;
        if parsed.subsec_nanos() % 1_000_000 != 0 {
            return Err(format!(
                "invalid duration `{text}`: the smallest unit is one millisecond"
            ));
        }
        u64::try_from(parsed.as_millis())
            .map(HumanDuration)
            .map_err(|_| format!("invalid duration `{text}`: too long"))
    }
}

impl From<HumanDuration> for String {
    fn from(duration: HumanDuration) -> String {
        duration.to_string()
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms != 0 && ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms != 0 && ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms != 0 && ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_units() {
        assert_eq!("128MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(128));
        assert_eq!("1GiB".parse::<ByteSize>().unwrap(), ByteSize::mib(1024));
        assert_eq!("512KiB".parse::<ByteSize>().unwrap().bytes(), 512 * 1024);
    }

    #[test]
    fn refuses_decimal_units_with_the_binary_spelling() {
        let err = "128MB".parse::<ByteSize>().unwrap_err();
        assert!(err.contains("write `128MiB`"), "{err}");
    }

    #[test]
    fn refuses_missing_unit_and_garbage() {
        assert!("128".parse::<ByteSize>().is_err());
        assert!("lots".parse::<ByteSize>().is_err());
        assert!("-1MiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!(ByteSize::mib(2048).to_string(), "2GiB");
        assert_eq!(ByteSize::from_bytes(1536).to_string(), "1536B");
    }

    #[test]
    fn parses_and_displays_durations() {
        let d: HumanDuration = "1500ms".parse().unwrap();
        assert_eq!(d.millis(), 1500);
        assert_eq!(d.to_string(), "1500ms");
        assert_eq!("3s".parse::<HumanDuration>().unwrap().to_string(), "3s");
        assert!("3 parsecs".parse::<HumanDuration>().is_err());
        assert!("10us".parse::<HumanDuration>().is_err());
    }
}
