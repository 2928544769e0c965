use anyhow::Context as _;
use clap::Parser as _;
use sweeper::{Application, SweeperConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = shared::runtime::telemetry::init("attendance-sweeper");
    let config = SweeperConfig::parse();
    let shutdown = shared::runtime::shutdown::on_signal();
    let app = Application::build(config).await.context("sweeper start-up failed")?;
    let result = app.run(shutdown).await.context("sweeper failed");
    telemetry.shutdown();
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <sweeper::SweeperConfig as clap::CommandFactory>::command().debug_assert();
    }
}
