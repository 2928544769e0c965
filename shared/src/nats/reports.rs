//! Meeting reports on NATS: the outbox publisher puts each report on
//! `<prefix>.<started|ended|updated>`; `worker deliver` and any internal consumer read them.
//! The message format ([`ReportMessage`]) is written and read here: the payload is the
//! Standard Webhooks body exactly as delivered (so its signature is over these bytes), the
//! headers carry what a consumer needs without parsing it.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;

use super::publish::{OutboxMessage, PublishError, publish_outbox};
use super::settings::{ReportArgs, StreamSettings, StreamSetupError};
use crate::domain::report::ReportType;

/// The report's id, also its `Nats-Msg-Id`; a header of its own because a dead letter's replay
/// republishes with a fresh message id, while the report (and its `webhook-id`) stays the same.
const REPORT_ID: &str = "Attendance-Report-Id";
const ROOM_SID: &str = "Attendance-Room-Sid";
const SEQUENCE: &str = "Attendance-Report-Sequence";

/// One report, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportMessage {
    /// The report's id (`webhook-id`, and the message's `Nats-Msg-Id`).
    pub id: String,
    pub kind: ReportType,
    pub room_sid: String,
    /// Its number among its meeting's reports.
    pub sequence: i64,
    /// The Standard Webhooks body (`{"type", "timestamp", "data"}`).
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportDecodeError {
    #[error("subject {0} is not a report's")]
    Subject(String),
    #[error("header {0} is missing or invalid")]
    Header(&'static str),
}

impl ReportMessage {
    /// Reads a report from a stream message's subject (its last token is the kind, so a
    /// consumer may also take reports republished on a subject of its own, such as a replayed
    /// dead letter's), headers and payload.
    pub fn decode(subject: &str, headers: Option<&HeaderMap>, payload: Bytes) -> Result<Self, ReportDecodeError> {
        let kind = subject
            .rsplit('.')
            .next()
            .and_then(ReportType::from_token)
            .ok_or_else(|| ReportDecodeError::Subject(subject.to_owned()))?;
        let header = |name: &'static str| {
            headers
                .and_then(|headers| headers.get(name))
                .map(|value| value.as_str().to_owned())
                .filter(|value| !value.is_empty())
                .ok_or(ReportDecodeError::Header(name))
        };
        Ok(ReportMessage {
            id: header(REPORT_ID)?,
            kind,
            room_sid: header(ROOM_SID)?,
            sequence: header(SEQUENCE)?.parse().map_err(|_| ReportDecodeError::Header(SEQUENCE))?,
            body: payload,
        })
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(REPORT_ID, self.id.as_str());
        headers.insert(ROOM_SID, self.room_sid.as_str());
        headers.insert(SEQUENCE, self.sequence.to_string().as_str());
        headers
    }
}

#[derive(Clone)]
pub struct ReportStream {
    jetstream: jetstream::Context,
    settings: StreamSettings,
}

impl ReportStream {
    pub fn new(client: async_nats::Client, args: &ReportArgs) -> Self {
        ReportStream { jetstream: jetstream::new(client), settings: args.settings() }
    }

    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// Creates the stream if it does not exist; an existing one is left as it is.
    pub async fn ensure(&self) -> Result<(), StreamSetupError> {
        self.settings.create_or_check(&self.jetstream).await.map(|_| ())
    }

    /// Subject of a kind of report.
    pub fn subject(&self, kind: ReportType) -> String {
        self.settings.subject(kind.token())
    }

    /// Publishes reports in order and waits for every acknowledgement (at most `deadline`). The
    /// message id is the report's, so a report published twice is stored once. Each continues
    /// the trace of its cause (`traceparent`), if any.
    pub async fn publish_all(
        &self,
        reports: &[(ReportMessage, Option<String>)],
        deadline: Duration,
    ) -> Result<(), PublishError> {
        let messages = reports
            .iter()
            .map(|(report, traceparent)| OutboxMessage {
                subject: self.subject(report.kind),
                payload: report.body.clone(),
                headers: report.headers(),
                message_id: report.id.clone(),
                span: tracing::info_span!("publish_report", report_id = %report.id, kind = report.kind.as_str()),
                traceparent: traceparent.clone(),
            })
            .collect();
        publish_outbox(&self.jetstream, messages, deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_from_its_subject_and_headers() {
        let report = ReportMessage {
            id: crate::domain::report::report_id("RM_1", 3),
            kind: ReportType::Updated,
            room_sid: "RM_1".into(),
            sequence: 3,
            body: Bytes::from_static(br#"{"type":"meeting.updated"}"#),
        };
        let headers = report.headers();
        let decoded = ReportMessage::decode("attendance.meeting.updated", Some(&headers), report.body.clone()).unwrap();
        assert_eq!(decoded, report);
        assert_eq!(
            ReportMessage::decode("attendance.meeting.deleted", Some(&headers), report.body.clone()),
            Err(ReportDecodeError::Subject("attendance.meeting.deleted".into()))
        );
        assert_eq!(
            ReportMessage::decode("attendance.meeting.updated", None, report.body),
            Err(ReportDecodeError::Header("Attendance-Report-Id"))
        );
    }
}
