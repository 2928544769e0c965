//! Redelivery delays. JetStream counts deliveries for us, so the delay is a pure function of the
//! delivery count: exponential from `min`, capped at `max`, with jitter so that the messages of
//! one failed batch do not all come back at the same instant. (A plain NAK would be redelivered
//! at once; the consumer's `backoff` list only applies when the ack wait expires.)

use std::time::Duration;

/// Delay before redelivering a message that failed on delivery number `delivered` (1-based):
/// uniformly random in [d/2, d], where d = min × 2^(delivered−1), capped at `max`.
pub fn nak_delay(delivered: i64, min: Duration, max: Duration) -> Duration {
    let exponent = u32::try_from(delivered.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let ceiling = min.saturating_mul(1u32 << exponent).min(max).max(min);
    let half = ceiling / 2;
    (half + half.mul_f64(fastrand::f64())).clamp(min.min(max), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);

    #[test]
    fn grows_exponentially_within_bounds() {
        for delivered in 1..=40 {
            let ceiling = MIN.saturating_mul(1 << (delivered - 1).min(30)).min(MAX);
            for _ in 0..100 {
                let delay = nak_delay(delivered, MIN, MAX);
                assert!(delay >= MIN && delay <= MAX, "{delivered}: {delay:?}");
                assert!(delay >= ceiling / 2 && delay <= ceiling.max(MIN), "{delivered}: {delay:?}");
            }
        }
    }

    #[test]
    fn odd_inputs_stay_bounded() {
        assert!(nak_delay(0, MIN, MAX) >= MIN);
        assert!(nak_delay(-5, MIN, MAX) <= MAX);
        assert!(nak_delay(i64::MAX, MIN, MAX) <= MAX);
    }
}
