//! Go durations (`90s`, `1h30m`, `1.5h`), parsed as the API server's CEL `duration()`
//! reads them, with checked, exact arithmetic.
//!
//! The API server converts a string with Go's `time.ParseDuration`: a sequence of
//! decimal numbers, each with an optional fraction and a unit (`ns`, `us`/`µs`, `ms`,
//! `s`, `m`, `h`), the whole at most 2⁶³−1 nanoseconds (2562047h47m16.854775807s);
//! anything larger is a conversion error, so the API server refuses the object.
//! Each number's fraction is truncated to whole nanoseconds. Go computes that
//! fraction in floating point, which rounds some fractions of more than nine
//! digits up (`0.99999999999999999999s` is 1s there); this parser is exact
//! (that value is 999999999ns), and the CRD pattern allows at most nine fractional
//! digits, where Go's result and the exact one are the same.

use std::time::Duration;

/// The longest duration the API server's CEL `duration()` accepts, in nanoseconds.
pub const MAX_NANOS: u128 = i64::MAX as u128;

/// Why a string is not a duration the API server accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty")]
    Empty,
    #[error("expected a number followed by a unit (ns, us, ms, s, m, h), e.g. 90s or 1h30m")]
    Syntax,
    #[error("missing unit after {0}: use ns, us, ms, s, m or h")]
    MissingUnit(String),
    #[error("unknown unit {0:?}: use ns, us, ms, s, m or h")]
    UnknownUnit(String),
    #[error("negative")]
    Negative,
    #[error("longer than the longest duration Kubernetes accepts (2562047h47m16.854775807s)")]
    OutOfRange,
}

/// Nanoseconds in one unit of each suffix Go accepts.
fn unit_nanos(unit: &[u8]) -> Option<u128> {
    Some(match unit {
        b"ns" => 1,
        // us, µs (U+00B5) and μs (U+03BC), as Go accepts them.
        b"us" | [0xC2, 0xB5, b's'] | [0xCE, 0xBC, b's'] => 1_000,
        b"ms" => 1_000_000,
        b"s" => 1_000_000_000,
        b"m" => 60_000_000_000,
        b"h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// `0.<digits> × unit`, truncated to whole nanoseconds, exactly (long multiplication
/// over the decimal digits, least significant first).
fn fraction_nanos(digits: &[u8], unit: u128) -> u128 {
    let mut carry: u128 = 0;
    for d in digits.iter().rev() {
        let t = u128::from(d - b'0') * unit + carry;
        carry = t / 10;
    }
    carry
}

/// Parse a Go duration into nanoseconds (negative values are an error; `-0` is 0).
/// Never panics and never overflows, whatever the input.
pub fn parse_nanos(text: &str) -> Result<u128, DurationError> {
    let mut s = text.as_bytes();
    let mut negative = false;
    if let Some((&c, rest)) = s.split_first()
        && (c == b'-' || c == b'+')
    {
        negative = c == b'-';
        s = rest;
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(if text.is_empty() {
            DurationError::Empty
        } else {
            DurationError::Syntax
        });
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
        let int_len = digits(s);
        let (int_part, rest) = s.split_at(int_len);
        s = rest;
        let mut frac_part: &[u8] = &[];
        if let Some((b'.', rest)) = s.split_first() {
            let n = digits(rest);
            let (f, rest) = rest.split_at(n);
            frac_part = f;
            s = rest;
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::Syntax);
        }
        let unit_len = s
            .iter()
            .take_while(|b| **b != b'.' && !b.is_ascii_digit())
            .count();
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(
                String::from_utf8_lossy(int_part).into_owned(),
            ));
        }
        let Some(unit) = unit_nanos(unit) else {
            return Err(DurationError::UnknownUnit(
                String::from_utf8_lossy(unit).chars().take(16).collect(),
            ));
        };
        // The integer part, with leading zeros skipped, must stay under the bound:
        // anything with more than 20 significant digits is out of range already.
        let significant = int_part
            .iter()
            .skip_while(|b| **b == b'0')
            .copied()
            .collect::<Vec<u8>>();
        if significant.len() > 20 {
            return Err(DurationError::OutOfRange);
        }
        let int_value = significant
            .iter()
            .fold(0u128, |acc, d| acc * 10 + u128::from(d - b'0'));
        let component = int_value
            .checked_mul(unit)
            .and_then(|v| v.checked_add(fraction_nanos(frac_part, unit)))
            .ok_or(DurationError::OutOfRange)?;
        total = total
            .checked_add(component)
            .filter(|t| *t <= MAX_NANOS)
            .ok_or(DurationError::OutOfRange)?;
    }
    if negative && total > 0 {
        return Err(DurationError::Negative);
    }
    Ok(total)
}

