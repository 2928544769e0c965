"""LiveKit's official Python server SDK (`livekit-api`, PyPI) against a RoomService: what
`sweeper/tests/reconcile.rs` runs to prove the stand-in answers as livekit-server does.

Usage: room_service_sdk.py URL API_KEY API_SECRET ROOM

Prints one JSON object: the participants and rooms the SDK read (protobuf, as the SDK speaks
it), what it got for a missing room, the errors it raised for a wrong secret, and what a token
for another room and a token without the admin grant get; and whether the JSON answers (what
the sweeper reads) parse as LiveKit's own messages, equal to what the SDK decoded, with every
field named and encoded as protojson writes it with proto names.
"""

import asyncio
import json
import sys

import aiohttp
from google.protobuf import json_format
from livekit import api
from livekit.protocol import room as room_pb


def error_of(error):
    return {"code": error.code, "status": error.status, "message": error.message}


async def main(url, key, secret, room):
    out = {}
    async with api.LiveKitAPI(url, key, secret, failover=False) as lk:
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        out["participants"] = [json_format.MessageToDict(p) for p in listed.participants]
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room, "no-such-room"]))
        out["rooms"] = [json_format.MessageToDict(r) for r in rooms.rooms]
        missing = await lk.room.list_participants(api.ListParticipantsRequest(room="no-such-room"))
        out["missing_room_participants"] = len(missing.participants)
    async with api.LiveKitAPI(url, key, "a-wrong-secret-of-more-than-32-bytes!", failover=False) as lk:
        try:
            await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            out["wrong_secret"] = None
        except api.TwirpError as error:
            out["wrong_secret"] = error_of(error)

    def token(grants):
        return api.AccessToken(key, secret).with_identity("someone").with_grants(grants).to_jwt()

    endpoint = f"{url}/twirp/livekit.RoomService/ListParticipants"
    async with aiohttp.ClientSession() as session:
        other_room = token(api.VideoGrants(room_admin=True, room="another-room"))
        async with session.post(endpoint, json={"room": room}, headers={"Authorization": f"Bearer {other_room}"}) as r:
            out["other_room"] = {"status": r.status, "body": await r.json(content_type=None),
                                 "content_type": r.headers.get("Content-Type")}
        join_only = token(api.VideoGrants(room_join=True, room=room))
        async with session.post(endpoint, json={"room": room}, headers={"Authorization": f"Bearer {join_only}"}) as r:
            out["join_grant"] = {"status": r.status, "body": await r.json(content_type=None)}
        admin = token(api.VideoGrants(room_admin=True, room=room))
        async with session.post(endpoint, json={"room": room}, headers={"Authorization": f"Bearer {admin}"}) as r:
            text = await r.text()
            out["json_content_type"] = r.headers.get("Content-Type")
        lister = token(api.VideoGrants(room_list=True))
        rooms_endpoint = f"{url}/twirp/livekit.RoomService/ListRooms"
        async with session.post(rooms_endpoint, json={"names": [room]}, headers={"Authorization": f"Bearer {lister}"}) as r:
            rooms_text = await r.text()

    def as_livekit_writes_it(text, message, key):
        # Every field the JSON holds is a field of LiveKit's message, named and encoded as
        # protojson writes it with proto names and zero values (what livekit-server's Twirp does).
        full = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
        written = json.loads(text)[key]
        return len(written) == len(full.get(key, [])) and all(
            field in expected and expected[field] == value
            for item, expected in zip(written, full.get(key, []))
            for field, value in item.items())

    parsed = json_format.Parse(text, room_pb.ListParticipantsResponse())
    out["json_equals_protobuf"] = parsed == listed
    out["json_as_livekit_writes_it"] = as_livekit_writes_it(text, parsed, "participants")
    parsed_rooms = json_format.Parse(rooms_text, room_pb.ListRoomsResponse())
    out["rooms_json_equals_protobuf"] = [r.sid for r in parsed_rooms.rooms] == [r.sid for r in rooms.rooms]
    out["rooms_json_as_livekit_writes_it"] = as_livekit_writes_it(rooms_text, parsed_rooms, "rooms")
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
