//! `worker recompute`: rebuilds attendance from the event log, for one room or all of them.
//! Safe while workers run: each room is recomputed under its lock, like any event.

use shared::storage;
use sqlx::PgPool;

/// Recomputes every participant of `room` (or of every room); returns how many were recomputed.
pub async fn recompute(pool: &PgPool, room: Option<&str>) -> Result<usize, sqlx::Error> {
    let rooms: Vec<String> = match room {
        Some(room) => vec![room.to_owned()],
        None => {
            sqlx::query_scalar(
                "SELECT DISTINCT room_name FROM webhook_events WHERE room_name IS NOT NULL ORDER BY room_name",
            )
            .fetch_all(pool)
            .await?
        }
    };
    let mut participants = 0;
    for room in rooms {
        let this_room = [room.clone()].into();
        storage::create_rooms(pool, &this_room).await?;
        let mut tx = pool.begin().await?;
        storage::lock_free_rooms(&mut tx, &this_room, &Default::default()).await?;
        let identities = storage::identities_in_room(&mut tx, &room).await?;
        participants += identities.len();
        let cause = storage::Cause::named("recompute");
        let of_room = identities.into_iter().map(|identity| ((room.clone(), identity), cause.clone())).collect();
        storage::recompute_participants(&mut tx, &of_room).await?;
        tx.commit().await?;
        tracing::info!(room, "room recomputed");
    }
    Ok(participants)
}
