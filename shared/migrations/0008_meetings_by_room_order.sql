-- A room name's meetings are read newest first, ties broken by room sid (the meeting running at
-- a heartbeat's time, the room's list of meetings). With the room sid in the index, that read
-- stops at the first match instead of sorting every meeting the room name ever had.
CREATE INDEX meetings_by_room_newest ON meetings (room_name, started_at DESC, room_sid DESC);
DROP INDEX meetings_by_room;
