-- Ends the sweeper inferred for meetings whose room_finished never came (LiveKit keeps no webhook
-- on disk). Input to the meeting's span like an event: a late room_finished replaces it, and a
-- later join or leave withdraws it.
CREATE TABLE meeting_end_estimates (
    room_sid   text PRIMARY KEY REFERENCES meetings (room_sid),
    ended_at   timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- LiveKit's idle timeouts of the room, from its room_started (null: LiveKit's defaults).
ALTER TABLE meetings ADD COLUMN empty_timeout_s integer;
ALTER TABLE meetings ADD COLUMN departure_timeout_s integer;
