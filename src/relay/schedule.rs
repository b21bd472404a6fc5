//! When to verify: the spec's interval and timeout, the port, retry back-off and
//! whether a verification is due (pure, clock passed in).

use super::*;

/// Parse a Go duration as the API server does (`1h30m`, `90s`), checked: no value
/// panics, and values beyond what the API server accepts are refused.
pub fn parse_duration(field: &str, value: &str) -> Result<Duration, InputProblem> {
    crate::duration::parse(value).map_err(|why| InputProblem {
        condition: types::READY,
        reason: reasons::INVALID_SPEC,
        message: format!(
            "{field} {:?} is not a valid duration: {why}",
            crate::table::clip(value, 40)
        ),
    })
}

/// Interval and timeout, validated (the CRD enforces the same bounds at apply time).
pub fn schedule(spec: &SmtpRelaySpec) -> Result<(Duration, Duration), InputProblem> {
    let interval = parse_duration("verification.interval", &spec.verification.interval)?;
    let timeout = parse_duration("verification.timeout", &spec.verification.timeout)?;
    if interval < Duration::from_secs(60) {
        return Err(InputProblem {
            condition: types::READY,
            reason: reasons::INVALID_SPEC,
            message: "verification.interval must be at least 1m".into(),
        });
    }
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(300) {
        return Err(InputProblem {
            condition: types::READY,
            reason: reasons::INVALID_SPEC,
            message: "verification.timeout must be between 1s and 5m".into(),
        });
    }
    Ok((interval, timeout))
}

/// The port used: spec.port or the mode's conventional port.
pub fn effective_port(spec: &SmtpRelaySpec) -> Result<u16, InputProblem> {
    match spec.port {
        None => Ok(spec.tls.mode.default_port()),
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or(InputProblem {
                condition: types::READY,
                reason: reasons::INVALID_SPEC,
                message: format!("port {p} is out of range 1-65535"),
            }),
    }
}

/// When the next verification is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    Now,
    In(Duration),
}

/// First retry delay after a failure; doubles per consecutive failure.
pub const RETRY_BASE: Duration = Duration::from_secs(10);
/// Longest delay between retries of a failing relay.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// Delay before retrying after `failures` consecutive failures (never more than `interval`).
pub fn retry_delay(failures: i32, interval: Duration) -> Duration {
    let exp = u32::try_from(failures.saturating_sub(1).clamp(0, 16)).unwrap_or(0);
    RETRY_BASE
        .saturating_mul(1u32 << exp)
        .min(RETRY_MAX)
        .min(interval)
}

/// Is a verification due? Pure: previous status, current generation and input versions, clock.
pub fn verification_due(
    previous: Option<&SmtpRelayStatus>,
    generation: Option<i64>,
    inputs: &str,
    interval: Duration,
    now: Timestamp,
) -> Due {
    let Some(status) = previous else {
        return Due::Now;
    };
    let Some(last) = &status.last_verification else {
        return Due::Now;
    };
    if status.observed_generation != generation || last.inputs != inputs {
        return Due::Now;
    }
    let Ok(at) = Timestamp::from_str(&last.time) else {
        return Due::Now;
    };
    let wait = if last.result == RESULT_SUCCEEDED {
        interval
    } else {
        retry_delay(status.consecutive_failures, interval)
    };
    let elapsed = now.duration_since(at);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    if elapsed >= wait {
        Due::Now
    } else {
        Due::In(wait - elapsed)
    }
}

pub const RESULT_SUCCEEDED: &str = "Succeeded";
pub const RESULT_FAILED: &str = "Failed";

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn verified_at(time: &str, result: &str, failures: i32) -> SmtpRelayStatus {
        SmtpRelayStatus {
            observed_generation: Some(3),
            consecutive_failures: failures,
            last_verification: Some(LastVerification {
                time: time.into(),
                result: result.into(),
                inputs: "g3/s10".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn verification_is_due_on_change_or_schedule_only() {
        let hour = Duration::from_secs(3600);
        let now = ts("2026-01-01T00:30:00Z");
        let ok = verified_at("2026-01-01T00:00:00Z", RESULT_SUCCEEDED, 0);
        assert_eq!(
            verification_due(None, Some(3), "g3/s10", hour, now),
            Due::Now
        );
        assert_eq!(
            verification_due(Some(&ok), Some(3), "g3/s10", hour, now),
            Due::In(Duration::from_secs(1800))
        );
        assert_eq!(
            verification_due(Some(&ok), Some(4), "g3/s10", hour, now),
            Due::Now
        );
        assert_eq!(
            verification_due(Some(&ok), Some(3), "g3/s11", hour, now),
            Due::Now
        );
        assert_eq!(
            verification_due(
                Some(&ok),
                Some(3),
                "g3/s10",
                hour,
                ts("2026-01-01T01:00:00Z")
            ),
            Due::Now
        );
        let failed = verified_at("2026-01-01T00:29:50Z", RESULT_FAILED, 3);
        assert_eq!(
            verification_due(Some(&failed), Some(3), "g3/s10", hour, now),
            Due::In(Duration::from_secs(30))
        );
        let garbage = verified_at("yesterday", RESULT_SUCCEEDED, 0);
        assert_eq!(
            verification_due(Some(&garbage), Some(3), "g3/s10", hour, now),
            Due::Now
        );
    }

    #[test]
    fn retries_back_off_and_are_capped() {
        let hour = Duration::from_secs(3600);
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n, hour).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(
            retry_delay(1000, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(retry_delay(0, hour), Duration::from_secs(10));
        assert_eq!(retry_delay(-5, hour), Duration::from_secs(10));
    }

    #[test]
    fn durations_parse_like_the_api_server() {
        assert_eq!(
            parse_duration("f", "1h30m").ok(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration("f", "90s").ok(),
            Some(Duration::from_secs(90))
        );
        assert!(parse_duration("f", "10 minutes").is_err());
        assert!(parse_duration("f", "-5m").is_err());
        let mut s = spec(TlsMode::StartTls, false, false);
        s.verification.interval = "10s".into();
        assert_eq!(
            schedule(&s).map_err(|p| p.reason),
            Err(reasons::INVALID_SPEC)
        );
        s.verification.interval = "1m".into();
        s.verification.timeout = "10m".into();
        assert!(schedule(&s).is_err());
        s.port = Some(70000);
        assert!(effective_port(&s).is_err());
        s.port = None;
        s.tls.mode = TlsMode::Tls;
        assert_eq!(effective_port(&s).ok(), Some(465));
    }
}
