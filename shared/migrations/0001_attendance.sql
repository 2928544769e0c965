-- Every event the workers received, interpreted or not, keyed by LiveKit's event id, so that
-- attendance can always be recomputed from it.
CREATE TABLE webhook_events (
    event_id        text PRIMARY KEY,
    event_type      text NOT NULL,
    created_at      timestamptz,
    received_at     timestamptz,
    room_name       text,
    room_sid        text,
    identity        text,
    participant_sid text,
    stream_sequence bigint,
    payload         jsonb NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_participant ON webhook_events (room_name, identity);
CREATE INDEX webhook_events_room_finished ON webhook_events (room_name, room_sid) WHERE event_type = 'room_finished';

-- One row per room name. Locking it serializes the changes to that room's attendance across
-- worker replicas (rooms are locked in name order, so batches cannot deadlock each other).
CREATE TABLE rooms (
    name       text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A participant's attendance in a room: always the attendance rule applied to the event log.
CREATE TABLE participants (
    room_name       text NOT NULL REFERENCES rooms (name),
    identity        text NOT NULL,
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
    PRIMARY KEY (room_name, identity)
);

-- One connection session (participant sid) of a participant.
CREATE TABLE cycles (
    room_name       text NOT NULL,
    identity        text NOT NULL,
    participant_sid text NOT NULL,
    room_sid        text NOT NULL,
    joined_at       timestamptz NOT NULL,
    left_at         timestamptz,
    closed_by       text CHECK (closed_by IN ('participant_left', 'room_finished', 'heartbeat_timeout', 'max_duration')),
    PRIMARY KEY (room_name, identity, participant_sid),
    FOREIGN KEY (room_name, identity) REFERENCES participants (room_name, identity) ON DELETE CASCADE
);
CREATE INDEX cycles_open ON cycles (room_name, room_sid) WHERE left_at IS NULL;

-- Presence flips, written in the transaction that caused them; the sweeper publishes them.
CREATE TABLE presence_outbox (
    id         bigserial PRIMARY KEY,
    room_name  text NOT NULL,
    identity   text NOT NULL,
    present    boolean NOT NULL,
    changed_at timestamptz NOT NULL,
    event_id   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
