//! `worker erase --identity ID [--room NAME]`: deletes a person's data on request (their events,
//! attendance, cycles, heartbeats, estimates and presence changes) in one transaction, and
//! records the erasure without personal data so that replaying their old events later (dead
//! letters, the stream) does not bring them back. The deleting is
//! [`shared::store::lifecycle::erase_identity`]; this parses, asks and prints.

use std::io::Write as _;

use serde::Serialize;
use shared::store::lifecycle::{self, ErasureCounts};
use sqlx::PgPool;

#[derive(Debug, Clone, clap::Args)]
pub struct EraseArgs {
    /// The participant identity to erase.
    #[arg(long)]
    pub identity: String,
    /// Only this room name's data (default: every room).
    #[arg(long)]
    pub room: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Print what was removed as JSON (the question, if any, goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Who asks for the erasure, kept in its record.
    #[arg(long, env = "USER", default_value = "unknown")]
    pub by: String,
}

#[derive(Serialize)]
struct Report<'a> {
    erased: bool,
    identity_sha256: String,
    room: Option<&'a str>,
    removed: ErasureCounts,
}

/// Runs the command; what it did goes to stdout.
pub async fn run(args: EraseArgs, pool: &PgPool) -> Result<(), sqlx::Error> {
    let room = args.room.as_deref();
    let preview = lifecycle::erasure_preview(pool, &args.identity, room).await?;
    let report =
        |erased, removed| Report { erased, identity_sha256: lifecycle::identity_digest(&args.identity), room, removed };
    if !args.yes {
        let scope = room.map(|room| format!(" in room {room:?}")).unwrap_or_default();
        let question = format!(
            "erase {:?}{scope}: {} events, {} meeting attendances, {} cycles, {} heartbeats, {} estimates, {} presence changes? type yes: ",
            args.identity,
            preview.events,
            preview.meeting_participants,
            preview.cycles,
            preview.heartbeats,
            preview.closures,
            preview.presence_outbox
        );
        if !confirm(&question) {
            print(&report(false, ErasureCounts::default()), args.json, "nothing erased");
            return Ok(());
        }
    }
    let removed = lifecycle::erase_identity(pool, &args.identity, room, &args.by).await?;
    let summary = format!(
        "erased: {} events, {} meeting attendances, {} cycles, {} heartbeats, {} estimates, {} presence changes; \
         later events of this identity will be refused",
        removed.events,
        removed.meeting_participants,
        removed.cycles,
        removed.heartbeats,
        removed.closures,
        removed.presence_outbox
    );
    print(&report(true, removed), args.json, &summary);
    Ok(())
}

fn print(report: &Report<'_>, json: bool, text: &str) {
    if json {
        println!("{}", serde_json::to_string(report).expect("a report serializes"));
    } else {
        println!("{text}");
    }
}

fn confirm(question: &str) -> bool {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && answer.trim().eq_ignore_ascii_case("yes")
}
