#!/usr/bin/env python3
"""What an open connection costs a release gateway in memory: its RSS before, then with N
connections (1 000) that each sent half a request head and wait (a slow client, until
HTTP_HEADER_TIMEOUT closes it). README, "Sizing the limits", quotes it.

Usage: scripts/connection-memory.py [target/release/gateway] [N]
Runs the gateway on this machine's NATS (NATS_URL) with streams of its own, deleted afterwards.
"""
import os
import random
import socket
import subprocess
import sys
import time

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/release/gateway"
CONNECTIONS = int(sys.argv[2]) if len(sys.argv) > 2 else 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


suffix = f"{random.getrandbits(32):08x}"
port = free_port()
streams = (f"MEMORY_{suffix}", f"MEMORY_{suffix}_HEARTBEATS")
env = dict(
    os.environ,
    LIVEKIT_KEYS=f"memory{suffix}: {os.urandom(24).hex()}",
    WEBHOOK_STREAM=streams[0],
    WEBHOOK_SUBJECT_PREFIX=f"memory{suffix}.webhook",
    HEARTBEAT_STREAM=streams[1],
    HEARTBEAT_SUBJECT_PREFIX=f"memory{suffix}.heartbeat",
    LISTEN_ADDR=f"127.0.0.1:{port}",
    METRICS_ADDR="127.0.0.1:0",
    RUST_LOG="warn",
)
gateway = subprocess.Popen([BINARY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
connections = []
try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            time.sleep(0.1)
    time.sleep(1)
    before = rss_kib(gateway.pid)
    for _ in range(CONNECTIONS):
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(b"POST /webhooks/livekit HTTP/1.1\r\nHost: gateway\r\nContent-Le")
        connections.append(connection)
    time.sleep(2)
    after = rss_kib(gateway.pid)
    print(
        f"RSS {before} KiB, then {after} KiB with {CONNECTIONS} connections that sent half a request head: "
        f"{(after - before) / CONNECTIONS:.1f} KiB each"
    )
finally:
    for connection in connections:
        connection.close()
    gateway.terminate()
    gateway.wait()
    subprocess.run([os.path.join(os.path.dirname(os.path.abspath(__file__)), "nats-delete-streams.py"), *streams], check=False)
