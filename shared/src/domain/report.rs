//! Meeting reports: what the platform is told about a meeting, as Standard Webhooks events
//! (`meeting.started`, `meeting.ended`, `meeting.updated`). A meeting's reports are numbered
//! from 1 in the order its changes were committed; a report's id follows from its meeting and
//! number, so the same change always carries the same id, however often it is published or
//! delivered, and a receiver keeps the highest number it has seen.

use serde::Serialize;
use sha2::Digest as _;

/// The kind of a report, as its `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReportType {
    /// The meeting has started (its start is known).
    Started,
    /// The meeting has ended: its final attendance.
    Ended,
    /// A meeting that had ended changed (a late event, the real end replacing an inferred one):
    /// its whole new attendance.
    Updated,
}

impl ReportType {
    pub const ALL: [ReportType; 3] = [ReportType::Started, ReportType::Ended, ReportType::Updated];

    /// The Standard Webhooks event type.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportType::Started => "meeting.started",
            ReportType::Ended => "meeting.ended",
            ReportType::Updated => "meeting.updated",
        }
    }

    /// The last token of its subject.
    pub fn token(self) -> &'static str {
        match self {
            ReportType::Started => "started",
            ReportType::Ended => "ended",
            ReportType::Updated => "updated",
        }
    }

    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.token() == token)
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// The id of report number `sequence` of meeting `room_sid` (`webhook-id`): `msg_` and 32 hex
/// digits of a SHA-256, the same for the same report on every replica.
pub fn report_id(room_sid: &str, sequence: i64) -> String {
    let digest = sha2::Sha256::digest(format!("{room_sid}/{sequence}").as_bytes());
    let hex: String = digest[..16].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("msg_{hex}")
}

/// A Standard Webhooks payload: `{"type", "timestamp", "data"}`; `data` is the meeting's
/// document with the report's number beside it.
#[derive(Debug, Serialize)]
pub struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the change was committed (RFC 3339, UTC).
    pub timestamp: &'a str,
    pub data: Numbered<'a, T>,
}

#[derive(Debug, Serialize)]
pub struct Numbered<'a, T: Serialize> {
    /// The report's number among its meeting's: a receiver drops a lower one than it has.
    pub sequence: i64,
    #[serde(flatten)]
    pub document: &'a T,
}

/// The body of report number `sequence` of kind `kind`, committed at `timestamp`.
pub fn body<T: Serialize>(kind: ReportType, timestamp: &str, sequence: i64, document: &T) -> String {
    let envelope = Envelope { kind: kind.as_str(), timestamp, data: Numbered { sequence, document } };
    serde_json::to_string(&envelope).expect("a report serializes")
}

