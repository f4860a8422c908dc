#!/usr/bin/env python3
"""Holds N idle keep-alive HTTP/1.1 connections to a server and reports its RSS.

Each connection sends one keep-alive GET and reads the whole answer, then idles. With all of
them open, the RSS (VmRSS from /proc) of the given PIDs is read; then every connection is
closed. Bounded: every socket operation has a timeout and the whole run a deadline.

    hold_conns.py --port P --path /rest/... --n 1000 --pid PID [--pid PID...] [--metrics URL]

Prints one JSON object: rss_before_kb, rss_held_kb, rss_after_close_kb, held, and (with
--metrics) the server's own b24proxy_open_connections gauge while they were held.
"""

import argparse
import json
import re
import resource
import socket
import sys
import time
import urllib.request


def rss_kb(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def read_answer(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the answer's head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if not m:
        raise ConnectionError("answer without content-length")
    need = int(m.group(1))
    while len(body) < need:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))


def gauge(url, name):
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--pid", type=int, action="append", required=True)
    ap.add_argument("--metrics")
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--deadline", type=float, default=60.0)
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    start = time.monotonic()
    out = {"rss_before_kb": rss_kb(a.pid)}
    req = (
        f"GET {a.path} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n"
        "User-Agent: bench-hold/1\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    socks = []
    try:
        for _ in range(a.n):
            if time.monotonic() - start > a.deadline:
                raise TimeoutError("deadline passed while opening connections")
            s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
            socks.append(s)
            s.sendall(req)
            read_answer(s)
        time.sleep(a.settle)
        out["held"] = len(socks)
        out["rss_held_kb"] = rss_kb(a.pid)
        if a.metrics:
            out["open_connections_gauge"] = gauge(a.metrics, "b24proxy_open_connections")
        # Still open? A server that dropped idle connections would show here.
        alive = 0
        for s in socks:
            s.setblocking(False)
            try:
                alive += 0 if s.recv(1) == b"" else 1
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        out["still_open"] = alive
    finally:
        for s in socks:
            s.close()
    time.sleep(a.settle)
    out["rss_after_close_kb"] = rss_kb(a.pid)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
