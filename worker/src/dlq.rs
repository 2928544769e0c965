//! `worker dlq …`: the operators' view of the dead-letter stream. List and show dead letters,
//! replay them to their original subject (a fresh `Nats-Msg-Id`, so that JetStream's duplicate
//! window does not swallow them; the dead letter is removed only once the replay is stored), and
//! purge them. Replaying an event that was already applied changes nothing: the workers are
//! idempotent by event id.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, message::StreamMessage};
use bytes::Bytes;
use serde::Serialize;
use shared::stream::dead_letter_headers as dlq;

/// Which dead letters a command applies to; every given filter must match.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only this event type (`participant_joined`, …).
    #[arg(long)]
    pub event_type: Option<String>,
    /// Only events of this room.
    #[arg(long)]
    pub room: Option<String>,
    /// Only dead letters whose error contains this text (case-insensitive).
    #[arg(long)]
    pub error: Option<String>,
    /// Only dead letters that last failed at or after this time (RFC 3339, or a duration ago: `2h`).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only dead letters that last failed before this time (RFC 3339, or a duration ago).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
}

/// One dead letter, summarized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterRow {
    pub sequence: u64,
    pub event_type: String,
    pub event_id: Option<String>,
    pub room: Option<String>,
    pub identity: Option<String>,
    pub reason: String,
    pub error: String,
    pub delivery_count: i64,
    pub original_subject: String,
    pub failed_at: Option<String>,
    #[serde(skip)]
    pub failed_at_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot reach NATS at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the dead-letter stream {0} does not exist (no worker has started yet?)")]
    NoStream(String),
    #[error("no dead letter with sequence {0}")]
    NoSuchSequence(u64),
    #[error("dead letter {0} has no original subject; it cannot be replayed")]
    NoOriginalSubject(u64),
    #[error("NATS: {0}")]
    Nats(String),
}

/// Connects without retrying: an operator wants an answer, not a hang.
pub async fn connect(url: &str) -> Result<async_nats::Client, DlqError> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .name("attendance-dlq-cli")
        .connect(url)
        .await
        .map_err(|e| DlqError::Unreachable { url: url.to_owned(), reason: e.to_string() })
}

pub struct DeadLetters {
    jetstream: jetstream::Context,
    stream: jetstream::stream::Stream,
    name: String,
}

impl DeadLetters {
    pub async fn open(client: async_nats::Client, stream_name: &str) -> Result<Self, DlqError> {
        let jetstream = jetstream::new(client);
        let stream = jetstream.get_stream(stream_name).await.map_err(|_| DlqError::NoStream(stream_name.to_owned()))?;
        Ok(DeadLetters { jetstream, stream, name: stream_name.to_owned() })
    }

    /// Every dead letter that matches, oldest first.
    pub async fn list(&mut self, filter: &Filter) -> Result<Vec<(DeadLetterRow, StreamMessage)>, DlqError> {
        let state = self.stream.info().await.map_err(|e| DlqError::Nats(e.to_string()))?.state.clone();
        let mut rows = Vec::new();
        if state.messages == 0 {
            return Ok(rows);
        }
        for sequence in state.first_sequence..=state.last_sequence {
            // Deleted sequences (replayed or purged) leave gaps.
            let Ok(message) = self.stream.get_raw_message(sequence).await else { continue };
            let row = summarize(&message);
            if matches(&row, filter) {
                rows.push((row, message));
            }
        }
        Ok(rows)
    }

    pub async fn get(&self, sequence: u64) -> Result<StreamMessage, DlqError> {
        self.stream.get_raw_message(sequence).await.map_err(|_| DlqError::NoSuchSequence(sequence))
    }

