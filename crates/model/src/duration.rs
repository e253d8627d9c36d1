//! Durations written the way Istio users write them: `1.5s`, `500ms`, `2m`, `1h`, `250us`.
//!
//! Parsed once at the edge into a [`Duration`]; printing gives back the shortest exact form.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A non-negative duration parsed from Istio's string form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }

    pub fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }
}

const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("invalid duration {text:?}: expected a number and a unit (h, m, s, ms, us, ns), e.g. \"1.5s\" or \"500ms\"")
        };
        let s = text.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, unit) = s.split_at(split);
        let nanos_per = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, n)| *n)
            .ok_or_else(bad)?;
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut nanos = whole.checked_mul(nanos_per).ok_or_else(bad)?;
        if !frac.is_empty() {
            let digits: u32 = frac.len().try_into().map_err(|_| bad())?;
            let frac_val: u128 = frac.parse().map_err(|_| bad())?;
            let scale = 10u128.checked_pow(digits).ok_or_else(bad)?;
            nanos += frac_val * nanos_per / scale;
        }
        let nanos: u64 = nanos.try_into().map_err(|_| bad())?;
        Ok(Self(std::time::Duration::from_nanos(nanos)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", nanos / 1_000_000_000)
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{}us", nanos / 1_000)
        } else {
            write!(f, "{nanos}ns")
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(DurationVisitor)
    }
}

/// A visitor rather than `String::deserialize`, so that a bare number (`timeout: 3`) is reported as
/// "expected a duration such as ..." instead of "expected a string".
struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration with a unit, such as \"1.5s\" or \"500ms\"")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
        text.parse().map_err(E::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u128 {
        text.parse::<Duration>().unwrap().0.as_millis()
    }

    #[test]
    fn parses_istio_forms() {
        assert_eq!(ms("1.5s"), 1500);
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("2m"), 120_000);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms(".25s"), 250);
        assert_eq!("250us".parse::<Duration>().unwrap().0.as_micros(), 250);
    }

    #[test]
    fn rejects_bad_forms_with_hint() {
        for bad in ["", "10", "s", "1.5", "1x", "-1s", "1.2.3s"] {
            let err = bad.parse::<Duration>().unwrap_err();
            assert!(err.contains("expected a number and a unit"), "{bad}: {err}");
        }
    }

    #[test]
    fn prints_shortest_exact_form() {
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(Duration::from_millis(2000).to_string(), "2s");
        assert_eq!(Duration::default().to_string(), "0s");
    }
}
