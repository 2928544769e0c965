<?php
// A platform's receiver of attendance reports in plain PHP (no Composer), checking every request
// as the Standard Webhooks specification says, as worker deliver's tests run it:
//
//   ATTENDANCE_WEBHOOK_SECRET=whsec_... ATTENDANCE_REPORTS_DIR=/var/lib/reports \
//     php -S 0.0.0.0:8080 standard_webhooks_receiver.php
//
// With Composer, the reference library (`standard-webhooks/standard-webhooks`) makes the same
// check: `(new \StandardWebhooks\Webhook($secret))->verify($body, $headers)` (README).
//
// A verified report is stored once per `webhook-id` (a delivery may come again: at least once)
// as one JSON line of reports.jsonl in ATTENDANCE_REPORTS_DIR. A platform keeps, per room_sid,
// the report with the highest data.sequence: reports may arrive out of order.

declare(strict_types=1);

// The reference libraries' tolerance: a request signed more than 5 minutes away is refused.
const TOLERANCE_SECONDS = 300;

/** The report, when one of `webhook-signature`'s v1 signatures is the secret's; null otherwise. */
function verified_report(string $secret, string $body, array $headers, int $now): ?array
{
    $id = $headers['webhook-id'] ?? '';
    $timestamp = $headers['webhook-timestamp'] ?? '';
    $signatures = $headers['webhook-signature'] ?? '';
    if ($id === '' || !ctype_digit($timestamp) || abs($now - (int) $timestamp) > TOLERANCE_SECONDS) {
        return null;
    }
    $key = base64_decode(preg_replace('/^whsec_/', '', $secret), true);
    if ($key === false || $key === '') {
        throw new RuntimeException('ATTENDANCE_WEBHOOK_SECRET is not whsec_ followed by base64');
    }
    // Over the raw body bytes: a re-encoded JSON would not verify.
    $expected = base64_encode(hash_hmac('sha256', "{$id}.{$timestamp}.{$body}", $key, true));
    // Several signatures during a secret rotation, separated by spaces: one match is enough.
    foreach (explode(' ', $signatures) as $versioned) {
        [$version, $signature] = array_pad(explode(',', $versioned, 2), 2, '');
        if ($version === 'v1' && hash_equals($expected, $signature)) {
            $report = json_decode($body, true);
            return is_array($report) ? $report : null;
        }
    }
    return null;
}

function answer(int $status): void
{
    http_response_code($status);
}

if ($_SERVER['REQUEST_METHOD'] !== 'POST') {
    answer(405);
    return;
}
$body = file_get_contents('php://input');
$headers = array_change_key_case(getallheaders(), CASE_LOWER);
$report = verified_report((string) getenv('ATTENDANCE_WEBHOOK_SECRET'), $body, $headers, time());
if ($report === null) {
    answer(400);
    return;
}

$dir = getenv('ATTENDANCE_REPORTS_DIR') ?: __DIR__;
$id = $headers['webhook-id'];
// The id is ours once the signature verified; the check keeps it a plain file name all the same.
if (!preg_match('/^[A-Za-z0-9_-]{1,64}$/', $id)) {
    answer(400);
    return;
}
@mkdir("{$dir}/seen", 0700, true);
// 'x' creates the file or fails if it exists: a delivery that comes again is acknowledged only.
$first = @fopen("{$dir}/seen/{$id}", 'x');
if ($first === false) {
    answer(204);
    return;
}
fclose($first);
$line = json_encode([
    'id' => $id,
    'type' => $report['type'] ?? null,
    'room_sid' => $report['data']['room_sid'] ?? null,
    'sequence' => $report['data']['sequence'] ?? null,
    'data' => $report['data'] ?? null,
], JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES);
if (file_put_contents("{$dir}/reports.jsonl", $line . "\n", FILE_APPEND | LOCK_EX) === false) {
    // Not stored: forget the id, and a 5xx makes the sender try again.
    unlink("{$dir}/seen/{$id}");
    answer(503);
    return;
}
// Answer quickly: anything slower than the sender's timeout is retried.
answer(204);
