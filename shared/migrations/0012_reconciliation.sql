-- Reconciliation with the LiveKit server (the sweeper, when LIVEKIT_URL is set).

-- One row per running meeting the reconciler watches: when it is next due for a check, when a
-- check last listed its room (the time the request was sent) and the sessions it listed. Deleted
-- once the meeting has ended.
CREATE TABLE meeting_checks (
    room_sid      text PRIMARY KEY REFERENCES meetings (room_sid),
    next_check_at timestamptz NOT NULL,
    listed_at     timestamptz,
    listed_sids   text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX meeting_checks_due ON meeting_checks (next_check_at);

-- The reconcilers' shared budget of calls to the LiveKit server (RECONCILE_MAX_RPS): a token
-- bucket, one row, refilled by the time since it was last drawn from.
CREATE TABLE reconcile_budget (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    tokens     double precision NOT NULL,
    drawn_at   timestamptz NOT NULL
);

-- Sessions the LiveKit server listed as active in a meeting where no event opened them: the
-- reconciler's estimate of a lost participant_joined. Input to the attendance rule like an event
-- (a real participant_joined or participant_left for the session takes precedence); personal
-- data, deleted by an erasure and with the meeting's events past the retention.
CREATE TABLE participant_listings (
    room_sid        text NOT NULL REFERENCES meetings (room_sid),
    identity        text NOT NULL,
    participant_sid text NOT NULL,
    room_name       text NOT NULL,
    name            text NOT NULL,
    metadata        text NOT NULL,
    kind            text NOT NULL,
    joined_at       timestamptz NOT NULL,
    listed_at       timestamptz NOT NULL,
    PRIMARY KEY (room_sid, identity, participant_sid)
);

-- A cycle LiveKit stopped listing is closed as `reconciled`.
ALTER TABLE cycle_closures DROP CONSTRAINT cycle_closures_closed_by_check;
ALTER TABLE cycle_closures ADD CONSTRAINT cycle_closures_closed_by_check
    CHECK (closed_by IN ('heartbeat_timeout', 'max_duration', 'reconciled'));
ALTER TABLE cycles DROP CONSTRAINT cycles_closed_by_check;
ALTER TABLE cycles ADD CONSTRAINT cycles_closed_by_check
    CHECK (closed_by IN ('participant_left', 'room_finished', 'heartbeat_timeout', 'max_duration', 'reconciled'));
