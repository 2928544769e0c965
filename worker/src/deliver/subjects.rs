//! The report stream's subjects as `worker deliver` reads and writes them. The outbox publishes
//! a report on `<prefix>.<kind>`, for every endpoint; the dead letter of a delivery replays to
//! `<prefix>.redeliver.<endpoint>.<kind>`, for that endpoint alone. The stream takes
//! `<prefix>.>`, so both land in it, and the report's headers travel unchanged, so a replayed
//! delivery carries the same `webhook-id`. Anyone else reading the stream should read only
//! `<prefix>.<kind>` (or skip the `redeliver` subjects), or it would see a replay as new.

use shared::domain::report::ReportType;

const REDELIVER: &str = "redeliver";

/// Whom a message of the report stream is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// A report, for every endpoint that wants its kind and room.
    Everyone,
    /// A replayed delivery, for this endpoint alone.
    Only(&'a str),
    /// No subject `worker deliver` knows: for no endpoint.
    Unknown,
}

/// Whom the message on `subject` is for.
pub fn route<'a>(prefix: &str, subject: &'a str) -> Route<'a> {
    let Some(rest) = subject.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('.')) else {
        return Route::Unknown;
    };
    let tokens: Vec<&str> = rest.split('.').collect();
    match tokens.as_slice() {
        [kind] if ReportType::from_token(kind).is_some() => Route::Everyone,
        [REDELIVER, endpoint, kind] if ReportType::from_token(kind).is_some() => Route::Only(endpoint),
        _ => Route::Unknown,
    }
}

/// The subject a dead letter of a delivery of a `kind` report to `endpoint` replays to.
pub fn redelivery_subject(prefix: &str, endpoint: &str, kind: ReportType) -> String {
    format!("{prefix}.{REDELIVER}.{endpoint}.{}", kind.token())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_go_to_everyone_and_replays_to_their_endpoint() {
        let prefix = "attendance.meeting";
        assert_eq!(route(prefix, "attendance.meeting.ended"), Route::Everyone);
        let replay = redelivery_subject(prefix, "platform", ReportType::Updated);
        assert_eq!(replay, "attendance.meeting.redeliver.platform.updated");
        assert_eq!(route(prefix, &replay), Route::Only("platform"));
        for unknown in [
            "attendance.meeting.deleted",
            "attendance.meetings.ended",
            "attendance.meeting",
            "attendance.meeting.redeliver.platform",
            "attendance.meeting.redeliver.platform.x.ended",
            "other.ended",
        ] {
            assert_eq!(route(prefix, unknown), Route::Unknown, "{unknown}");
        }
    }
}