/// Parse a Go duration the API server accepts into a [`Duration`].
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let nanos = parse_nanos(text)?;
    // MAX_NANOS fits in u64, so this never fails; stay checked all the same.
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| DurationError::OutOfRange)
}

/// Write a duration the way Go's `Duration.String` does (`1h30m0s`, `1.5s`, `250ms`),
/// which [`parse`] reads back to the same value.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("us", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", decimal(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let seconds = nanos % 60_000_000_000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", decimal(seconds, 1_000_000_000)));
    out
}

/// `value / scale` in decimal, without trailing zeros in the fraction.
fn decimal(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_kubernetes_writes() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1µs"), Ok(Duration::from_micros(1)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("00001m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.s"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn refuses_what_the_api_server_refuses() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(
            parse("10 minutes"),
            Err(DurationError::UnknownUnit(" minutes".into()))
        );
        assert_eq!(parse("-5m"), Err(DurationError::Negative));
        assert_eq!(parse("5"), Err(DurationError::MissingUnit("5".into())));
        assert_eq!(parse("s"), Err(DurationError::Syntax));
        assert_eq!(parse(".s"), Err(DurationError::Syntax));
        assert_eq!(parse("1d"), Err(DurationError::UnknownUnit("d".into())));
    }

    /// The bound of CEL's `duration()` on the API server (checked there: the first is
    /// accepted, the others are conversion errors).
    #[test]
    fn the_bound_is_the_api_servers() {
        assert_eq!(parse_nanos("2562047h47m16.854775807s"), Ok(MAX_NANOS));
        assert_eq!(parse_nanos("9223372036854775807ns"), Ok(MAX_NANOS));
        for over in [
            "2562047h47m16.854775808s",
            "2562047h47m16s854ms775us808ns",
            "9223372036854775808ns",
            "2562048h",
            "99999999999999999999ns",
        ] {
            assert_eq!(parse(over), Err(DurationError::OutOfRange), "{over}");
        }
    }

    /// Issue #15: these panicked through kube_core::Duration.
    #[test]
    fn huge_values_are_errors_not_panics() {
        assert_eq!(parse("5124095576030431h"), Err(DurationError::OutOfRange));
        assert_eq!(parse("5124095576030430h9h"), Err(DurationError::OutOfRange));
        let long = format!("{}h", "9".repeat(10_000));
        assert_eq!(parse(&long), Err(DurationError::OutOfRange));
        let fraction = format!("1.{}s", "9".repeat(10_000));
        assert_eq!(parse(&fraction), Ok(Duration::from_nanos(1_999_999_999)));
    }

    #[test]
    fn fractions_are_exact_not_rounded() {
        // Go's float arithmetic makes this 1s; exactly, it is below 1s.
        assert_eq!(
            parse("0.99999999999999999999s"),
            Ok(Duration::from_nanos(999_999_999))
        );
        assert_eq!(parse("0.999999999s"), Ok(Duration::from_nanos(999_999_999)));
        assert_eq!(
            parse("300.000000001s"),
            Ok(Duration::from_nanos(300_000_000_001))
        );
        assert_eq!(parse("0.5ns"), Ok(Duration::ZERO));
        assert_eq!(parse("1.0000001ms"), Ok(Duration::from_nanos(1_000_000)));
    }

    #[test]
    fn formats_like_go_and_reads_back() {
        for (d, text) in [
            (Duration::from_secs(5400), "1h30m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format(d), text);
            assert_eq!(parse(text), Ok(d));
        }
    }
}
