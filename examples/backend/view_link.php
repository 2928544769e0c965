<?php
// A platform's backend in PHP with its standard library only (a Laravel app can call these as
// they are): mint a token that reads a room's attendance (HS256, as LiveKit's SDKs sign), and
// ask the gateway for a view link to hand to a teacher. `make test` runs this file against a
// gateway (gateway/tests/examples.rs).
//
// Environment: LIVEKIT_API_KEY, LIVEKIT_API_SECRET (a pair the gateway knows), GATEWAY_URL
// (https://attendance.example.org), ROOM. Prints {"read_token", "view_link"} as JSON.

function base64url(string $bytes): string
{
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

// A LiveKit access token: roomAdmin for the room, valid 10 minutes. Keep it on the backend:
// livekit-server also accepts it to moderate the room.
function read_token(string $apiKey, string $secret, string $room): string
{
    $now = time();
    $header = base64url(json_encode(['alg' => 'HS256', 'typ' => 'JWT']));
    $claims = base64url(json_encode([
        'iss' => $apiKey,
        'nbf' => $now,
        'exp' => $now + 600,
        'video' => ['room' => $room, 'roomAdmin' => true],
    ]));
    $signature = base64url(hash_hmac('sha256', "$header.$claims", $secret, true));
    return "$header.$claims.$signature";
}

// A read-only link to the live page, safe to hand out: its token grants nothing in LiveKit.
function view_link(string $gateway, string $token, string $room, string $ttl = '7d'): array
{
    $url = $gateway . '/v1/rooms/' . rawurlencode($room) . '/view-links?ttl=' . rawurlencode($ttl);
    $context = stream_context_create(['http' => [
        'method' => 'POST',
        'header' => "Authorization: Bearer $token\r\n",
        'ignore_errors' => true,
    ]]);
    $body = file_get_contents($url, false, $context);
    $status = (int) explode(' ', $http_response_header[0])[1];
    if ($status !== 201) {
        throw new RuntimeException("view link: HTTP $status: $body");
    }
    return json_decode($body, true);
}

$room = getenv('ROOM');
$token = read_token(getenv('LIVEKIT_API_KEY'), getenv('LIVEKIT_API_SECRET'), $room);
echo json_encode(['read_token' => $token, 'view_link' => view_link(getenv('GATEWAY_URL'), $token, $room, '1h')]), "\n";
