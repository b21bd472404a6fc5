//! The rolling summary of a relay's last verifications, kept in its status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How many verifications the rolling summary keeps.
pub const TREND_WINDOW: usize = 20;

/// The last verifications of a relay (at most 20), kept compactly so that
/// `kubectl describe` shows how the relay behaves over time without Prometheus.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationTrend {
    /// How many verifications the figures cover (at most 20).
    #[serde(default)]
    #[schemars(range(min = 0, max = 20))]
    pub count: i32,
    /// How many of them failed.
    #[serde(default)]
    #[schemars(range(min = 0, max = 20))]
    pub failures: i32,
    /// Median total duration of the ones that succeeded, in microseconds (nearest
    /// rank). Absent when none succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_micros: Option<i64>,
    /// 95th percentile of the total duration of the ones that succeeded, in
    /// microseconds (nearest rank). Absent when none succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_micros: Option<i64>,
    /// Total duration of each verification in microseconds, oldest first; 0 for one
    /// that never reached the relay (its Secret or CA bundle could not be used).
    #[serde(default)]
    #[schemars(length(max = 20))]
    pub total_micros: Vec<i64>,
    /// Outcome of each verification, oldest first, one letter each: S succeeded,
    /// F failed. Lines up with totalMicros.
    #[serde(default)]
    #[schemars(length(max = 20), pattern(r"^[SF]*$"))]
    pub outcomes: String,
}
