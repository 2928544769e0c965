#!/usr/bin/env python3
"""A platform's receiver of attendance reports, verifying every request with the official
Standard Webhooks library (PyPI `standardwebhooks`), as `worker deliver`'s tests run it.

    standard_webhooks_receiver.py --port 8080 --record requests.jsonl \
        --secret whsec_... [--secret whsec_...] [--cert server.crt --key server.key]

Every POST is verified with each `--secret` on its own (so a test sees that a request signed
during a rotation verifies with the old secret and with the new one), and a copy of it with one
byte of the body changed is verified too (it must fail). One JSON line per request is appended to
the record file when the request arrives, before any answer: its path, `webhook-id`,
`webhook-timestamp`, signatures, the body as received, its type and `data.sequence`, which
secrets verified it, whether the tampered copy was rejected, the answer it gets and when it
arrived (Unix seconds).

A request verified by none of the secrets is answered 400. Otherwise the answer follows the plan
of its path, which a test sets with `POST /control` and a JSON body
`{"path": "/hooks", "answers": [{"status": 500}, {"status": 503, "retry_after": "1"},
{"status": 200, "sleep": 3}], "then": {"status": 200}}`: the listed answers in turn, then
`then` for every later request (200 when no plan was set). A receiver that is down is this
process stopped.
"""

import argparse
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True, help="JSON lines, one per request")
    parser.add_argument("--secret", action="append", required=True, help="whsec_…; repeat for several")
    parser.add_argument("--cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--key", help="and this private key (PEM)")
    args = parser.parse_args()

    verifiers = [Webhook(secret) for secret in args.secret]
    plans = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/control":
                plan = json.loads(body)
                with lock:
                    plans[plan["path"]] = {"answers": list(plan.get("answers", [])), "then": plan.get("then", {"status": 200})}
                self.answer(204, None)
                return
            arrived_at = time.time()
            headers = dict(self.headers.items())
            verified = [verifies(verifier, body, headers) for verifier in verifiers]
            tampered = body.replace(b"meeting", b"Meeting", 1) if b"meeting" in body else body + b" "
            tampered_rejected = not any(verifies(verifier, tampered, headers) for verifier in verifiers)
            with lock:
                plan = plans.setdefault(self.path, {"answers": [], "then": {"status": 200}})
                answer = plan["answers"].pop(0) if plan["answers"] else plan["then"]
            if not any(verified):
                answer = {"status": 400}
            try:
                payload = json.loads(body)
            except ValueError:
                payload = {}
            data = payload.get("data") if isinstance(payload, dict) else None
            record = {
                "path": self.path,
                "id": self.headers.get("webhook-id"),
                "timestamp": self.headers.get("webhook-timestamp"),
                "signature": self.headers.get("webhook-signature"),
                "content_type": self.headers.get("Content-Type"),
                "body": body.decode("utf-8", "replace"),
                "type": payload.get("type") if isinstance(payload, dict) else None,
                "sequence": data.get("sequence") if isinstance(data, dict) else None,
                "verified": verified,
                "tampered_rejected": tampered_rejected,
                "answered": answer.get("status", 200),
                "arrived_at": arrived_at,
            }
            with lock, open(args.record, "a", encoding="utf-8") as file:
                file.write(json.dumps(record) + "\n")
            time.sleep(answer.get("sleep", 0))
            self.answer(answer.get("status", 200), answer.get("retry_after"))

        def answer(self, status, retry_after):
            try:
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", str(retry_after))
                self.send_header("Content-Length", "0")
                self.end_headers()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender gave up waiting

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def verifies(verifier, body, headers):
    try:
        verifier.verify(body, headers)
        return True
    except (WebhookVerificationError, ValueError):  # a malformed signature header: not verified
        return False


if __name__ == "__main__":
    main()
