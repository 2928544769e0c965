//! Databases as a whole, for the harnesses that make their own (tests, the benchmark): create
//! and drop one beside the configured database, copy one, its server's version, and the benchmark's commit
//! probe. No service calls these.

use sqlx::Connection as _;

/// `url` with its database name replaced (query parameters kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let query = rest.split_once('?').map(|(_, query)| format!("?{query}")).unwrap_or_default();
    format!("{scheme}://{authority}/{database}{query}")
}

/// Whether `name` may be used as a database name as it is (it is written into the statement).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

fn invalid_name(name: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("{name:?} is not a plain database name (a-z, 0-9, _)"))
}

/// Creates the empty database `name` on the server of `server_url`; returns its URL.
pub async fn create_database(server_url: &str, name: &str) -> Result<String, sqlx::Error> {
    if !is_plain_name(name) {
        return Err(invalid_name(name));
    }
    let mut admin = sqlx::PgConnection::connect(&with_database(server_url, "postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
    Ok(with_database(server_url, name))
}

/// Creates the database `name` as a copy of `template` (which nobody may be connected to) on
/// the server of `server_url`; returns its URL. A benchmark loads a database once and measures
/// on copies of it.
pub async fn copy_database(server_url: &str, template: &str, name: &str) -> Result<String, sqlx::Error> {
    for plain in [template, name] {
        if !is_plain_name(plain) {
            return Err(invalid_name(plain));
        }
    }
    let mut admin = sqlx::PgConnection::connect(&with_database(server_url, "postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name} TEMPLATE {template}"))).execute(&mut admin).await?;
    Ok(with_database(server_url, name))
}

/// Drops the database `name` on the server of `server_url`, closing its connections.
pub async fn drop_database(server_url: &str, name: &str) -> Result<(), sqlx::Error> {
    if !is_plain_name(name) {
        return Err(invalid_name(name));
    }
    let mut admin = sqlx::PgConnection::connect(&with_database(server_url, "postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// Vacuums and analyzes the database of `url`: what autovacuum does, in time, to a database that
/// has been written to, so that a benchmark's freshly loaded database is measured as a running
/// system would hold it (no dead row versions for every index probe to step over, statistics
/// the planner can use).
pub async fn vacuum_analyze(url: &str) -> Result<(), sqlx::Error> {
    let mut connection = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql("VACUUM (ANALYZE)").execute(&mut connection).await?;
    Ok(())
}

/// Writes every dirty page of the server to disk (`CHECKPOINT`; a superuser's or
/// `pg_checkpoint`'s right): what a copy of a database or a load left unwritten is then not
/// written, and paid for, during whatever is measured next.
pub async fn checkpoint(url: &str) -> Result<(), sqlx::Error> {
    let mut connection = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql("CHECKPOINT").execute(&mut connection).await?;
    Ok(())
}

/// Reads every table and index of the database of `url` into PostgreSQL's buffers
/// (`pg_prewarm`, from PostgreSQL's contrib): a database just copied from a template starts
/// with none of its pages there, unlike a running system's. Returns the blocks read.
pub async fn prewarm(url: &str) -> Result<i64, sqlx::Error> {
    let mut connection = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_prewarm").execute(&mut connection).await?;
    sqlx::query_scalar(
        "SELECT coalesce(sum(pg_prewarm(c.oid::regclass)), 0)::int8 FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')",
    )
    .fetch_one(&mut connection)
    .await
}

/// The server's version, as it reports it.
pub async fn server_version(url: &str) -> Result<String, sqlx::Error> {
    let mut connection = sqlx::PgConnection::connect(url).await?;
    sqlx::query_scalar("SHOW server_version").fetch_one(&mut connection).await
}

/// Whether a connection made with `url` (and libpq's `PG*` variables, as the services read them)
/// is encrypted: with `sslmode=prefer`, the default, that depends on the server.
pub async fn connection_uses_tls(url: &str) -> Result<bool, sqlx::Error> {
    let mut connection = sqlx::PgConnection::connect(url).await?;
    sqlx::query_scalar("SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)")
        .fetch_one(&mut connection)
        .await
}

/// Makes PostgreSQL announce every event-log row on `channel` when its transaction commits, so a
/// benchmark sees the moment attendance is committed (the row and the recomputed attendance are
/// in one transaction). Only ever in a benchmark's own database.
pub async fn announce_event_log_commits(url: &str, channel: &str) -> Result<(), sqlx::Error> {
    if !is_plain_name(channel) {
        return Err(invalid_name(channel));
    }
    let mut connection = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION bench_announce_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('{channel}', NEW.event_id); RETURN NULL; END $$;
         CREATE TRIGGER bench_announce_commit AFTER INSERT ON webhook_events
         FOR EACH ROW EXECUTE FUNCTION bench_announce_commit();"
    )))
    .execute(&mut connection)
    .await?;
    Ok(())
}

/// One statement's share of a database's work, as `pg_stat_statements` counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementStats {
    /// The statement, its constants replaced by `$n`.
    pub query: String,
    pub calls: i64,
    pub rows: i64,
    /// Time spent executing and planning it (planning only with `track_planning`).
    pub total_ms: f64,
}

/// Starts counting the statements of the database of `url` afresh. `Ok(false)` when the server
/// does not count statements (`pg_stat_statements` is not in its `shared_preload_libraries`),
/// so that a benchmark still runs on a server set up as most are.
pub async fn reset_statement_stats(url: &str) -> Result<bool, sqlx::Error> {
    let mut connection = sqlx::PgConnection::connect(url).await?;
    let loaded: bool = sqlx::query_scalar(
        "SELECT 'pg_stat_statements' = ANY(string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))",
    )
    .fetch_one(&mut connection)
    .await?;
    if !loaded {
        return Ok(false);
    }
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&mut connection).await?;
    sqlx::query(
        "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)",
    )
    .execute(&mut connection)
    .await?;
    Ok(true)
}

/// The statements of the database of `url` since [`reset_statement_stats`], the costliest
/// first (this harness's own reading of them left out).
pub async fn statement_stats(url: &str) -> Result<Vec<StatementStats>, sqlx::Error> {
    let mut connection = sqlx::PgConnection::connect(url).await?;
    let rows: Vec<(String, i64, i64, f64)> = sqlx::query_as(
        "SELECT query, calls, rows, total_exec_time + total_plan_time FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%pg_stat_statements%'
         ORDER BY 4 DESC",
    )
    .fetch_all(&mut connection)
    .await?;
    Ok(rows.into_iter().map(|(query, calls, rows, total_ms)| StatementStats { query, calls, rows, total_ms }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name_and_keeps_the_query() {
        assert_eq!(with_database("postgres://u@h:5432/attendance", "bench_1"), "postgres://u@h:5432/bench_1");
        assert_eq!(with_database("postgres://u@h:5432", "bench_1"), "postgres://u@h:5432/bench_1");
        assert_eq!(with_database("postgres://h/a?sslmode=disable", "b"), "postgres://h/b?sslmode=disable");
    }

    #[test]
    fn only_plain_names_are_written_into_statements() {
        assert!(is_plain_name("bench_0a1b") && is_plain_name("test_abc123"));
        assert!(
            !is_plain_name("x; DROP DATABASE y") && !is_plain_name("") && !is_plain_name("9a") && !is_plain_name("A")
        );
    }
}
