//! PostgreSQL connection settings and the pool every service uses (the statements are all in
//! [`crate::store`]).

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/attendance",
        hide_env_values = true
    )]
    pub url: String,
    /// Most connections this process opens.
    #[arg(
        id = "database-max-connections",
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub max_connections: u32,
    /// How long to wait for a free connection before the operation fails (and is retried later).
    #[arg(id = "database-acquire-timeout", long = "database-acquire-timeout", env = "DATABASE_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub acquire_timeout: Duration,
}

impl DatabaseArgs {
    /// A pool that connects on first use, so that a service starts (not ready) while PostgreSQL
    /// is down rather than crash-looping.
    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy(&self.url)
    }

    /// [`Self::pool`] for a background service (worker, sweeper), whose statements all look
    /// rows up by key: each is planned once per connection (`plan_cache_mode =
    /// force_generic_plan`) rather than at every execution, which took 29 % of PostgreSQL's
    /// statement time in the benchmark (`pg_stat_statements.track_planning`); and index probes
    /// are costed as the reads from memory they are for this working set (`random_page_cost =
    /// 1.1`, the usual SSD setting; with the default 4 the meetings' lock statement took 9 → 43
    /// ms per 70 batches from an empty database to one with history, with 1.1 7 → 11). The read API keeps the
    /// server's settings: its optional filters do depend on the values.
    pub fn background_pool(&self) -> Result<PgPool, sqlx::Error> {
        let options = PgConnectOptions::from_str(&self.url)?
            .options([("plan_cache_mode", "force_generic_plan"), ("random_page_cost", "1.1")]);
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(options))
    }
}
