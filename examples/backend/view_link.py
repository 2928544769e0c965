"""A platform's backend, in Python with LiveKit's official server SDK (`pip install livekit-api`):
mint a token that reads a room's attendance, and ask the gateway for a view link to hand to a
teacher. `make test` runs this file against a gateway (gateway/tests/examples.rs).

Environment: LIVEKIT_API_KEY, LIVEKIT_API_SECRET (a pair the gateway knows), GATEWAY_URL
(https://attendance.example.org), ROOM. Prints {"read_token", "view_link"} as JSON.
"""

import json
import os
import urllib.parse
import urllib.request
from datetime import timedelta

from livekit import api


def read_token(room: str) -> str:
    """A short-lived token with roomAdmin for the room: it reads the room's attendance (and may
    make view links). Keep it on the backend: livekit-server also accepts it to moderate."""
    return (
        api.AccessToken(os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"])
        .with_grants(api.VideoGrants(room=room, room_admin=True))
        .with_ttl(timedelta(minutes=10))
        .to_jwt()
    )


def view_link(gateway: str, room: str, ttl: str = "7d") -> dict:
    """A read-only link to the live page, safe to hand out: its token grants nothing in LiveKit."""
    url = f"{gateway}/v1/rooms/{urllib.parse.quote(room, safe='')}/view-links?ttl={ttl}"
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {read_token(room)}"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


if __name__ == "__main__":
    room = os.environ["ROOM"]
    print(json.dumps({"read_token": read_token(room), "view_link": view_link(os.environ["GATEWAY_URL"], room, "1h")}))
