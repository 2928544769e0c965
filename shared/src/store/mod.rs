//! PostgreSQL: every SQL statement of the project, one module per table (or group of tables
//! that change together), each the only writer of its table.
//!
//! - [`event_log`]: `webhook_events`, the log of every event applied: the source of truth;
//! - [`meetings`]: `meetings`, one per room session, whose row locks serialize its changes;
//! - [`recompute`]: `meeting_participants` and `cycles`, the attendance rule applied to the log;
//! - [`heartbeats`]: `meeting_heartbeats`, each participant's latest client heartbeat;
//! - [`closures`]: `cycle_closures`, the sweeper's estimated ends of cycles;
//! - [`reconciliation`]: `meeting_checks`, `reconcile_budget` and `participant_listings`, the
//!   checks of running meetings against the LiveKit server and the sessions it listed;
//! - [`presence_outbox`]: `presence_outbox`, presence changes waiting to be published;
//! - [`deliveries`]: `delivery_attempts` and `delivery_endpoints_disabled`, the delivery of
//!   meeting reports to the platform's endpoints;
//! - [`report_outbox`]: `report_outbox` and `meeting_reports`, the meeting reports due to the
//!   platform and what it was told;
//! - [`read_model`]: what the read API shows (reads only);
//! - [`admin`]: whole databases, for the test and benchmark harnesses.
//!
//! Invariant: after every commit, a participant's row and cycles in a meeting equal the
//! attendance rule applied to its facts of that meeting in the log, whichever replica wrote them
//! and in whatever order the events came.

pub mod admin;
pub mod closures;
pub mod deliveries;
pub mod event_log;
pub mod heartbeats;
pub mod lifecycle;
pub mod meetings;
pub mod presence_outbox;
pub mod read_model;
pub mod recompute;
pub mod reconciliation;
pub mod report_outbox;

use sqlx::PgPool;
use sqlx::migrate::Migrator;

/// The schema, embedded in every binary and applied at start-up. sqlx holds an advisory lock
/// while migrating, so replicas starting together are safe.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Readiness of the database: one round trip.
pub async fn ping(pool: &PgPool) -> Result<(), String> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ()).map_err(|e| format!("PostgreSQL: {e}"))
}

/// Whether the database takes writes now: it answers, and a transaction would not be read-only
/// (a standby, or `default_transaction_read_only` set during a failover or maintenance).
pub async fn ping_writable(pool: &PgPool) -> Result<(), String> {
    let read_only: String = sqlx::query_scalar("SELECT current_setting('transaction_read_only')")
        .fetch_one(pool)
        .await
        .map_err(|e| format!("PostgreSQL: {e}"))?;
    if read_only == "off" { Ok(()) } else { Err("PostgreSQL is read-only".to_owned()) }
}

/// A failure that retrying cannot fix: PostgreSQL refused this message's data (SQLSTATE class
/// 22, data exception, e.g. a `\u0000` in JSON; class 23, integrity constraint; class 54, a
/// limit such as an index row too large).
pub fn is_permanent(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23") || code.starts_with("54"))
        }
        _ => false,
    }
}

/// A failure that means PostgreSQL is unreachable, going away or cannot take writes now (a
/// read-only server, 25006, as a failed-over or recovering primary is for a while): stop
/// pulling until it is back, instead of spending messages' deliveries on it.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") || code == "25006"
        }),
        _ => false,
    }
}
