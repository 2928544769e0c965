//! `worker dlq …`: the operators' commands on the dead-letter stream: list and show dead
//! letters, replay them to their original subject, purge them. This module parses the commands
//! and prints; reading, replaying and deleting dead letters is [`shared::nats::dead_letters`].
//! Replaying an event that was already applied changes nothing: the workers are idempotent by
//! event id.

use std::time::Duration;

use serde_json::json;
use shared::nats::NatsArgs;
use shared::nats::dead_letters::{DeadLetterError, DeadLetterFilter, DeadLetterSummary, DeadLetters};

/// Why a `worker dlq` command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Letters(#[from] DeadLetterError),
    #[error("say what to replay: --sequence N, a filter (--room, --event-type, --error, --since, --until), or --all")]
    NothingSelected,
    #[error("--json cannot ask for confirmation: add --yes")]
    JsonNeedsYes,
}

/// The `worker dlq` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters (oldest first).
    List {
        #[command(flatten)]
        filter: DeadLetterFilter,
        /// A JSON array of the dead letters (`[]` when there are none), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter whole, headers included.
    Show {
        sequence: u64,
        /// As a JSON object (headers, and the payload as JSON when it is JSON).
        #[arg(long)]
        json: bool,
    },
    /// Republish dead letters to their original subject, then remove them.
    Replay {
        /// Only this dead letter.
        #[arg(long)]
        sequence: Option<u64>,
        /// Every dead letter (required when no sequence or filter is given).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: DeadLetterFilter,
        /// Say what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Most replays per second (above 0, at most 10 000).
        #[arg(long, default_value_t = 50.0, value_parser = parse_rate)]
        rate: f64,
        /// Print what was (or would be) replayed as a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Delete dead letters for good.
    Purge {
        #[command(flatten)]
        filter: DeadLetterFilter,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Print how many were purged as a JSON object (needs --yes).
        #[arg(long)]
        json: bool,
    },
}

/// A replay rate: a finite number of replays per second, above 0 and at most 10 000.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 10_000.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate above 0 and at most 10000 per second")),
    }
}

/// Runs a `worker dlq` command against the dead-letter stream. Results go to stdout (with
/// `--json`, JSON and nothing else); logs, progress and questions go to stderr.
pub async fn run(command: DlqCommand, nats: &NatsArgs, stream: &str) -> Result<(), DlqError> {
    let mut letters = DeadLetters::connect(nats, stream).await?;
    match command {
        DlqCommand::List { filter, json } => {
            let rows: Vec<DeadLetterSummary> = letters.list(&filter).await?.into_iter().map(|(row, _)| row).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows).expect("rows serialize"));
            } else if rows.is_empty() {
                println!("no dead letters{}", if filter.is_empty() { "" } else { " match" });
            } else {
                print!("{}", table(&rows));
            }
        }
        DlqCommand::Show { sequence, json } => {
            let message = letters.get(sequence).await?;
            let payload = serde_json::from_slice::<serde_json::Value>(&message.payload);
            if json {
                let mut headers = serde_json::Map::new();
                for (name, values) in message.headers.iter() {
                    let values: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
                    headers.insert(AsRef::<str>::as_ref(name).to_owned(), json!(values));
                }
                let payload = payload.unwrap_or_else(|_| json!(String::from_utf8_lossy(&message.payload)));
                let shown = json!({
                    "sequence": message.sequence,
                    "subject": message.subject.as_str(),
                    "published": message.time.to_string(),
                    "headers": headers,
                    "payload": payload,
                });
                println!("{}", serde_json::to_string_pretty(&shown).expect("JSON serializes"));
                return Ok(());
            }
            println!(
                "sequence: {}\nsubject: {}\npublished: {}",
                message.sequence,
                printable(&message.subject),
                message.time
            );
            for (name, values) in message.headers.iter() {
                for value in values {
                    println!("{}: {}", printable(name.as_ref()), printable(value.as_str()));
                }
            }
            // Pretty JSON escapes every control character; anything else is shown escaped.
            let payload = payload
                .map(|json| serde_json::to_string_pretty(&json).expect("JSON serializes"))
                .unwrap_or_else(|_| printable(&String::from_utf8_lossy(&message.payload)));
            println!("\n{payload}");
        }
        DlqCommand::Replay { sequence, all, filter, dry_run, rate, json } => {
            let selected = match sequence {
                Some(sequence) => {
                    let message = letters.get(sequence).await?;
                    vec![(DeadLetterSummary::of(&message), message)]
                }
                None if filter.is_empty() && !all => return Err(DlqError::NothingSelected),
                None => letters.list(&filter).await?,
            };
            if dry_run {
                let rows: Vec<DeadLetterSummary> = selected.into_iter().map(|(row, _)| row).collect();
                if json {
                    println!("{}", serde_json::to_string_pretty(&json!({"would_replay": rows})).expect("serializes"));
                } else if rows.is_empty() {
                    println!("no dead letters to replay");
                } else {
                    print!("{}", table(&rows));
                    println!("dry run: {} dead letters would be replayed", rows.len());
                }
                return Ok(());
            }
            let progress = if json || selected.is_empty() {
                indicatif::ProgressBar::hidden()
            } else {
                indicatif::ProgressBar::new(selected.len() as u64)
            };
            let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let mut replayed = Vec::with_capacity(selected.len());
            for (row, message) in &selected {
                pace.tick().await;
                letters.replay(message).await?;
                progress.inc(1);
                tracing::info!(sequence = row.sequence, subject = row.original_subject, "replayed");
                replayed.push(row.sequence);
            }
            progress.finish_and_clear();
            if json {
                println!("{}", json!({"replayed": replayed}));
            } else if replayed.is_empty() {
                println!("no dead letters to replay");
            } else {
                println!("replayed {} dead letters", replayed.len());
            }
        }
        DlqCommand::Purge { filter, yes, json } => {
            if json && !yes {
                return Err(DlqError::JsonNeedsYes);
            }
            let selected = letters.list(&filter).await?;
            if !selected.is_empty()
                && !yes
                && !confirm(&format!("purge {} dead letters for good? type yes: ", selected.len()))
            {
                println!("nothing purged");
                return Ok(());
            }
            for (row, _) in &selected {
                letters.delete(row.sequence).await?;
            }
            if json {
                println!("{}", json!({"purged": selected.iter().map(|(row, _)| row.sequence).collect::<Vec<_>>()}));
            } else if selected.is_empty() {
                println!("no dead letters to purge");
            } else {
                println!("purged {} dead letters", selected.len());
            }
        }
    }
    Ok(())
}

/// Text from outside (room names, identities, error texts) as a terminal may show it: control
/// characters (escape sequences, CR, LF) escaped, never interpreted.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Asks on stderr (stdout holds only results) and reads the answer from stdin.
fn confirm(question: &str) -> bool {
    use std::io::Write as _;
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && answer.trim().eq_ignore_ascii_case("yes")
}

/// A table for people.
pub fn table(rows: &[DeadLetterSummary]) -> String {
    let mut out = format!(
        "{:>8}  {:<24}  {:<20}  {:<16}  {:<18}  {:>5}  {:<24}  {}\n",
        "SEQ", "FAILED AT", "EVENT", "ROOM", "IDENTITY", "TRIES", "REASON", "ERROR"
    );
    let cut = |s: &str, n: usize| {
        let s = printable(s);
        if s.chars().count() > n { format!("{}…", s.chars().take(n - 1).collect::<String>()) } else { s }
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
