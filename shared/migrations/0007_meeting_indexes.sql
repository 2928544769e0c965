-- Per meeting, the event log is read by room sid (webhook_events_meeting, _meeting_span) and by
-- identity (erasure): the per-room-name indexes are no longer read, and every insert paid for
-- them.
DROP INDEX webhook_events_participant;
DROP INDEX webhook_events_room_finished;

-- The sweeper looks for running meetings every round: only those, not every meeting ever held.
CREATE INDEX meetings_running ON meetings (started_at) WHERE ended_at IS NULL;
