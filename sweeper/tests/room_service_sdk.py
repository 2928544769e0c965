"""LiveKit's official Python server SDK (`livekit-api`, PyPI) against a RoomService: what
`sweeper/tests/reconcile.rs` runs to prove the stand-in answers as livekit-server does.

Usage: room_service_sdk.py URL API_KEY API_SECRET ROOM

Prints one JSON object: the participants and rooms the SDK read (protobuf, as the SDK speaks
it), the errors it raised for a missing room, a wrong secret and a token for another room, and
whether the JSON answer (what the sweeper reads) is LiveKit's own protojson of the same message.
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
        try:
            await lk.room.list_participants(api.ListParticipantsRequest(room="no-such-room"))
            out["missing_room"] = None
        except api.TwirpError as error:
            out["missing_room"] = error_of(error)
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
        parsed = json_format.Parse(text, room_pb.ListParticipantsResponse())
        out["json_equals_protobuf"] = parsed == listed
        out["json_is_canonical_protojson"] = json.loads(text) == json_format.MessageToDict(parsed)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
