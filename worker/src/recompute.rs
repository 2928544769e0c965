//! `worker recompute`: rebuilds attendance from the event log, for one room or all of them.
//! Safe while workers run: each room is recomputed under its lock, like any event.

use shared::store::event_log;
use shared::store::presence_outbox::Cause;
use shared::store::{recompute, rooms};
use sqlx::PgPool;

/// Recomputes every participant of `room` (or of every room); returns how many were recomputed.
pub async fn recompute(pool: &PgPool, room: Option<&str>) -> Result<usize, sqlx::Error> {
    let room_names = match room {
        Some(room) => vec![room.to_owned()],
        None => event_log::room_names(pool).await?,
    };
    let mut participants = 0;
    for room in room_names {
        let this_room = [room.clone()].into();
        rooms::create_rooms(pool, &this_room).await?;
        let mut tx = pool.begin().await?;
        rooms::lock_rooms(&mut tx, &this_room, &Default::default()).await?;
        let identities = event_log::identities_in_room(&mut tx, &room).await?;
        participants += identities.len();
        let cause = Cause::named("recompute");
        let of_room = identities.into_iter().map(|identity| ((room.clone(), identity), cause.clone())).collect();
        recompute::recompute_participants(&mut tx, &of_room).await?;
        tx.commit().await?;
        tracing::info!(room, "room recomputed");
    }
    Ok(participants)
}
