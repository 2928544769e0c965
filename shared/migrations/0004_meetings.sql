-- Meetings: attendance per LiveKit room session (room sid) instead of per room name for all
-- time. The event log is unchanged and holds every room sid; the derived tables are rebuilt from
-- it: every meeting is created here with `needs_recompute`, and workers recompute those at
-- start-up (or `worker recompute`).

-- One row per meeting. Locking it serializes the changes to that meeting's attendance across
-- worker replicas and sweepers (in room-sid order, so they cannot deadlock each other).
CREATE TABLE meetings (
    room_sid        text PRIMARY KEY,
    room_name       text NOT NULL,
    started_at      timestamptz,
    ended_at        timestamptz,
    ended_by        text CHECK (ended_by IN ('room_finished', 'inferred')),
    -- The derived attendance must be rebuilt from the log (after a migration).
    needs_recompute boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX meetings_by_room ON meetings (room_name, started_at DESC);
CREATE INDEX meetings_to_recompute ON meetings (room_sid) WHERE needs_recompute;

INSERT INTO meetings (room_sid, room_name, needs_recompute)
SELECT room_sid, min(room_name), true FROM webhook_events
WHERE room_sid IS NOT NULL AND room_name IS NOT NULL
GROUP BY room_sid;

CREATE INDEX webhook_events_meeting ON webhook_events (room_sid, identity);
CREATE INDEX webhook_events_meeting_span ON webhook_events (room_sid)
    WHERE event_type IN ('room_started', 'room_finished');

-- A participant's attendance in a meeting: always the attendance rule applied to the meeting's
-- events in the log.
CREATE TABLE meeting_participants (
    room_sid        text NOT NULL REFERENCES meetings (room_sid),
    identity        text NOT NULL,
    room_name       text NOT NULL,
    name            text NOT NULL DEFAULT '',
    metadata        text NOT NULL DEFAULT '',
    kind            text NOT NULL DEFAULT 'STANDARD',
    is_bot          boolean GENERATED ALWAYS AS (kind IN ('AGENT', 'EGRESS', 'INGRESS')) STORED,
    present         boolean NOT NULL,
    attended_ms     bigint NOT NULL,
    join_count      integer NOT NULL,
    leave_count     integer NOT NULL,
    first_joined_at timestamptz,
    last_left_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_sid, identity)
);
CREATE INDEX meeting_participants_by_room ON meeting_participants (room_name, identity);

-- One connection session (participant sid) of a participant in a meeting.
DROP TABLE cycles;
CREATE TABLE cycles (
    room_sid        text NOT NULL,
    identity        text NOT NULL,
    participant_sid text NOT NULL,
    joined_at       timestamptz NOT NULL,
    left_at         timestamptz,
    closed_by       text CHECK (closed_by IN ('participant_left', 'room_finished', 'heartbeat_timeout', 'max_duration')),
    PRIMARY KEY (room_sid, identity, participant_sid),
    FOREIGN KEY (room_sid, identity) REFERENCES meeting_participants (room_sid, identity) ON DELETE CASCADE
);
CREATE INDEX cycles_open ON cycles (room_sid) WHERE left_at IS NULL;

-- Heartbeats count for one meeting: the identity's current meeting in the room.
CREATE TABLE meeting_heartbeats (
    room_sid          text NOT NULL,
    identity          text NOT NULL,
    last_heartbeat_at timestamptz NOT NULL,
    PRIMARY KEY (room_sid, identity)
);
-- An old heartbeat belonged to the identity's latest meeting in the room.
INSERT INTO meeting_heartbeats (room_sid, identity, last_heartbeat_at)
SELECT latest.room_sid, h.identity, h.last_heartbeat_at
FROM participant_heartbeats h
CROSS JOIN LATERAL (
    SELECT e.room_sid FROM webhook_events e
    WHERE e.room_name = h.room_name AND e.identity = h.identity AND e.room_sid IS NOT NULL
    ORDER BY e.created_at DESC NULLS LAST, e.event_id DESC LIMIT 1
) latest;
DROP TABLE participant_heartbeats;

-- The sweeper's estimates belong to a meeting too: the one of their participant sid.
ALTER TABLE cycle_closures ADD COLUMN room_sid text;
UPDATE cycle_closures c SET room_sid = (
    SELECT e.room_sid FROM webhook_events e
    WHERE e.participant_sid = c.participant_sid AND e.room_sid IS NOT NULL LIMIT 1
);
DELETE FROM cycle_closures WHERE room_sid IS NULL;
ALTER TABLE cycle_closures ALTER COLUMN room_sid SET NOT NULL;
ALTER TABLE cycle_closures DROP CONSTRAINT cycle_closures_pkey;
ALTER TABLE cycle_closures DROP COLUMN room_name;
ALTER TABLE cycle_closures ADD PRIMARY KEY (room_sid, identity, participant_sid, closed_by);

-- The meeting of a presence change (changes written before this migration have none).
ALTER TABLE presence_outbox ADD COLUMN room_sid text;

-- Attendance per room name is now the sum of its meetings, computed when read.
DROP TABLE participants;
DROP TABLE rooms;
