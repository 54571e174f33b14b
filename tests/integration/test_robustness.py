#!/usr/bin/python3
"""Bad input on the wire: each case gets a clear ERROR (code and a message
naming the problem) or a close, and the daemon keeps serving everyone else."""

import os
import socket
import struct
import sys
import threading
import time

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from mp import ERROR, HELLO, MKDIR, READDIR, REPLY, VERSION  # noqa: E402

MAX_FRAME = 65536


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def packb(o):
    return msgpack.packb(o, use_bin_type=True)


def start(tmp, **config):
    cfg = {"max_frame_bytes": "64KiB"}
    cfg.update(config)
    # Under ASan freed memory waits in a quarantine (256 MB by default) and
    # counts in the RSS: keep it small so RSS checks measure the daemon.
    asan = ":".join(x for x in (os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=8") if x)
    p = mp.Primary(tmp, config=cfg, env={"ASAN_OPTIONS": asan})
    return p


def expect_error(c, code, contains, id_=None):
    t, rid, b = c.recv()
    assert t == ERROR, "expected ERROR %s, got %r %r" % (code, t, b)
    assert b["code"] == code, "expected %s, got %s: %s" % (code, b["code"], b["message"])
    for s in [contains] if isinstance(contains, str) else contains:
        assert s.lower() in b["message"].lower(), "message %r lacks %r" % (b["message"], s)
    if id_ is not None:
        assert rid == id_, "error id %r, expected %r" % (rid, id_)
    return b


def still_serving(c, p):
    """c (another client) still gets answers, the daemon still runs."""
    assert p.running(), "mp-primary died: %s" % p.log()[-3000:]
    v = c.version()
    assert isinstance(v, int)
    return v


def test_malformed_frames(tmp):
    p = start(tmp)
    other = p.client()
    c = p.client()
    cases = [
        (b"\xc1", "invalid msgpack"),
        (b"\x93\x01\x02", "declares 3 items"),
        (b"\x93\x0a\x01\x81\xa1k\xa5ab", "truncated"),
        (packb([VERSION, 1, {}]) + b"\x00", "trailing"),
        (packb({"type": 10}), "[type, id, body]"),
        (packb([VERSION, 1]), "[type, id, body]"),
        (packb([VERSION, 1, {}, 4]), "[type, id, body]"),
        (packb("hello"), "[type, id, body]"),
        (packb([-1, 1, {}]), "type"),
        (packb(["VERSION", 1, {}]), "type"),
        (packb([1 << 40, 1, {}]), "type"),
        (packb([VERSION, "x", {}]), "id"),
        (packb([VERSION, -3, {}]), "id"),
        (packb([VERSION, 1, {1: 2}]), "keys"),
        (b"", "truncated"),
    ]
    for payload, why in cases:
        c.send_raw(frame(payload))
        expect_error(c, "EPROTO", why)
        still_serving(other, p)
    # The id is echoed whenever it could be read.
    c.send_raw(frame(packb([VERSION, 77, [1, 2]])))
    expect_error(c, "EPROTO", "body must be a map", id_=77)
    # The connection goes on after each of them.
    assert c.version() == 0
    m = p.metrics()
    assert m["mp_primary_frames_rejected_total"] >= len(cases) + 1, m
    c.close()
    other.close()
    p.stop()


def test_bad_requests(tmp):
    p = start(tmp)
    other = p.client()
    c = mp.Client(p.port)
    # Before HELLO: refused, and HELLO still works after.
    c.error("EPROTO", VERSION, {}, contains="HELLO")
    c.error("EPROTO", MKDIR, {"path": "/a"}, contains="HELLO")
    c.error("EPROTO", HELLO, {"proto": 2}, contains="version")
    c.error("EPROTO", HELLO, {"proto": "1"}, contains="proto")
    c.error("EPROTO", HELLO, {}, contains="proto")
    c.error("EPERM", HELLO, {"proto": 1, "cluster_id": "another"}, contains="another")
    c.hello()
    c.error("EPROTO", HELLO, {"proto": 1}, contains="already")
    # Unknown and server-only types.
    c.error("EPROTO", 99, {}, contains="unknown message type 99")
    c.error("EPROTO", 65535, {}, contains="65535")
    c.error("EPROTO", mp.CHANGES, {}, contains="31")
    # Fields of the wrong type name the field.
    c.error("EINVAL", MKDIR, {"path": 5}, contains=["path", "string"])
    c.error("EINVAL", MKDIR, {"path": ["/a"]}, contains="path")
    c.error("EINVAL", MKDIR, {}, contains=["path", "missing"])
    c.error("EINVAL", MKDIR, {"path": "/a", "mode": "0755"}, contains="mode")
    c.error("EINVAL", MKDIR, {"path": "/a", "mode": -1}, contains="mode")
    c.error("EINVAL", MKDIR, {"path": "/a", "uid": 1 << 32}, contains="uid")
    c.error("EINVAL", MKDIR, {"path": "/a", "parents": 1}, contains="parents")
    c.error("EINVAL", mp.CREATE, {"path": "/a", "size": -1}, contains="size")
    c.error("EINVAL", mp.CREATE, {"path": "/a", "mtime": "now"}, contains="mtime")
    c.error("EINVAL", mp.RENAME, {"from": "/a", "to": 3}, contains="to")
    c.error("EINVAL", mp.LOOKUP, {"parent": "1", "name": "a"}, contains="parent")
    c.error("EINVAL", mp.LOOKUP, {"parent": 1, "name": 7}, contains="name")
    c.error("EINVAL", READDIR, {"path": "/", "limit": "10"}, contains="limit")
    c.error("EINVAL", mp.RESOLVE, {"path": None}, contains="path")
    c.error("EINVAL", mp.SUBSCRIBE, {"from": "0"}, contains="from")
    assert c.version() == 0, "a refused request made a version"
    still_serving(other, p)
    c.close()
    other.close()
    p.stop()


def test_oversized_frame(tmp):
    p = start(tmp)
    other = p.client()
    # Exactly the limit is accepted.
    c = p.client()
    body = {"path": "/a", "pad": b""}
    base = len(packb([MKDIR, 1, body]))
    body["pad"] = b"x" * (MAX_FRAME - base - 2)  # bin8 -> bin16 header grows by 1..2
    while len(packb([MKDIR, 1, body])) < MAX_FRAME:
        body["pad"] += b"x"
    payload = packb([MKDIR, 1, body])
    assert len(payload) == MAX_FRAME, len(payload)
    c.send_raw(frame(payload))
    t, rid, b = c.recv()
    assert t == REPLY and rid == 1 and b["version"] == 1, (t, b)
    # One byte more: E2BIG naming the limit, then closed; the body never needs
    # to arrive.
    c.send_raw(struct.pack(">I", MAX_FRAME + 1) + b"\x93")
    frames = c.expect_closed()
    assert len(frames) == 1, frames
    t, rid, b = frames[0]
    assert t == ERROR and b["code"] == "E2BIG", frames
    assert str(MAX_FRAME) in b["message"] and str(MAX_FRAME + 1) in b["message"], b
    c.close()
    # A length of 4 GiB - 1 as well.
    c = p.client()
    c.send_raw(b"\xff\xff\xff\xff")
    frames = c.expect_closed()
    assert [f[2]["code"] for f in frames] == ["E2BIG"], frames
    c.close()
    assert still_serving(other, p) == 1
    p.wait_log("exceeds the limit")
    other.close()
    p.stop()


def test_oversized_frame_after_queued_replies(tmp):
    """The E2BIG ERROR comes after every reply already queued for the
    connection, not instead of them."""
    p = start(tmp)
    other = p.client()
    other.batch([(mp.CREATE, {"path": "/f%04d" % i}) for i in range(1000)])
    c = p.client()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    n = 200  # about 20 MB of replies: far more than the socket buffers hold
    for i in range(n):
        c.send(READDIR, {"path": "/", "limit": 1000}, id_=1000 + i)
    c.send_raw(struct.pack(">I", MAX_FRAME + 1))
    frames = c.expect_closed(timeout=60)
    ids = [f[1] for f in frames if f[0] == REPLY]
    assert ids == list(range(1000, 1000 + n)), "got %d of %d replies before the close" % (
        len(ids), n)
    assert frames[-1][0] == ERROR and frames[-1][2]["code"] == "E2BIG", frames[-1][:2]
    c.close()
    still_serving(other, p)
    other.close()
    p.stop()


def test_stalled_and_dropped_connections(tmp):
    p = start(tmp)
    other = p.client()
    # A client that stops mid-frame holds nobody up.
    stalled = p.client()
    payload = packb([MKDIR, 5, {"path": "/stalled"}])
    stalled.send_raw(frame(payload)[:7])
    for i in range(20):
        t0 = time.monotonic()
        other.mkdir("/d%d" % i)
        assert time.monotonic() - t0 < 5
    # Its frame completes later and is answered.
    stalled.send_raw(frame(payload)[7:])
    t, rid, b = stalled.recv()
    assert t == REPLY and rid == 5 and b["node"][mp.N_NAME] == "stalled", (t, b)
    # A header alone, the rest never sent, the connection left open.
    stalled.send_raw(struct.pack(">I", 60000) + b"\x93\x0a")

    # 1,000 connections opened and dropped in every state.
    kinds = 0
    socks = []
    for i in range(1000):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        k = i % 5
        if k == 1:
            s.sendall(frame(packb([HELLO, 1, {"proto": 1}])))
        elif k == 2:
            s.sendall(frame(packb([HELLO, 1, {"proto": 1}]))[:5])
        elif k == 3:
            s.sendall(struct.pack(">I", 1000) + b"\x93" * 10)
        elif k == 4:
            s.sendall(frame(packb([HELLO, 1, {"proto": 1}])) + frame(packb([VERSION, 2, {}])))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        socks.append(s)
        if len(socks) == 100:
            for s in socks:
                s.close()
            socks = []
            kinds += 1
            still_serving(other, p)
    for s in socks:
        s.close()
    # Only other and stalled remain.
    mp.wait_until(lambda: p.status()["connections"] <= 2, timeout=20,
                  what="/status connections back to 2")
    assert p.status()["connections"] == 2, p.status()
    assert still_serving(other, p) == 21
    stalled.close()
    mp.wait_until(lambda: p.status()["connections"] == 1, timeout=20,
                  what="/status connections back to 1")
    m = p.metrics()
    assert m["mp_primary_connections"] == 1, m["mp_primary_connections"]
    other.close()
    p.stop()


def nested(depth):
    o = 1
    for _ in range(depth):
        o = [o]
    return o


def test_nesting_and_huge_headers(tmp):
    p = start(tmp)
    other = p.client()
    c = p.client()
    rss0 = p.rss_kb()
    # 100 levels deep.
    c.send_raw(frame(packb([MKDIR, 3, {"path": "/a", "x": nested(100)}])))
    expect_error(c, "EPROTO", "nested")
    # The same with raw bytes that msgpack libraries would refuse to build.
    c.send_raw(frame(b"\x91" * 60000 + b"\x01"))
    expect_error(c, "EPROTO", "nested")
    # A little nesting is fine.
    assert c.req(MKDIR, {"path": "/a", "x": nested(8)})["version"] == 1
    # Containers and strings claiming 2^32-1 items or bytes.
    for payload, why in [
        (b"\xdd\xff\xff\xff\xff" + b"\x01" * 16, "items"),
        (b"\x93\x0a\x01\xdf\xff\xff\xff\xff" + b"\xa1k\x01" * 8, "items"),
        (b"\x93\x0a\x01\x81\xa1k\xdd\xff\xff\xff\xff" + b"\x01" * 32, "items"),
        (b"\x93\x0a\x01\x81\xa1k\xdb\xff\xff\xff\xff" + b"a" * 32, "bytes"),
        (b"\x93\x0a\x01\x81\xa1k\xc6\xff\xff\xff\xff" + b"a" * 32, "bytes"),
        (b"\x93\x0a\x01\x81\xa1k\xc9\xff\xff\xff\xff\x01" + b"a" * 32, "bytes"),
    ]:
        for _ in range(50):
            c.send_raw(frame(payload))
        for _ in range(50):
            b = expect_error(c, "EPROTO", [])
            assert why in b["message"] or "truncated" in b["message"], b
        still_serving(other, p)
    rss1 = p.rss_kb()
    assert rss1 - rss0 < 64 * 1024, "RSS grew from %d kB to %d kB" % (rss0, rss1)
    assert c.version() == 1
    c.close()
    other.close()
    p.stop()


def test_client_that_never_reads(tmp):
    p = start(tmp)
    other = p.client()
    other.batch([(mp.CREATE, {"path": "/f%04d" % i}) for i in range(1000)])
    rss0 = p.rss_kb()
    # About 100 KB of reply per request, 2,000 requests: 200 MB if the
    # daemon buffered them all.
    greedy = p.client()
    greedy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    req = frame(packb([READDIR, 9, {"path": "/", "limit": 1000}]))
    stop = threading.Event()

    def writer():
        try:
            for _ in range(2000):
                if stop.is_set():
                    return
                greedy.sock.sendall(req)
        except OSError:
            pass

    greedy.sock.settimeout(60)
    th = threading.Thread(target=writer, daemon=True)
    th.start()
    # Unbounded buffering would take the daemon past 200 MB within a
    # second; watch it for longer than that while others are served.
    rss1, deadline, i = rss0, time.monotonic() + 2.0, 0
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        other.mkdir("/other%d" % i)
        i += 1
        assert time.monotonic() - t0 < 5, "writes stalled behind a client that never reads"
        rss1 = max(rss1, p.rss_kb())
        time.sleep(0.05)
    print("RSS %d kB -> %d kB" % (rss0, rss1))
    assert rss1 - rss0 < 100 * 1024, "RSS grew from %d kB to %d kB" % (rss0, rss1)
    stop.set()
    greedy.close()
    th.join(30)
    still_serving(other, p)
    mp.wait_until(lambda: p.status()["connections"] == 1, timeout=20, what="greedy closed")
    other.close()
    p.stop()


def test_churn_under_load(tmp):
    """Clients that vanish with a write queued or in flight, and subscribers
    that vanish mid-catch-up or mid-snapshot, while writers keep the
    committer busy: nothing crashes (ASan builds check the memory), the
    connections drain, and the daemon stops cleanly."""
    p = start(tmp, log_retention={"max_versions": 50, "max_age": "0s"})
    c = p.client()
    for i in range(100):
        c.mkdir("/pre%d" % i)
    c.close()
    # Subscriptions from 0 then need snapshots.
    mp.wait_until(lambda: p.status()["change_log"]["oldest_version"] > 1, timeout=20,
                  what="retention trimming the log")
    stop = threading.Event()
    errors = []

    def writer(k):
        c = p.client()
        i = 0
        try:
            while not stop.is_set():
                c.create("/w%d-%d" % (k, i % 200))
                i += 1
        except BaseException as e:
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    rst = struct.pack("ii", 1, 0)
    try:
        for i in range(600):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, rst)
            data = frame(packb([HELLO, 1, {"proto": 1}]))
            if i % 3 == 0:
                data += frame(packb([MKDIR, 2, {"path": "/gone%d" % i}]))
                data += frame(packb([mp.RESOLVE, 3, {"path": "/"}]))
            elif i % 3 == 1:
                data += frame(packb([mp.SUBSCRIBE, 2, {"from": i % 2, "site": "churn%d" % i}]))
            else:
                data += frame(packb([mp.BATCH, 2, {"ops": [[MKDIR, {"path": "/b%d" % i}],
                                                           [mp.CREATE,
                                                            {"path": "/b%d/f" % i}]]}]))
            s.sendall(data)
            if i % 2:
                try:
                    s.recv(4096)  # let the daemon get going
                except OSError:
                    pass
            s.close()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert p.metrics()["mp_primary_snapshots_total"] > 0
    mp.wait_until(lambda: p.status()["connections"] == 0, timeout=20, what="connections drained")
    st = p.status()
    assert all(not s["connected"] for s in st["subscribers"]), st["subscribers"]
    c = p.client()
    nodes = mp.all_nodes(c)
    assert mp.digest_of(nodes).hex() == p.status()["digest"]
    c.close()
    p.stop()
    sc = p.storecheck()
    assert sc["meta_digest"] == sc["recomputed_digest"] == st["digest"], sc


def test_max_connections(tmp):
    p = start(tmp, max_connections=10)
    clients = [p.client() for _ in range(10)]
    # The eleventh is closed at once, and the others keep working.
    extra = mp.Client(p.port)
    try:
        extra.send(HELLO, {"proto": 1})
        frames = extra.expect_closed(timeout=10)
    except (ConnectionResetError, BrokenPipeError):
        frames = []
    assert frames == [], frames
    extra.close()
    p.wait_log("connection limit reached")
    for c in clients:
        still_serving(c, p)
    clients.pop().close()
    mp.wait_until(lambda: p.status()["connections"] == 9, timeout=10, what="9 connections")
    again = p.client()
    assert again.version() == 0
    for c in clients + [again]:
        c.close()
    p.stop()


def test_idle_timeout(tmp):
    p = start(tmp, idle_timeout="1s")
    c = p.client()
    t0 = time.monotonic()
    frames = c.expect_closed(timeout=10)
    took = time.monotonic() - t0
    assert frames == [] and 0.5 < took < 8, (frames, took)
    p.wait_log("idle for 1000 ms")
    c = p.client()
    assert c.version() == 0
    c.close()
    p.stop()


if __name__ == "__main__":
    mp.main(globals())
