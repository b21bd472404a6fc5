//! The rolling summary of the last verifications (pure): percentiles of their total
//! duration and the failure count, kept in status.

use crate::api::{TREND_WINDOW, VerificationTrend};

/// The `p`th percentile (0–100) of `sorted` by nearest rank; None when empty.
pub fn percentile(sorted: &[i64], p: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let p = u64::from(p.min(100));
    let n = sorted.len() as u64;
    // Nearest rank: the smallest value with at least p% of the values at or below it.
    let rank = (p * n).div_ceil(100).max(1);
    let index = usize::try_from(rank - 1).unwrap_or(usize::MAX);
    sorted.get(index.min(sorted.len() - 1)).copied()
}

/// The summary of these verifications (oldest first): `(total micros, succeeded)`.
/// Only the last [`TREND_WINDOW`] are kept; percentiles cover the ones that succeeded.
pub fn summarize(samples: &[(i64, bool)]) -> VerificationTrend {
    let kept = &samples[samples.len().saturating_sub(TREND_WINDOW)..];
    let mut ok: Vec<i64> = kept.iter().filter(|(_, s)| *s).map(|(t, _)| *t).collect();
    ok.sort_unstable();
    let failures = kept.iter().filter(|(_, s)| !*s).count();
    VerificationTrend {
        count: i32::try_from(kept.len()).unwrap_or(i32::MAX),
        failures: i32::try_from(failures).unwrap_or(i32::MAX),
        p50_micros: percentile(&ok, 50),
        p95_micros: percentile(&ok, 95),
        total_micros: kept.iter().map(|(t, _)| *t).collect(),
        outcomes: kept
            .iter()
            .map(|(_, s)| if *s { 'S' } else { 'F' })
            .collect(),
    }
}

/// The samples a stored summary holds, oldest first. A summary edited by hand may
/// not line up: entries without a valid partner are dropped, negatives read as 0.
pub fn samples(trend: &VerificationTrend) -> Vec<(i64, bool)> {
    trend
        .total_micros
        .iter()
        .zip(trend.outcomes.chars())
        .filter_map(|(t, o)| match o {
            'S' => Some(((*t).max(0), true)),
            'F' => Some(((*t).max(0), false)),
            _ => None,
        })
        .collect()
}

/// The summary after one more verification.
pub fn next_trend(
    previous: Option<&VerificationTrend>,
    total_micros: i64,
    succeeded: bool,
) -> VerificationTrend {
    let mut all = previous.map(samples).unwrap_or_default();
    all.push((total_micros.max(0), succeeded));
    summarize(&all)
}

/// Microseconds for people: `850µs`, `2.35ms`, `1.20s`.
pub fn human_micros(us: i64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[7], 95), Some(7));
        let v: Vec<i64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50), Some(10));
        assert_eq!(percentile(&v, 95), Some(19));
        assert_eq!(percentile(&v, 100), Some(20));
        assert_eq!(percentile(&v, 0), Some(1));
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 95), Some(4));
    }

    #[test]
    fn failures_are_counted_not_measured() {
        let t = summarize(&[(1_000, true), (30_000_000, false), (3_000, true)]);
        assert_eq!((t.count, t.failures), (3, 1));
        assert_eq!(t.p50_micros, Some(1_000));
        assert_eq!(t.p95_micros, Some(3_000));
        assert_eq!(t.outcomes, "SFS");
        assert_eq!(t.total_micros, vec![1_000, 30_000_000, 3_000]);
        let none = summarize(&[(5, false)]);
        assert_eq!((none.p50_micros, none.p95_micros), (None, None));
        assert_eq!(summarize(&[]), VerificationTrend::default());
    }

    #[test]
    fn the_window_keeps_the_last_twenty() {
        let mut t: Option<VerificationTrend> = None;
        for i in 1..=25i64 {
            t = Some(next_trend(t.as_ref(), i * 100, i % 5 != 0));
        }
        let t = t.expect("trend");
        assert_eq!(t.count, 20);
        assert_eq!(t.total_micros.first(), Some(&600));
        assert_eq!(t.total_micros.last(), Some(&2_500));
        assert_eq!(t.outcomes, "SSSSFSSSSFSSSSFSSSSF");
        assert_eq!(t.failures, 4);
        // 16 successes: 600..2400 without the multiples of 500.
        assert_eq!(t.p50_micros, Some(1_400));
        assert_eq!(t.p95_micros, Some(2_400));
    }

    #[test]
    fn a_hand_edited_summary_is_read_safely() {
        let odd = VerificationTrend {
            total_micros: vec![10, -4, 30, 40],
            outcomes: "SxF".into(),
            ..Default::default()
        };
        assert_eq!(samples(&odd), vec![(10, true), (30, false)]);
        let next = next_trend(Some(&odd), 20, true);
        assert_eq!(next.outcomes, "SFS");
        assert_eq!(next.total_micros, vec![10, 30, 20]);
        assert_eq!(next.p50_micros, Some(10));
    }

    #[test]
    fn micros_read_well() {
        assert_eq!(human_micros(850), "850µs");
        assert_eq!(human_micros(2_345), "2.35ms");
        assert_eq!(human_micros(1_200_000), "1.20s");
    }
}
