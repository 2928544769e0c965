//! `loadgen bench`: the benchmark report (see `make bench`). `loadgen gateway`: only the
//! gateway's capacity, against a gateway already running.

use anyhow::Context as _;
use clap::Parser;
use loadgen::{bench, capacity, ceiling};
use shared::runtime::config::LiveKitKeyArgs;

#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
enum Command {
    /// The whole system under a realistic workload, then the gateway's capacity and the
    /// workers' throughput; writes a Markdown report and a plot. A flag given twice takes
    /// its last value (`make bench-quick BENCH_ARGS=...` overrides the quick sizes).
    #[command(args_override_self = true)]
    Bench(Box<bench::BenchArgs>),
    /// Measure a running gateway's webhook endpoint at several concurrency levels.
    Gateway(GatewayArgs),
    /// Serve the gateway's ceiling: the webhook body published to JetStream with a unique
    /// message id, 200 after the ack, nothing else (what `loadgen bench` compares it with).
    CeilingGateway(Box<ceiling::CeilingArgs>),
    /// Run the workers' ceiling: the workers' consumers read in batches, each batch's event rows
    /// inserted in one transaction, then acknowledged; no attendance (what `loadgen bench`
    /// compares the workers with).
    CeilingWorkers(Box<worker::config::WorkerConfig>),
}

#[derive(Debug, clap::Args)]
struct GatewayArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Requests per concurrency level.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrency levels (requests in flight at once), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    concurrency: Vec<usize>,
    #[command(flatten)]
    keys: LiveKitKeyArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::Bench(args) => {
            if !bench::run(*args).await? {
                anyhow::bail!("the stored attendance differs from the workload's expectation (see the report)");
            }
            Ok(())
        }
        Command::CeilingGateway(args) => ceiling::serve_gateway_ceiling(*args).await,
        Command::CeilingWorkers(args) => {
            ceiling::serve_workers_ceiling(*args, shared::runtime::shutdown::on_signal()).await
        }
        Command::Gateway(args) => {
            let keys = args.keys.key_set().context("LiveKit keys")?;
            let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
            let results = capacity::measure(&http, &args.url, &keys, args.requests, &args.concurrency).await?;
            println!("{}", capacity::TABLE_HEADER);
            for level in results {
                println!("{}", level.row());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <super::Command as clap::CommandFactory>::command().debug_assert();
    }
}
