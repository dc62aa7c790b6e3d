//! A pool's share of traffic, as the config file, the API and the store read
//! and write it: a percentage with up to two decimals (steps of
//! 0.01%), held exactly as hundredths so sums and comparisons never meet a
//! float. Whole percentages read and write as integers (`90`), the rest as
//! decimals (`0.1`, `99.9`), so configs, API callers and stored rows written
//! before decimals existed keep working unchanged.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Hundredths of a percent in the whole.
const FULL: u32 = 10_000;

/// A routing weight: 0 to 100 percent in steps of 0.01.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Weight(u32);

/// Why a number is not a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a weight is a percentage between 0 and 100 with at most two decimals")]
pub struct WeightError;

impl Weight {
    pub const ZERO: Weight = Weight(0);
    /// All traffic: what every pool's weights sum to.
    pub const FULL: Weight = Weight(FULL);

    /// A whole percentage (`None` above 100).
    pub const fn percent(p: u32) -> Option<Weight> {
        if p <= 100 { Some(Weight(p * 100)) } else { None }
    }

    /// Hundredths of a percent (`None` above 10,000).
    pub const fn from_hundredths(h: u32) -> Option<Weight> {
        if h <= FULL { Some(Weight(h)) } else { None }
    }

    /// Hundredths of a percent: 10,000 is everything.
    pub const fn hundredths(self) -> u32 {
        self.0
    }

    /// The percentage as a float, for gauges and displays.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// A percentage written as a float; refused when it has more than two
    /// decimals (beyond float noise) or lies outside 0–100.
    pub fn from_f64(x: f64) -> Result<Weight, WeightError> {
        let scaled = x * 100.0;
        let rounded = scaled.round();
        if !(0.0..=f64::from(FULL)).contains(&rounded) || (scaled - rounded).abs() > 1e-6 {
            return Err(WeightError);
        }
        // In range and whole: the cast is exact.
        Ok(Weight(rounded as u32))
    }

    /// What is left of the whole after `self` (0 when `self` is all of it).
    pub const fn rest(self) -> Weight {
        Weight(FULL.saturating_sub(self.0))
    }

    /// The sum, `None` beyond 100%.
    pub fn checked_add(self, other: Weight) -> Option<Weight> {
        Weight::from_hundredths(self.0.checked_add(other.0)?)
    }

    pub const fn saturating_sub(self, other: Weight) -> Weight {
        Weight(self.0.saturating_sub(other.0))
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// A weight equals a whole percentage (`w == 100`); `0.5` equals none.
impl PartialEq<u32> for Weight {
    fn eq(&self, percent: &u32) -> bool {
        Weight::percent(*percent) == Some(*self)
    }
}

/// Sums of weights, wide enough for any number of pools (a total that is not
/// exactly 100% is an error its caller names).
pub fn total<'a>(weights: impl IntoIterator<Item = &'a Weight>) -> u64 {
    weights.into_iter().map(|w| u64::from(w.0)).sum()
}

/// A total from [`total`] as a percentage for messages (`99.9`; above 100
/// too, which no weight can be).
pub fn total_text(hundredths: u64) -> String {
    let (whole, frac) = (hundredths / 100, hundredths % 100);
    match frac {
        0 => format!("{whole}"),
        f2 if f2 % 10 == 0 => format!("{whole}.{}", f2 / 10),
        f2 => format!("{whole}.{f2:02}"),
    }
}

/// `90`, `0.1`, `12.34`; widths and alignment apply (`{:>5}`).
impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&total_text(u64::from(self.0)))
    }
}

/// Decimal text such as `"90"`, `"0.1"`, `"12.34"`: read exactly, no float.
impl FromStr for Weight {
    type Err = WeightError;

    fn from_str(s: &str) -> Result<Weight, WeightError> {
        let s = s.trim();
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 3 || !digits(whole) || frac.len() > 2 || !digits(frac) {
            return Err(WeightError);
        }
        if s.ends_with('.') {
            return Err(WeightError);
        }
        let whole: u32 = whole.parse().map_err(|_| WeightError)?;
        let frac: u32 = match frac.len() {
            0 => 0,
            1 => frac.parse::<u32>().map_err(|_| WeightError)? * 10,
            _ => frac.parse().map_err(|_| WeightError)?,
        };
        Weight::from_hundredths(whole * 100 + frac).ok_or(WeightError)
    }
}

impl Serialize for Weight {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(100) {
            s.serialize_u32(self.0 / 100)
        } else {
            s.serialize_f64(self.as_f64())
        }
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Weight, D::Error> {
        d.deserialize_any(WeightVisitor)
    }
}

struct WeightVisitor;

impl Visitor<'_> for WeightVisitor {
    type Value = Weight;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a percentage between 0 and 100 with at most two decimals")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Weight, E> {
        u32::try_from(v)
            .ok()
            .and_then(Weight::percent)
            .ok_or_else(|| E::custom(WeightError))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Weight, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(WeightError))
            .and_then(|v| self.visit_u64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Weight, E> {
        Weight::from_f64(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_and_decimal_percentages_round_trip() {
        for (text, h) in [
            ("0", 0),
            ("0.01", 1),
            ("0.1", 10),
            ("12.34", 1234),
            ("99.9", 9990),
            ("100", 10_000),
        ] {
            let w: Weight = text.parse().unwrap();
            assert_eq!(w.hundredths(), h, "{text}");
            assert_eq!(w.to_string(), text);
            let json = serde_json::to_string(&w).unwrap();
            assert_eq!(json, text, "integers stay integers in JSON");
            assert_eq!(serde_json::from_str::<Weight>(&json).unwrap(), w);
        }
    }

    #[test]
    fn more_than_two_decimals_or_out_of_range_is_refused() {
        for text in ["0.001", "100.01", "101", "-1", "", ".5", "5.", "1e2", "1.2.3", "1000"] {
            assert!(text.parse::<Weight>().is_err(), "{text}");
        }
        for json in ["0.001", "100.5", "-1", "101", "\"10\"", "1e300"] {
            assert!(serde_json::from_str::<Weight>(json).is_err(), "{json}");
        }
        // Float noise of a two-decimal value is not a third decimal.
        assert_eq!(Weight::from_f64(0.1 + 0.2).unwrap().hundredths(), 30);
        assert_eq!(Weight::from_f64(f64::NAN), Err(WeightError));
    }

    #[test]
    fn rest_and_totals() {
        let w = Weight::from_hundredths(10).unwrap();
        assert_eq!(w.rest().to_string(), "99.9");
        assert_eq!(total([&w, &w.rest()]), 10_000);
        assert_eq!(total_text(9_990), "99.9");
        assert_eq!(total_text(25_000), "250");
        assert_eq!(format!("[{:>5}]", w), "[  0.1]");
    }
}
