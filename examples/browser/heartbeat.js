// Attendance heartbeats from a participant's browser: plain JavaScript, no dependency.
//
// startAttendanceHeartbeats({ gateway, getToken, intervalMs, onResult }) sends
// `POST <gateway>/v1/heartbeats` with the participant's own LiveKit access token every
// `intervalMs` (30 s is right: the sweeper closes a cycle 3 intervals after the last heartbeat),
// and returns a function that stops it (call it when the participant leaves the meeting).
//
// getToken() returns a valid access token for the room: the one the client joined LiveKit with,
// or, when it expires, a fresh one from your backend. A heartbeat answered 401 with
// `token_expired` asks getToken() again and is sent again at once, so a short-lived join token
// does not end attendance. Tokens minted with the room's length plus a margin never need it.
//
// The gateway must allow the page's origin (CORS_ALLOWED_ORIGINS) unless it is served under the
// same origin. Answers: 202 stored, 429 too fast (the next beat is fine), 503 not stored now
// (the next beat retries); onResult(answer) sees each one ({status} or {error}).
function startAttendanceHeartbeats({ gateway, getToken, intervalMs = 30000, onResult = () => {} }) {
  let token = null;
  let stopped = false;
  let timer = null;
  const send = () =>
    fetch(gateway + "/v1/heartbeats", { method: "POST", headers: { Authorization: "Bearer " + token } });
  async function beat() {
    if (stopped) { return; }
    try {
      token = token || (await getToken());
      let response = await send();
      if (response.status === 401) {
        const body = await response.json().catch(() => ({}));
        if (body.error === "token_expired") {
          token = await getToken();
          response = await send();
        }
      }
      onResult({ status: response.status });
    } catch (error) {
      // Offline, or the origin is not allowed (the browser then hides the answer).
      onResult({ error: String(error) });
    }
    if (!stopped) { timer = setTimeout(beat, intervalMs); }
  }
  beat();
  return () => { stopped = true; clearTimeout(timer); };
}
