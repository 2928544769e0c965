//! The `rooms` table: one row per room name, whose row lock serializes every change to the
//! room's attendance (workers, sweepers, recompute). [`lock_rooms`] is the one way to take it.
//!
//! Invariant: a transaction waits for rooms only in name order, and only before it skips any, so
//! no cycle of waits (deadlock) can form between replicas.

use std::collections::BTreeSet;

use sqlx::PgConnection;

/// Creates the rows of rooms not seen before, in a statement of its own (not inside the
/// caller's transaction), so that locking them later never waits on another transaction's
/// uncommitted insert of the same room.
pub async fn create_rooms(pool: &sqlx::PgPool, names: &BTreeSet<String>) -> Result<(), sqlx::Error> {
    if names.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    sqlx::query("INSERT INTO rooms (name) SELECT unnest($1::text[]) ORDER BY 1 ON CONFLICT (name) DO NOTHING")
        .bind(&names)
        .execute(pool)
        .await?;
    Ok(())
}

/// Locks the rooms of `wait_for`, waiting for them in name order, then those of `if_free` that
/// no other transaction holds, without waiting. Returns every room locked. The rows must exist
/// ([`create_rooms`]). A transaction only ever waits before it skips, and waits in name order,
/// so no cycle of waits can form.
pub async fn lock_rooms(
    conn: &mut PgConnection,
    wait_for: &BTreeSet<String>,
    if_free: &BTreeSet<String>,
) -> Result<BTreeSet<String>, sqlx::Error> {
    let mut locked = BTreeSet::new();
    if !wait_for.is_empty() {
        let names: Vec<&str> = wait_for.iter().map(String::as_str).collect();
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT name FROM rooms WHERE name = ANY($1) ORDER BY name FOR UPDATE")
                .bind(&names)
                .fetch_all(&mut *conn)
                .await?;
        locked.extend(rows);
    }
    let names: Vec<&str> = if_free.difference(wait_for).map(String::as_str).collect();
    if !names.is_empty() {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT name FROM rooms WHERE name = ANY($1) ORDER BY name FOR UPDATE SKIP LOCKED")
                .bind(&names)
                .fetch_all(&mut *conn)
                .await?;
        locked.extend(rows);
    }
    Ok(locked)
}

/// Every room with a row.
pub async fn room_names(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM rooms ORDER BY name").fetch_all(&mut *conn).await
}
