//! Deliveries of meeting reports to the platform's endpoints (`worker deliver`):
//! `delivery_attempts`, one row per attempt (its answer, latency and error), kept for a
//! retention; and `delivery_endpoints_disabled`, the endpoints that answered 410 Gone.
//!
//! Invariant: an endpoint is disabled for the URL that answered 410 only; the same endpoint
//! configured with another URL is a new destination, delivered to again.

use sqlx::PgPool;
use time::OffsetDateTime;

/// One attempt to deliver a report to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub endpoint: String,
    pub report_id: String,
    /// JetStream's delivery count (1 for the first attempt).
    pub attempt: i64,
    /// The HTTP status of the answer; `None` when there was no answer.
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// A recorded attempt, with its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAttempt {
    pub attempt: Attempt,
    pub attempted_at: OffsetDateTime,
}

/// An endpoint that answered 410 Gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledEndpoint {
    pub endpoint: String,
    /// The URL that answered 410: the endpoint stays disabled while it is configured with it.
    pub url: String,
    pub status: u16,
    pub reason: String,
    pub disabled_at: OffsetDateTime,
}

/// The error text kept of an attempt, at most this many characters.
const MAX_ERROR_CHARS: usize = 1_000;

pub async fn record_attempt(pool: &PgPool, attempt: &Attempt) -> Result<(), sqlx::Error> {
    let error = attempt.error.as_deref().map(|error| error.chars().take(MAX_ERROR_CHARS).collect::<String>());
    sqlx::query(
        "INSERT INTO delivery_attempts (endpoint, report_id, attempt, status, latency_ms, error)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&attempt.endpoint)
    .bind(&attempt.report_id)
    .bind(i32::try_from(attempt.attempt).unwrap_or(i32::MAX))
    .bind(attempt.status.map(|status| i16::try_from(status).unwrap_or(i16::MAX)))
    .bind(i32::try_from(attempt.latency_ms).unwrap_or(i32::MAX))
    .bind(error)
    .execute(pool)
    .await
    .map(|_| ())
}

/// The attempts to deliver one report to one endpoint, oldest first.
pub async fn attempts_of(pool: &PgPool, endpoint: &str, report_id: &str) -> Result<Vec<RecordedAttempt>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        attempt: i32,
        status: Option<i16>,
        latency_ms: i32,
        error: Option<String>,
        attempted_at: OffsetDateTime,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT attempt, status, latency_ms, error, attempted_at FROM delivery_attempts
         WHERE endpoint = $1 AND report_id = $2 ORDER BY id",
    )
    .bind(endpoint)
    .bind(report_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| RecordedAttempt {
            attempt: Attempt {
                endpoint: endpoint.to_owned(),
                report_id: report_id.to_owned(),
                attempt: row.attempt.into(),
                status: row.status.and_then(|status| u16::try_from(status).ok()),
                latency_ms: row.latency_ms.into(),
                error: row.error,
            },
            attempted_at: row.attempted_at,
        })
        .collect())
}

/// When the first recorded attempt to deliver the report to the endpoint was made.
pub async fn first_attempt_at(
    pool: &PgPool,
    endpoint: &str,
    report_id: &str,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(attempted_at) FROM delivery_attempts WHERE endpoint = $1 AND report_id = $2")
        .bind(endpoint)
        .bind(report_id)
        .fetch_one(pool)
        .await
}

/// Deletes at most `limit` attempts made before `cutoff`, the oldest first; returns how many.
pub async fn delete_attempts_before(pool: &PgPool, cutoff: OffsetDateTime, limit: i64) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM delivery_attempts WHERE id IN (
             SELECT id FROM delivery_attempts WHERE attempted_at < $1 ORDER BY attempted_at LIMIT $2
         )",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

/// Disables `endpoint` at `url` (a later disabling replaces an earlier one).
pub async fn disable_endpoint(
    pool: &PgPool,
    endpoint: &str,
    url: &str,
    status: u16,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO delivery_endpoints_disabled (endpoint, url, status, reason) VALUES ($1, $2, $3, $4)
         ON CONFLICT (endpoint) DO UPDATE
         SET url = excluded.url, status = excluded.status, reason = excluded.reason, disabled_at = now()",
    )
    .bind(endpoint)
    .bind(url)
    .bind(i16::try_from(status).unwrap_or(i16::MAX))
    .bind(reason)
    .execute(pool)
    .await
    .map(|_| ())
}

/// Enables `endpoint` again; `false` if it was not disabled.
pub async fn enable_endpoint(pool: &PgPool, endpoint: &str) -> Result<bool, sqlx::Error> {
    let deleted =
        sqlx::query("DELETE FROM delivery_endpoints_disabled WHERE endpoint = $1").bind(endpoint).execute(pool).await?;
    Ok(deleted.rows_affected() > 0)
}

/// Every disabled endpoint, by name.
pub async fn disabled_endpoints(pool: &PgPool) -> Result<Vec<DisabledEndpoint>, sqlx::Error> {
    let rows: Vec<(String, String, i16, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT endpoint, url, status, reason, disabled_at FROM delivery_endpoints_disabled ORDER BY endpoint",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(endpoint, url, status, reason, disabled_at)| DisabledEndpoint {
            endpoint,
            url,
            status: u16::try_from(status).unwrap_or_default(),
            reason,
            disabled_at,
        })
        .collect())
}
