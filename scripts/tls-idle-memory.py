#!/usr/bin/env python3
"""Opens N TLS connections to HOST:PORT, one exchange on each (so the
session is established and has carried a reply), then holds them all and
prints one JSON line: how many are open. Loopback only; stops by itself
after --hold seconds or when stdin closes."""
import argparse, json, select, socket, ssl, sys, time

p = argparse.ArgumentParser()
p.add_argument("host")
p.add_argument("port", type=int)
p.add_argument("--conns", type=int, default=10000)
p.add_argument("--hold", type=float, default=600)
p.add_argument("--sources", type=int, default=40, help="spread over 127.0.0.2..")
a = p.parse_args()
assert a.host.startswith("127."), "loopback only"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
held = []
for i in range(a.conns):
    raw = socket.create_connection((a.host, a.port), source_address=(f"127.0.0.{2 + i % a.sources}", 0))
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"hello\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = s.recv(256)
        if not chunk:
            sys.exit(f"connection {i} closed")
        reply += chunk
    held.append(s)
print(json.dumps({"open": len(held)}), flush=True)
select.select([sys.stdin], [], [], a.hold)
