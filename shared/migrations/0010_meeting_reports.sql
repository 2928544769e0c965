-- Meeting reports for the platform (Standard Webhooks events `meeting.started`, `.ended`,
-- `.updated`): written in the transaction of the change that causes them, published to
-- JetStream by the outbox publisher, then deleted.
CREATE TABLE report_outbox (
    id          bigserial PRIMARY KEY,
    -- `msg_…`, from the meeting and the sequence: the same report always has the same id.
    report_id   text NOT NULL UNIQUE,
    room_sid    text NOT NULL,
    sequence    bigint NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('started', 'ended', 'updated')),
    -- The Standard Webhooks body, exactly as delivered.
    body        text NOT NULL,
    traceparent text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- What the platform was told of each meeting: how many reports, whether its start, and the
-- digest of the attendance last reported after its end (null: no end reported).
CREATE TABLE meeting_reports (
    room_sid         text PRIMARY KEY REFERENCES meetings ON DELETE CASCADE,
    sequence         bigint NOT NULL,
    reported_started boolean NOT NULL,
    reported_digest  text
);

-- Meetings that existed before reports are not announced now: only a later change of theirs is.
INSERT INTO meeting_reports (room_sid, sequence, reported_started, reported_digest)
SELECT room_sid, 0, started_at IS NOT NULL, CASE WHEN ended_at IS NOT NULL THEN 'before-reports' END
FROM meetings;
