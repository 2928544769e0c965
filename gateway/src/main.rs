use anyhow::Context as _;
use clap::Parser as _;
use gateway::{Application, GatewayConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let config = GatewayConfig::parse();
    let shutdown = shared::shutdown::on_signal();
    let app = Application::build(config).await.context("gateway start-up failed")?;
    app.run(shutdown).await.context("gateway server failed")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <gateway::GatewayConfig as clap::CommandFactory>::command().debug_assert();
    }
}