    /// Republishes a dead letter to its original subject with a fresh message id, then deletes
    /// it once JetStream acknowledged the republish.
    pub async fn replay(&self, message: &StreamMessage) -> Result<u64, DlqError> {
        let subject =
            header(&message.headers, dlq::ORIGINAL_SUBJECT).ok_or(DlqError::NoOriginalSubject(message.sequence))?;
        let mut headers = HeaderMap::new();
        for (name, values) in message.headers.iter() {
            let name: &str = name.as_ref();
            if name.starts_with("Dlq-") || name == "Nats-Msg-Id" {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
        let message_id = format!("replay:{}:{}:{:08x}", self.name, message.sequence, fastrand::u32(..));
        let publish = PublishMessage::build()
            .payload(Bytes::copy_from_slice(&message.payload))
            .headers(headers)
            .message_id(message_id);
        let ack = self.jetstream.send_publish(subject, publish).await.map_err(|e| DlqError::Nats(e.to_string()))?;
        let stored = ack.await.map_err(|e| DlqError::Nats(e.to_string()))?;
        self.delete(message.sequence).await?;
        Ok(stored.sequence)
    }

    pub async fn delete(&self, sequence: u64) -> Result<(), DlqError> {
        self.stream.delete_message(sequence).await.map(|_| ()).map_err(|e| DlqError::Nats(e.to_string()))
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.as_str().to_owned())
}

/// The summary of a dead letter, from its headers and (when it is JSON) its payload.
pub fn summarize(message: &StreamMessage) -> DeadLetterRow {
    let payload: serde_json::Value = serde_json::from_slice(&message.payload).unwrap_or_default();
    let text = |value: &serde_json::Value| value.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let failed_at_ms = header(&message.headers, dlq::LAST_FAILURE_AT_MS).and_then(|v| v.parse().ok());
    DeadLetterRow {
        sequence: message.sequence,
        event_type: message.subject.rsplit('.').next().unwrap_or_default().to_owned(),
        event_id: text(&payload["id"]),
        room: text(&payload["room"]["name"]),
        identity: text(&payload["participant"]["identity"]),
        reason: header(&message.headers, dlq::REASON).unwrap_or_default(),
        error: header(&message.headers, dlq::ERROR).unwrap_or_default(),
        delivery_count: header(&message.headers, dlq::DELIVERY_COUNT).and_then(|v| v.parse().ok()).unwrap_or_default(),
        original_subject: header(&message.headers, dlq::ORIGINAL_SUBJECT).unwrap_or_default(),
        failed_at: failed_at_ms.map(shared::storage::rfc3339_ms),
        failed_at_ms,
    }
}

pub fn matches(row: &DeadLetterRow, filter: &Filter) -> bool {
    filter.event_type.as_ref().is_none_or(|t| &row.event_type == t)
        && filter.room.as_ref().is_none_or(|r| row.room.as_ref() == Some(r))
        && filter.error.as_ref().is_none_or(|e| row.error.to_lowercase().contains(&e.to_lowercase()))
        && filter.since.is_none_or(|since| row.failed_at_ms.is_some_and(|at| at >= since))
        && filter.until.is_none_or(|until| row.failed_at_ms.is_some_and(|at| at < until))
}

/// A table for people.
pub fn table(rows: &[DeadLetterRow]) -> String {
    let mut out = format!(
        "{:>8}  {:<24}  {:<20}  {:<16}  {:<18}  {:>5}  {:<24}  {}\n",
        "SEQ", "FAILED AT", "EVENT", "ROOM", "IDENTITY", "TRIES", "REASON", "ERROR"
    );
    let cut = |s: &str, n: usize| {
        if s.chars().count() > n { format!("{}…", s.chars().take(n - 1).collect::<String>()) } else { s.to_owned() }
    };
    for row in rows {
        out.push_str(&format!(
            "{:>8}  {:<24}  {:<20}  {:<16}  {:<18}  {:>5}  {:<24}  {}\n",
            row.sequence,
            row.failed_at.as_deref().unwrap_or("-"),
            cut(&row.event_type, 20),
            cut(row.room.as_deref().unwrap_or("-"), 16),
            cut(row.identity.as_deref().unwrap_or("-"), 18),
            row.delivery_count,
            cut(&row.reason, 24),
            cut(&row.error, 80),
        ));
    }
    out
}

/// RFC 3339, or a duration meaning "that long ago" (`90m`, `2d`), as unix milliseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ago) = humantime_duration(text) {
        return Ok(shared::now_unix_ms() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(shared::storage::unix_ms)
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a duration like 2h"))
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    shared::config::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> DeadLetterRow {
        DeadLetterRow {
            sequence: 7,
            event_type: "participant_joined".into(),
            event_id: Some("EV_1".into()),
            room: Some("algebra".into()),
            identity: Some("ada".into()),
            reason: "invalid_event".into(),
            error: "the event has no `id`".into(),
            delivery_count: 1,
            original_subject: "livekit.webhook.participant_joined".into(),
            failed_at: Some(shared::storage::rfc3339_ms(1_000_000)),
            failed_at_ms: Some(1_000_000),
        }
    }

    #[test]
    fn every_filter_must_match() {
        assert!(matches(&row(), &Filter::default()));
        assert!(matches(
            &row(),
            &Filter { room: Some("algebra".into()), error: Some("NO `ID`".into()), ..Default::default() }
        ));
        assert!(!matches(&row(), &Filter { room: Some("geometry".into()), ..Default::default() }));
        assert!(!matches(&row(), &Filter { event_type: Some("room_finished".into()), ..Default::default() }));
        assert!(matches(&row(), &Filter { since: Some(1_000_000), until: Some(1_000_001), ..Default::default() }));
        assert!(!matches(&row(), &Filter { since: Some(1_000_001), ..Default::default() }));
    }

    #[test]
    fn times_are_rfc3339_or_durations_ago() {
        assert_eq!(parse_time("1970-01-01T00:16:40Z"), Ok(1_000_000));
        let two_hours_ago = parse_time("2h").unwrap();
        assert!((shared::now_unix_ms() - two_hours_ago - 7_200_000).abs() < 1_000);
        assert!(parse_time("yesterday").is_err());
    }
}

/// The `worker dlq` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters (oldest first).
    List {
        #[command(flatten)]
        filter: Filter,
        /// One JSON object per line, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter whole, headers included.
    Show { sequence: u64 },
    /// Republish dead letters to their original subject, then remove them.
    Replay {
        /// Only this dead letter.
        #[arg(long)]
        sequence: Option<u64>,
        /// Every dead letter (required when no sequence or filter is given).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: Filter,
        /// Say what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Most replays per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
    },
    /// Delete dead letters for good.
    Purge {
        #[command(flatten)]
        filter: Filter,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.event_type.is_none()
            && self.room.is_none()
            && self.error.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }
}

/// Runs a `worker dlq` command against the dead-letter stream; output goes to stdout.
pub async fn run(command: DlqCommand, nats_url: &str, stream: &str) -> Result<(), DlqError> {
    let mut letters = DeadLetters::open(connect(nats_url).await?, stream).await?;
    match command {
        DlqCommand::List { filter, json } => {
            let rows = letters.list(&filter).await?;
            if json {
                for (row, _) in &rows {
                    println!("{}", serde_json::to_string(row).expect("a row serializes"));
                }
            } else if rows.is_empty() {
                println!("no dead letters{}", if filter.is_empty() { "" } else { " match" });
            } else {
                let rows: Vec<DeadLetterRow> = rows.into_iter().map(|(row, _)| row).collect();
                print!("{}", table(&rows));
            }
        }
        DlqCommand::Show { sequence } => {
            let message = letters.get(sequence).await?;
            println!("sequence: {}\nsubject: {}\npublished: {}", message.sequence, message.subject, message.time);
            for (name, values) in message.headers.iter() {
                for value in values {
                    println!("{}: {}", AsRef::<str>::as_ref(name), value.as_str());
                }
            }
            let payload = serde_json::from_slice::<serde_json::Value>(&message.payload)
                .map(|json| serde_json::to_string_pretty(&json).expect("JSON serializes"))
                .unwrap_or_else(|_| String::from_utf8_lossy(&message.payload).into_owned());
            println!("\n{payload}");
        }
        DlqCommand::Replay { sequence, all, filter, dry_run, rate } => {
            let selected = match sequence {
                Some(sequence) => {
                    let message = letters.get(sequence).await?;
                    vec![(summarize(&message), message)]
                }
                None if filter.is_empty() && !all => {
                    println!(
                        "say what to replay: --sequence N, a filter (--room, --event-type, --error, --since, --until), or --all"
                    );
                    return Ok(());
                }
                None => letters.list(&filter).await?,
            };
            if selected.is_empty() {
                println!("no dead letters to replay");
                return Ok(());
            }
            if dry_run {
                let rows: Vec<DeadLetterRow> = selected.into_iter().map(|(row, _)| row).collect();
                print!("{}", table(&rows));
                println!("dry run: {} dead letters would be replayed", rows.len());
                return Ok(());
            }
            let progress = indicatif::ProgressBar::new(selected.len() as u64);
            let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.01)));
            for (row, message) in &selected {
                pace.tick().await;
                letters.replay(message).await?;
                progress.inc(1);
                tracing::info!(sequence = row.sequence, subject = row.original_subject, "replayed");
            }
            progress.finish_and_clear();
            println!("replayed {} dead letters", selected.len());
        }
        DlqCommand::Purge { filter, yes } => {
            let selected = letters.list(&filter).await?;
            if selected.is_empty() {
                println!("no dead letters to purge");
                return Ok(());
            }
            if !yes && !confirm(&format!("purge {} dead letters for good? type yes: ", selected.len())) {
                println!("nothing purged");
                return Ok(());
            }
            for (row, _) in &selected {
                letters.delete(row.sequence).await?;
            }
            println!("purged {} dead letters", selected.len());
        }
    }
    Ok(())
}

fn confirm(question: &str) -> bool {
    use std::io::Write as _;
    print!("{question}");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && answer.trim().eq_ignore_ascii_case("yes")
}
