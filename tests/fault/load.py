#!/usr/bin/python3
"""Steady write load and the lost-write check of the fault suite; runs inside a
region's namespace (ip netns exec NS /usr/bin/python3 tests/fault/load.py ...).

    load.py writer --server H:P --dir /fault/w --rate N --log FILE
        CREATEs DIR/fNNNNNNN at N per second on one connection until SIGTERM.
        A write is acknowledged when its REPLY came: its name and version are
        appended to FILE at once (flushed). A request that fails or is left
        without a reply (the primary died, the link hung for 2 s) counts as an
        error and the writer reconnects (every 200 ms) and goes on with the
        next name. Prints {"writes":acked,"errors":n,"last_error":...}.

    load.py check --server H:P --dir /fault/w --log FILE [--min-version V] [--role R]
        Lists DIR (at a mirror: at version >= V, parked up to 10 s) and prints
        {"acked":n,"present":n,"missing":n,"examples":[...],"version":v}.
"""

import argparse
import json
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import mp  # noqa: E402

stop = False


def on_term(sig, frame):
    global stop
    stop = True


def split(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def connect(addr, role="primary"):
    host, port = split(addr)
    c = mp.Client(port, host=host, timeout=2, role=role)
    c.hello()
    return c


def writer(a):
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    acked = errors = 0
    last_error = None
    log = open(a.log, "a")
    c = None
    seq = 0
    period = 1.0 / a.rate
    next_at = time.monotonic()
    while not stop:
        if c is None:
            try:
                c = connect(a.server)
                c.mkdir(a.dir, parents=True) if seq == 0 else None
            except (OSError, mp.MPError, mp.ConnectionClosed, AssertionError) as e:
                if c is not None:
                    c.close()
                c = None
                last_error = "connect: %s" % e
                time.sleep(0.2)
                continue
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
            continue
        next_at = max(next_at + period, now - 1.0)
        name = "f%08d" % seq
        seq += 1
        try:
            r = c.create("%s/%s" % (a.dir, name), size=0)
            log.write("%s %d\n" % (name, r["version"]))
            log.flush()
            acked += 1
        except (OSError, mp.MPError, mp.ConnectionClosed, AssertionError, socket.timeout) as e:
            errors += 1
            last_error = "%s: %s" % (name, e)
            c.close()
            c = None
    log.close()
    print(json.dumps({"writes": acked, "errors": errors, "last_error": last_error}))
    return 0


def check(a):
    acked = {}
    with open(a.log) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                acked[parts[0]] = int(parts[1])
    c = connect(a.server, role=a.role)
    try:
        names = set()
        cursor = None
        version = None
        while True:
            body = {"path": a.dir}
            if cursor is not None:
                body["cursor"] = cursor
            r = c.read(mp.READDIR, body, min_version=a.min_version or None,
                       deadline_ms=10000 if a.min_version else None, timeout=15)
            version = r["version"]
            for e in r["entries"]:
                n = e[mp.N_NAME]
                names.add(n.decode() if isinstance(n, bytes) else n)
            if r["next"] is None:
                break
            cursor = r["next"]
    finally:
        c.close()
    missing = sorted(n for n in acked if n not in names)
    print(json.dumps({"acked": len(acked), "present": len(names), "missing": len(missing),
                      "examples": missing[:5], "version": version}))
    return 0 if not missing else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["writer", "check"])
    ap.add_argument("--server", required=True)
    ap.add_argument("--dir", default="/fault/w")
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--log", required=True)
    ap.add_argument("--min-version", type=int, default=0)
    ap.add_argument("--role", default="primary")
    a = ap.parse_args()
    return writer(a) if a.mode == "writer" else check(a)


if __name__ == "__main__":
    sys.exit(main())
