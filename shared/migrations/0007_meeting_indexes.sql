-- Per meeting, the event log is read by room sid (webhook_events_meeting, _meeting_span) and by
-- identity (erasure): the per-room-name indexes are no longer read, and every insert paid for
-- them.
DROP INDEX webhook_events_participant;
DROP INDEX webhook_events_room_finished;
