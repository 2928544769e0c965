//! When a failed delivery is tried again: the retry schedule (`DELIVERY_RETRY_SCHEDULE`, by
//! default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h: the last attempt about 18 hours after the first),
//! with jitter, or later when the receiver asks for it (`Retry-After`, bounded).
//!
//! JetStream counts the deliveries of each message, so the decision is a pure function of that
//! count (what the consumer NAKs with, or that the last attempt has failed): replicas agree on
//! it without sharing anything, and a replica that dies mid-attempt costs one step, no more.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// How far a delay may be moved either way, as a fraction: ±10 %, so that the reports that
/// failed together (a receiver down) do not all come back at the same instant.
const JITTER: f64 = 0.1;

/// The delays between attempts: after attempt n fails, the nth delay (then attempt n + 1); after
/// the last one, the delivery has failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Attempt again after this delay.
    RetryAfter(Duration),
    /// That was the last attempt.
    GiveUp,
}

impl FromStr for RetrySchedule {
    type Err = String;

    /// Durations separated by commas (`5s,5m,30m,2h,5h,10h`), each above zero.
    fn from_str(text: &str) -> Result<Self, String> {
        let delays = text
            .split(',')
            .map(|step| {
                let step = step.trim();
                match humantime::parse_duration(step) {
                    Ok(delay) if !delay.is_zero() => Ok(delay),
                    Ok(_) => Err(format!("{step:?}: a retry delay is above zero")),
                    Err(error) => Err(format!("{step:?}: {error}")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RetrySchedule(delays))
    }
}

impl RetrySchedule {
    /// Attempts in all: the first, then one after each delay.
    pub fn attempts(&self) -> i64 {
        i64::try_from(self.0.len()).unwrap_or(i64::MAX).saturating_add(1)
    }

    /// The longest the attempts of one report can be spread over (every delay at its jittered
    /// maximum, or stretched to `max_retry_after` by the receiver), attempts themselves excluded.
    pub fn span(&self, max_retry_after: Duration) -> Duration {
        self.0.iter().map(|delay| delay.mul_f64(1.0 + JITTER).max(max_retry_after)).sum()
    }

    /// After attempt `attempt` (1-based: JetStream's delivery count) failed: its delay, moved
    /// by `random` (uniform in [0, 1)) within the jitter, or later if the receiver asked for
    /// `retry_after` (at most `max_retry_after`); or nothing more once the schedule is spent.
    pub fn next(&self, attempt: i64, retry_after: Option<Duration>, max_retry_after: Duration, random: f64) -> Next {
        let Some(delay) = usize::try_from(attempt.max(1) - 1).ok().and_then(|step| self.0.get(step)) else {
            return Next::GiveUp;
        };
        let jittered = delay.mul_f64(1.0 - JITTER + 2.0 * JITTER * random.clamp(0.0, 1.0));
        Next::RetryAfter(jittered.max(retry_after.unwrap_or_default().min(max_retry_after)))
    }
}

/// A `Retry-After` header's delay (RFC 9110): seconds, or an HTTP date (from `now`; a date in
/// the past is no delay).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(text: &str) -> RetrySchedule {
        text.parse().unwrap()
    }

    #[test]
    fn the_default_schedule_gives_seven_attempts_within_a_day() {
        let default = schedule("5s,5m,30m,2h,5h,10h");
        assert_eq!(default.attempts(), 7);
        let span = default.span(Duration::ZERO);
        assert!(span > Duration::from_secs(17 * 3600) && span < Duration::from_secs(20 * 3600), "{span:?}");
        assert_eq!(schedule("1s,2s").span(Duration::from_secs(60)), Duration::from_secs(120));
        assert!("5s,,5m".parse::<RetrySchedule>().is_err());
        assert!("5s,0s".parse::<RetrySchedule>().is_err());
        assert!("soon".parse::<RetrySchedule>().is_err());
    }

    #[test]
    fn each_failed_attempt_waits_its_step_within_the_jitter_then_gives_up() {
        let steps = schedule("100ms,200ms,400ms");
        let max = Duration::from_secs(60);
        for (attempt, step) in [(1, 100u64), (2, 200), (3, 400)] {
            let step = Duration::from_millis(step);
            assert_eq!(steps.next(attempt, None, max, 0.5), Next::RetryAfter(step));
            for _ in 0..100 {
                let Next::RetryAfter(delay) = steps.next(attempt, None, max, fastrand::f64()) else { panic!() };
                assert!(delay >= step.mul_f64(0.9) && delay <= step.mul_f64(1.1), "{attempt}: {delay:?}");
            }
        }
        assert_eq!(steps.next(4, None, max, 0.5), Next::GiveUp);
        assert_eq!(steps.next(9, None, max, 0.5), Next::GiveUp);
        assert_eq!(steps.next(0, None, max, 0.5), Next::RetryAfter(Duration::from_millis(100)));
    }

    #[test]
    fn a_longer_retry_after_is_honoured_up_to_its_bound() {
        let steps = schedule("100ms,200ms");
        let max = Duration::from_secs(5);
        let later = steps.next(1, Some(Duration::from_secs(2)), max, 0.5);
        assert_eq!(later, Next::RetryAfter(Duration::from_secs(2)));
        let bounded = steps.next(1, Some(Duration::from_secs(3600)), max, 0.5);
        assert_eq!(bounded, Next::RetryAfter(max));
        let shorter = steps.next(2, Some(Duration::from_millis(1)), max, 0.5);
        assert_eq!(shorter, Next::RetryAfter(Duration::from_millis(200)));
        assert_eq!(steps.next(3, Some(Duration::from_secs(1)), max, 0.5), Next::GiveUp);
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
