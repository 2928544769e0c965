//! Time as the project uses it: unix milliseconds inside, `OffsetDateTime` at the database's
//! edge, RFC 3339 in UTC with milliseconds in every answer and listing.

use std::time::Duration;

use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_unix_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Converts unix milliseconds to a timestamp (saturating at the representable range).
pub fn timestamp(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Converts a timestamp to unix milliseconds.
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A duration in whole milliseconds (saturating).
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 in UTC with milliseconds (`2026-11-25T10:00:00.000Z`), the API's time format.
pub fn rfc3339_ms(ms: i64) -> String {
    let at = timestamp(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// An instant given as RFC 3339, or as a duration meaning "that long before `now_ms`" (`90m`,
/// `2d`), in unix milliseconds: how operators name times on the command line.
pub fn parse_instant(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(now_ms.saturating_sub(millis(ago)));
    }
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(unix_ms)
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a duration like 2h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_with_milliseconds_in_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_495_151_045), "2026-11-24T04:39:11.045Z");
        assert_eq!(unix_ms(timestamp(1_795_495_151_045)), 1_795_495_151_045);
    }

    #[test]
    fn instants_are_rfc3339_or_durations_ago() {
        assert_eq!(parse_instant("1970-01-01T00:16:40Z", 0), Ok(1_000_000));
        assert_eq!(parse_instant("2h", 10_000_000), Ok(10_000_000 - 7_200_000));
        assert!(parse_instant("yesterday", 0).is_err());
    }
}
