-- The last heartbeat each participant's client sent (kept apart from the cycles, which are
-- rebuilt by every recompute).
CREATE TABLE participant_heartbeats (
    room_name         text NOT NULL,
    identity          text NOT NULL,
    last_heartbeat_at timestamptz NOT NULL,
    PRIMARY KEY (room_name, identity)
);

-- The sweeper's estimated ends of cycles. They are input to the attendance rule like events, so
-- a recompute keeps them; a participant_left for the cycle takes precedence, and a heartbeat
-- newer than a heartbeat_timeout closure removes it.
CREATE TABLE cycle_closures (
    room_name       text NOT NULL,
    identity        text NOT NULL,
    participant_sid text NOT NULL,
    closed_by       text NOT NULL CHECK (closed_by IN ('heartbeat_timeout', 'max_duration')),
    closed_at       timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_name, identity, participant_sid, closed_by)
);
