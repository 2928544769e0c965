-- The data lifecycle. Retention: the events of a meeting that ended long ago are deleted; its
-- derived attendance stays, sealed (never recomputed again). Erasure: a person's data is
-- deleted on request, and the erasure recorded, without personal data, so that a later replay of
-- their old events does not bring them back.
ALTER TABLE meetings ADD COLUMN sealed_at timestamptz;
-- Every event of the sealed meeting has been deleted.
ALTER TABLE meetings ADD COLUMN purged boolean NOT NULL DEFAULT false;
CREATE INDEX meetings_ended ON meetings (ended_at) WHERE NOT purged;

CREATE TABLE erasures (
    id              bigserial PRIMARY KEY,
    -- SHA-256 of the identity, hex: enough to refuse its events, not to read it back.
    identity_sha256 text NOT NULL,
    -- Only this room name's data was erased; null: every room.
    room_name       text,
    erased_by       text NOT NULL,
    erased_at       timestamptz NOT NULL DEFAULT now(),
    -- How many rows of each table were deleted.
    counts          jsonb NOT NULL
);
CREATE INDEX erasures_identity ON erasures (identity_sha256);

CREATE INDEX webhook_events_identity ON webhook_events (identity);
