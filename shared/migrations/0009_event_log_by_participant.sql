-- The event log's uniqueness moves from the event id alone to the event id within its
-- participant of its meeting. LiveKit's event ids are random: under the old key every new event
-- went to a page of its own in an index as large as the whole log, so the pages an insert
-- dirtied (and wrote to the WAL in full after each checkpoint) grew with the history. Under the
-- new key a meeting's events go beside each other, where its running participants' already are,
-- and the same index serves the per-participant reads (the old (room_sid, identity) index goes).
-- A redelivered event has the same room sid and identity as the first delivery, so it is still
-- stored once; events without a participant (room_started, room_finished, room-less events) keep
-- a unique index on the id alone, which stays small. Inserts name no conflict target: a conflict
-- on either index leaves the stored event as it is.
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_pkey;
CREATE UNIQUE INDEX webhook_events_by_participant ON webhook_events (room_sid, identity, event_id);
CREATE UNIQUE INDEX webhook_events_without_participant ON webhook_events (event_id)
    WHERE room_sid IS NULL OR identity IS NULL;
DROP INDEX webhook_events_meeting;
