use anyhow::Context as _;
use clap::Parser as _;
use gateway::{Application, GatewayConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = shared::runtime::telemetry::init("attendance-gateway");
    let config = GatewayConfig::parse();
    let shutdown = shared::runtime::shutdown::on_signal();
    let app = Application::build(config).await.context("gateway start-up failed")?;
    let result = app.run(shutdown).await.context("gateway server failed");
    telemetry.shutdown();
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <gateway::GatewayConfig as clap::CommandFactory>::command().debug_assert();
    }
}
