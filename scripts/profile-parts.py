#!/usr/bin/env python3
"""The samples of a `perf record --call-graph dwarf` profile of the gateway (or its ceiling), by
the part of a webhook's path they were spent in: each sample goes to the innermost frame of its
call chain that names a part (a malloc called by the JWT check counts as the check). What
`scripts/profile-gateway.sh` prints with CALL_GRAPH=dwarf; README, Benchmark, quotes it.

Usage: scripts/profile-parts.py PERF_DATA [CPU_MS_PER_1000]
With the process's CPU per 1 000 webhooks (the bench's capacity table), each part's share is also
given in those milliseconds.
"""
import collections
import re
import subprocess
import sys

# In order of precedence when one frame matches several.
PARTS = [
    ("verification (JWT, body hash)", r"shared::livekit::webhook::verify|shared::livekit::token::verify"),
    ("reading the event", r"parse_keeping_room|check_identifiers|from_slice<shared"),
    ("redaction and the rest of webhook::receive", r"shared::livekit::webhook::receive|without_turn_password"),
    ("the message's subject and headers", r"WebhookStream::message|StreamSettings::subject|HeaderMap::insert|inject_into_nats"),
    ("publish and ack (client side)", r"publish_acknowledged|send_publish|PublishAckFuture|ceiling::publish"),
    ("metrics", r"prometheus|GatewayMetrics"),
    ("body read and limits", r"read_body|reserve_body|http_body_util|limit_in_flight|RequestLimits"),
    ("the handler's own code", r"gateway::webhook"),
    ("the JSON answer", r"serde_json::ser|Json<|IntoResponse|ApiError"),
    ("tracing spans", r"tracing::|tracing_core|continue_from_http"),
    ("NATS connection task", r"async_nats::connection|ConnectionHandler|connect_with_options"),
    ("HTTP reading (hyper)", r"hyper::.*(poll_read|parse)"),
    ("HTTP writing (hyper)", r"hyper::.*(poll_flush|poll_write|encode)"),
    ("routing and layers (axum, tower)", r"axum::|tower"),
    ("runtime, sockets and timers (tokio, kernel)", r"tokio::"),
]
COMPILED = [(name, re.compile(pattern)) for name, pattern in PARTS]


def call_chains(perf_data):
    """Each sample's frames, outermost first, from `perf script`."""
    script = subprocess.run(["perf", "script", "-i", perf_data], capture_output=True, text=True, check=True).stdout
    frames = []
    for line in script.splitlines() + [""]:
        if not line.strip():
            if frames:
                yield list(reversed(frames))
            frames = []
        elif line[0] in " \t":
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                frames.append(parts[1].rsplit(" (", 1)[0])


def part_of(chain):
    for frame in reversed(chain):
        for name, pattern in COMPILED:
            if pattern.search(frame):
                return name
    return "other"


def main():
    perf_data = sys.argv[1]
    cpu_ms = float(sys.argv[2]) if len(sys.argv) > 2 else None
    counts = collections.Counter(part_of(chain) for chain in call_chains(perf_data))
    total = sum(counts.values()) or 1
    print(f"{total} samples")
    for name in [name for name, _ in PARTS] + ["other"]:
        share = counts[name] / total
        in_ms = f"  {share * cpu_ms:5.1f} ms per 1 000" if cpu_ms else ""
        print(f"{100 * share:5.1f} %{in_ms}  {name}")


if __name__ == "__main__":
    main()
