//! `worker dlq …`: the operators' commands on the dead-letter stream: list and show dead
//! letters, replay them to their original subject, purge them. This module parses the commands
//! and prints; reading, replaying and deleting dead letters is [`shared::nats::dead_letters`].
//! Replaying an event that was already applied changes nothing: the workers are idempotent by
//! event id.

use std::time::Duration;

use shared::nats::dead_letters::{DeadLetterError, DeadLetterFilter, DeadLetterSummary, DeadLetters};

/// The `worker dlq` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters (oldest first).
    List {
        #[command(flatten)]
        filter: DeadLetterFilter,
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
        filter: DeadLetterFilter,
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
        filter: DeadLetterFilter,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs a `worker dlq` command against the dead-letter stream; output goes to stdout.
pub async fn run(command: DlqCommand, nats_url: &str, stream: &str) -> Result<(), DeadLetterError> {
    let mut letters = DeadLetters::connect(nats_url, stream).await?;
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
                let rows: Vec<DeadLetterSummary> = rows.into_iter().map(|(row, _)| row).collect();
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
                    vec![(DeadLetterSummary::of(&message), message)]
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
                let rows: Vec<DeadLetterSummary> = selected.into_iter().map(|(row, _)| row).collect();
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

/// A table for people.
pub fn table(rows: &[DeadLetterSummary]) -> String {
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
