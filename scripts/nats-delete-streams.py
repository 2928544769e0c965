#!/usr/bin/env python3
"""Deletes the named JetStream streams on the first server of NATS_URL (nats://127.0.0.1:4222
unless set), over NATS's plain protocol, without a client library: what the measuring scripts
(profile-gateway.sh, compare-gateways.sh, connection-memory.py) made on the shared server is
removed when they end. For an unauthenticated local server; a missing stream is no error.

Usage: scripts/nats-delete-streams.py STREAM...
"""
import os
import socket
import sys

server = os.environ.get("NATS_URL", "nats://127.0.0.1:4222").split(",")[0].split("//", 1)[-1].rsplit("@", 1)[-1]
host, port = server.rsplit(":", 1) if ":" in server else (server, "4222")
with socket.create_connection((host, int(port)), timeout=5) as connection:
    connection.recv(4096)
    connection.sendall(b'CONNECT {"verbose":false}\r\n')
    for name in sys.argv[1:]:
        connection.sendall(f"PUB $JS.API.STREAM.DELETE.{name} 0\r\n\r\n".encode())
    # The server answers PING after it has handled everything sent before it.
    connection.sendall(b"PING\r\n")
    connection.recv(4096)
