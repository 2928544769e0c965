use anyhow::Context as _;
use clap::Parser as _;
use worker::{Application, WorkerConfig};

/// Attendance worker: applies LiveKit webhook events from JetStream to PostgreSQL.
#[derive(Debug, clap::Parser)]
#[command(name = "worker", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: WorkerConfig,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Consume and apply events until SIGTERM (the default).
    Run,
    /// Rebuild attendance from the event log, for the meetings of one room name or all, then exit.
    Recompute {
        /// Only this room.
        #[arg(long)]
        room: Option<String>,
        /// Print the counts as a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Apply the database migrations, then exit (e.g. from a Kubernetes Job).
    Migrate,
    /// Erase a person's data (events, attendance, heartbeats), record the erasure, then exit.
    Erase(worker::erase::EraseArgs),
    /// Inspect, replay and purge dead-lettered events.
    Dlq {
        #[command(subcommand)]
        command: worker::dlq::DlqCommand,
    },
    /// Deliver meeting reports to the platform's endpoints (Standard Webhooks) until SIGTERM.
    Deliver(Box<worker::deliver::DeliverArgs>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = shared::runtime::telemetry::init("attendance-worker");
    let Cli { command, config } = Cli::parse();
    let result = run(command.unwrap_or(Command::Run), config).await;
    telemetry.shutdown();
    result
}

async fn run(command: Command, config: WorkerConfig) -> anyhow::Result<()> {
    match command {
        Command::Run => {
            let shutdown = shared::runtime::shutdown::on_signal();
            let app = Application::build(config).await.context("worker start-up failed")?;
            app.run(shutdown).await.context("worker failed")
        }
        Command::Recompute { room, json } => {
            let pool = config.database.pool()?;
            shared::store::MIGRATOR.run(&pool).await.context("migrations")?;
            let done = worker::recompute::recompute(&pool, room.as_deref(), &config.policy.policy())
                .await
                .context("recompute")?;
            if json {
                let counts =
                    serde_json::json!({"participants": done.participants, "sealed_skipped": done.sealed_skipped});
                println!("{counts}");
                return Ok(());
            }
            println!("recomputed {} participants (per meeting)", done.participants);
            if done.sealed_skipped > 0 {
                println!("{} sealed meetings skipped: their events are past the retention", done.sealed_skipped);
            }
            Ok(())
        }
        Command::Deliver(args) => worker::deliver::run(*args).await.context("worker deliver"),
        Command::Dlq { command } => {
            worker::dlq::run(command, &config.nats, &config.dead_letters.stream).await.map_err(anyhow::Error::from)
        }
        Command::Erase(args) => {
            let pool = config.database.pool()?;
            shared::store::MIGRATOR.run(&pool).await.context("migrations")?;
            worker::erase::run(args, &pool).await.context("erase")
        }
        Command::Migrate => {
            let pool = config.database.pool()?;
            shared::store::MIGRATOR.run(&pool).await.context("migrations")?;
            println!("migrations applied");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