/// A digest of a meeting's document, to tell whether what was reported has changed.
pub fn digest<T: Serialize>(document: &T) -> String {
    let bytes = serde_json::to_vec(document).expect("a document serializes");
    sha2::Sha256::digest(&bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What the platform was told of a meeting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    /// How many reports it was sent.
    pub sequence: i64,
    /// Whether its start was.
    pub started: bool,
    /// The digest of the document last reported after its end, or [`WITHDRAWN`] once its end
    /// was withdrawn; `None` while no end was reported.
    pub digest: Option<String>,
}

/// The digest recorded when a reported end was withdrawn (a later join or leave undid an
/// inferred end): the meeting runs again, and its next end is an update.
pub const WITHDRAWN: &str = "withdrawn";

/// The digest the migration recorded for meetings that had ended before reports existed: the
/// first document computed for one is adopted without a report (the platform was never told of
/// the meeting, so there is nothing to update).
pub const BEFORE_REPORTS: &str = "before-reports";

/// The reports a meeting is due, given what was reported and what it is now: whether it has
/// started, and, if it has ended, the digest of its document. Its start once; its end once; then
/// an update whenever the ended document changes, or when the end is withdrawn. Returns the
/// reports, in order, and what will have been reported.
pub fn reports_due(reported: &Reported, started: bool, ended_digest: Option<&str>) -> (Vec<ReportType>, Reported) {
    let mut due = Vec::new();
    let mut next = reported.clone();
    if started && !reported.started {
        due.push(ReportType::Started);
        next.started = true;
    }
    match (ended_digest, reported.digest.as_deref()) {
        (Some(digest), Some(BEFORE_REPORTS)) => next.digest = Some(digest.to_owned()),
        (Some(digest), None) => {
            due.push(ReportType::Ended);
            next.digest = Some(digest.to_owned());
        }
        (Some(digest), Some(previous)) if previous != digest => {
            due.push(ReportType::Updated);
            next.digest = Some(digest.to_owned());
        }
        (None, Some(previous)) if previous != WITHDRAWN => {
            due.push(ReportType::Updated);
            next.digest = Some(WITHDRAWN.to_owned());
        }
        _ => {}
    }
    next.sequence += due.len() as i64;
    (due, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_meeting_and_number_only() {
        let id = report_id("RM_abc", 2);
        assert_eq!(id, report_id("RM_abc", 2));
        assert_ne!(id, report_id("RM_abc", 3));
        assert_ne!(id, report_id("RM_abd", 2));
        assert!(id.starts_with("msg_") && id.len() == 36 && id[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }

    fn reported(sequence: i64, started: bool, digest: Option<&str>) -> Reported {
        Reported { sequence, started, digest: digest.map(str::to_owned) }
    }

    #[test]
    fn a_meeting_is_reported_started_then_ended_then_updated_when_its_figures_change() {
        let none = Reported::default();
        assert_eq!(reports_due(&none, false, None), (vec![], none.clone()));
        let (due, started) = reports_due(&none, true, None);
        assert_eq!((due, &started), (vec![ReportType::Started], &reported(1, true, None)));
        assert_eq!(reports_due(&started, true, None).0, vec![], "nothing new while it runs");
        let (due, ended) = reports_due(&started, true, Some("a"));
        assert_eq!((due, &ended), (vec![ReportType::Ended], &reported(2, true, Some("a"))));
        assert_eq!(reports_due(&ended, true, Some("a")).0, vec![], "the same figures again: nothing");
        let (due, updated) = reports_due(&ended, true, Some("b"));
        assert_eq!((due, &updated), (vec![ReportType::Updated], &reported(3, true, Some("b"))));
    }

    #[test]
    fn started_and_ended_at_once_are_two_reports_in_order() {
        let (due, next) = reports_due(&Reported::default(), true, Some("a"));
        assert_eq!(due, vec![ReportType::Started, ReportType::Ended]);
        assert_eq!(next, reported(2, true, Some("a")));
    }

    #[test]
    fn a_withdrawn_end_is_an_update_once_and_the_next_end_another() {
        let ended = reported(2, true, Some("a"));
        let (due, withdrawn) = reports_due(&ended, true, None);
        assert_eq!((due, &withdrawn), (vec![ReportType::Updated], &reported(3, true, Some(WITHDRAWN))));
        assert_eq!(reports_due(&withdrawn, true, None).0, vec![], "running again: nothing more");
        let (due, again) = reports_due(&withdrawn, true, Some("a"));
        assert_eq!((due, again), (vec![ReportType::Updated], reported(4, true, Some("a"))));
    }

    #[test]
    fn a_meeting_ended_before_reports_existed_is_not_announced_but_its_later_changes_are() {
        let old = reported(0, true, Some(BEFORE_REPORTS));
        let (due, adopted) = reports_due(&old, true, Some("a"));
        assert_eq!((due, &adopted), (vec![], &reported(0, true, Some("a"))));
        assert_eq!(reports_due(&adopted, true, Some("b")).0, vec![ReportType::Updated]);
    }

    #[test]
    fn the_body_is_the_standard_webhooks_envelope_with_the_number_in_data() {
        let document = serde_json::json!({"room": "algebra", "room_sid": "RM_1"});
        let body: serde_json::Value =
            serde_json::from_str(&body(ReportType::Ended, "2026-11-28T10:00:00.000Z", 2, &document)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "meeting.ended", "timestamp": "2026-11-28T10:00:00.000Z",
                               "data": {"sequence": 2, "room": "algebra", "room_sid": "RM_1"}})
        );
        assert_eq!(digest(&document), digest(&serde_json::json!({"room": "algebra", "room_sid": "RM_1"})));
        assert_ne!(digest(&document), digest(&serde_json::json!({"room": "algebra", "room_sid": "RM_2"})));
    }

    #[test]
    fn types_round_trip() {
        for kind in ReportType::ALL {
            assert_eq!(ReportType::from_token(kind.token()), Some(kind));
            assert_eq!(ReportType::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.as_str(), format!("meeting.{}", kind.token()));
        }
        assert_eq!(ReportType::parse("meeting.deleted"), None);
    }
}
