#!/usr/bin/env python3
"""Resident memory of a running lakeward across malformed wire input.

Sends ROUNDS x 30 malformed or hostile wire exchanges (300 by default), each
on a fresh connection, to a lakeward server and prints its resident memory
(VmRSS) after every round, and at the end its peak (VmHWM). A server whose
memory is bounded levels off after the first rounds; one that keeps growing
has a leak or keeps freed buffers.

    bench/malformed-rss.py --port 6432 --pid PID --token JWT [--rounds 10]

The token is any valid token (the analyst's): half the cases send their
garbage after a successful login. Only the Python standard library.
"""

import argparse
import os
import random
import socket
import ssl
import struct
import time


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def msg(kind, body):
    return kind + struct.pack("!I", len(body) + 4) + body


def startup(user, options=None):
    params = b"user\0" + user.encode() + b"\0database\0lakeward\0"
    if options:
        params += b"options\0" + options.encode() + b"\0"
    body = struct.pack("!I", 196608) + params + b"\0"
    return struct.pack("!I", len(body) + 4) + body


class Conn:
    def __init__(self, port, tls=True):
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s = self.raw
        if tls:
            self.raw.sendall(struct.pack("!II", 8, 80877103))
            if self.raw.recv(1) == b"S":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                self.s = ctx.wrap_socket(self.raw)

    def send(self, data):
        try:
            self.s.sendall(data)
        except OSError:
            pass

    def drain(self, wait=0.05):
        self.s.settimeout(wait)
        try:
            while self.s.recv(65536):
                pass
        except (OSError, ssl.SSLError):
            pass

    def login(self, user, token, purpose="operations"):
        self.send(startup(user, f"-c lakeward.purpose={purpose}"))
        self.s.settimeout(5)
        buf = b""
        while b"R\x00\x00\x00\x08\x00\x00\x00\x03" not in buf:
            chunk = self.s.recv(4096)
            if not chunk:
                return False
            buf += chunk
        self.send(msg(b"p", token.encode() + b"\0"))
        buf = b""
        while not buf.endswith(b"Z\x00\x00\x00\x05I"):
            chunk = self.s.recv(65536)
            if not chunk:
                return False
            buf += chunk
        return True

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def cases(rng):
    """30 cases: (needs_login, bytes to send)."""
    big = 4 * 1024 * 1024 - 64
    out = []
    # Before login.
    out.append((False, bytes(rng.getrandbits(8) for _ in range(64))))
    out.append((False, struct.pack("!I", 0x7FFFFFFF) + b"\0" * 16))
    out.append((False, struct.pack("!II", 8, 1234)))
    out.append((False, struct.pack("!I", 9) + struct.pack("!I", 196608) + b"u"))
    out.append((False, startup("x" * 5000)))
    out.append((False, struct.pack("!I", 200000) + struct.pack("!I", 196608) + b"user\0" * 1000))
    out.append((False, startup("analyst") + msg(b"p", b"not-a-token\0")))
    out.append((False, startup("analyst") + msg(b"p", b"e" * 60000 + b"\0")))
    out.append((False, startup("analyst") + b"p" + struct.pack("!I", big)))
    out.append((False, startup("analyst") + msg(b"Q", b"SELECT 1\0")))
    # After login: messages the server must refuse or survive.
    out.append((True, b"Q" + struct.pack("!I", big) + b"SELECT " + b"1," * 1000))
    out.append((True, msg(b"Q", b"SELECT " + b"(" * 5000 + b"1" + b")" * 5000 + b"\0")))
    out.append((True, msg(b"Q", b"SELECT '" + b"x" * 2_000_000 + b"'\0")))
    out.append((True, msg(b"Q", b"SELECT " + b"1+" * 200_000 + b"1\0")))
    out.append((True, msg(b"Q", b"\xff\xfe\xfd SELECT\0")))
    out.append((True, msg(b"Q", b"SELECT 1")))  # no terminator
    out.append((True, msg(b"P", b"\0SELECT $1\0" + struct.pack("!H", 65535) + b"\0" * 40)))
    out.append((True, msg(b"P", b"\0SELECT $1\0\0\0") + msg(b"B", b"\0\0\0\0\0\x05") + msg(b"S", b"")))
    out.append((True, msg(b"B", b"nope\0nope\0" + b"\xff" * 32) + msg(b"S", b"")))
    out.append((True, msg(b"E", b"nope\0\0\0\0\0") + msg(b"S", b"")))
    out.append((True, msg(b"D", b"X") + msg(b"S", b"")))
    out.append((True, msg(b"C", b"Z") + msg(b"S", b"")))
    out.append((True, msg(b"!", b"???")))
    out.append((True, msg(b"d", b"copy data out of nowhere")))
    out.append((True, msg(b"F", b"\0" * 30)))
    out.append((True, msg(b"P", b"s1\0SELECT " + b"1," * 100_000 + b"1\0\0\0") + msg(b"S", b"")))
    out.append((True, msg(b"Q", b"SELECT * FROM clinical.patients p1, clinical.patients p2 LIMIT 1\0")))
    out.append((True, msg(b"Q", b"DECLARE c CURSOR WITH HOLD FOR SELECT * FROM clinical.observations\0")))
    out.append((True, msg(b"Q", b"BEGIN; SELECT * FROM clinical.encounters; \0")))
    out.append((True, b"Q" + struct.pack("!I", 1 << 20) + b"SELECT 1" * 100))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--user", default="analyst")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    start = rss_kib(a.pid)
    print(f"round 0: rss {start // 1024} MiB")
    sent = 0
    for r in range(1, a.rounds + 1):
        for needs_login, data in cases(rng):
            try:
                c = Conn(a.port)
                if needs_login and not c.login(a.user, a.token):
                    c.close()
                    continue
                c.send(data)
                c.drain()
                c.close()
                sent += 1
            except (OSError, ssl.SSLError):
                pass
        time.sleep(0.5)
        print(f"round {r}: {sent} cases, rss {rss_kib(a.pid) // 1024} MiB", flush=True)
    # Let idle connections be closed and memory settle.
    time.sleep(2)
    end = rss_kib(a.pid)
    peak = rss_kib(a.pid, "VmHWM")
    print(
        f"malformed_cases={sent} rss_start_mib={start // 1024} rss_end_mib={end // 1024} "
        f"peak_mib={peak // 1024} growth_mib={(end - start) // 1024}"
    )


if __name__ == "__main__":
    main()
