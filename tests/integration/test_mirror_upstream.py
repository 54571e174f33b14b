#!/usr/bin/python3
"""A misbehaving upstream: mp-mirror connects to a fake primary written here
(a TCP server speaking docs/PROTOCOL.md) which answers HELLO and SUBSCRIBE
and then sends a gap in versions, a record whose digest does not match its
mutations, garbage, an oversized frame, nothing at all, a snapshot that
does not check, or another cluster after a reconnect. The mirror must log
it, survive, keep reconnecting, and never hold or serve a state that is not
one of the fake's valid ones: a watcher polls /status throughout and checks
every (applied_version, digest) it sees against the fake's history."""

import os
import queue
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from mp import (CHANGES, DIR, HEARTBEAT, HELLO, HELLO_OK, PUT, REPLY, RESOLVE, SNAPSHOT_BEGIN,
                SNAPSHOT_CHUNK, SNAPSHOT_END, SUBSCRIBE)  # noqa: E402

T0 = 1_700_000_000_000_000_000
EMPTY_DIGEST = mp.NamespaceModel().digest().hex()


class History:
    """A fake cluster's valid versions 1..n: version v makes directory
    /<tag>v (inode v + 1). Records and digests come from the digest port,
    so a mirror that applies them must end at the same digests."""

    def __init__(self, cluster, n, tag="d"):
        self.cluster, self.tag = cluster, tag
        self.records, self.nodes = {}, {}
        model = mp.NamespaceModel()
        self.digests = {0: model.digest()}
        self.node_list = [list(mp.EMPTY_ROOT)]
        for v in range(1, n + 1):
            self.add(model)
        self.head = n

    def add(self, model):
        v = len(self.records) + 1
        node = [v + 1, mp.ROOT, "%s%d" % (self.tag, v), DIR, 0o755, 0, 0, 0, T0 + v, T0 + v,
                None]
        model.put(node)
        model.version = v
        self.node_list.append(node)
        self.nodes[v] = node
        self.digests[v] = model.digest()
        self.records[v] = [v, T0 + v, model.digest(), [[PUT, node]]]
        self.head = v

    def evil(self, v):
        """A record of version v whose mutation is not the one its digest
        says (an inode named "evil"); returns (record, digest of the state
        it would really make)."""
        model = mp.NamespaceModel()
        for n in self.node_list[1:v]:
            model.put(n)
        node = [v + 1, mp.ROOT, "evil", DIR, 0o755, 0, 0, 0, T0 + v, T0 + v, None]
        model.put(node)
        return [v, T0 + v, self.digests[v], [[PUT, node]]], model.digest()

    def snapshot_nodes(self, v):
        return [list(n) for n in self.node_list[:v + 1]]


class FakeConn:
    """One accepted connection from the mirror: a thread reads its frames
    (queued; ACKs noted) and notes when it closes."""

    def __init__(self, sock, n):
        self.sock, self.n = sock, n
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.frames = queue.Queue()
        self.acks = []
        self.closed = threading.Event()
        self.closed_at = None
        self.hello = self.subscribe = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    break
                buf += d
                while len(buf) >= 4:
                    (n,) = struct.unpack(">I", buf[:4])
                    if len(buf) < 4 + n:
                        break
                    f = mp.decode_payload(buf[4:4 + n])
                    buf = buf[4 + n:]
                    if f[0] == mp.ACK:
                        self.acks.append(f[2]["version"])
                    else:
                        self.frames.put(f)
        except OSError:
            pass
        self.closed_at = time.monotonic()
        self.closed.set()

    def expect(self, type_, timeout=30):
        try:
            f = self.frames.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("connection %d: no frame from the mirror in %ss" % (self.n,
                                                                                     timeout))
        assert f[0] == type_, "connection %d: expected type %d from the mirror, got %r" % (
            self.n, type_, f)
        return f

    def send(self, type_, id_, body):
        self.send_raw(mp.encode_frame(type_, id_, body))

    def send_raw(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # the mirror may have dropped us already

    def handshake(self, history, snapshot=False, version=None):
        """HELLO -> HELLO_OK of history's cluster, SUBSCRIBE -> REPLY.
        Returns the mirror's `from`."""
        t, id_, body = self.expect(HELLO)
        self.hello = body
        self.send(HELLO_OK, id_, {"cluster_id": history.cluster, "version": history.head,
                                  "proto": 1, "role": "primary"})
        t, id_, body = self.expect(SUBSCRIBE)
        self.subscribe = body
        self.send(REPLY, id_, {"version": history.head if version is None else version,
                               "from": body["from"], "snapshot": snapshot})
        return body["from"]

    def changes(self, history, first, last):
        self.send(CHANGES, 0, {"versions": [history.records[v] for v in range(first, last + 1)]})

    def heartbeat(self, version):
        self.send(HEARTBEAT, 0, {"version": version, "time": time.time_ns()})

    def snapshot(self, history, v, digest=None, nodes=None):
        nodes = history.snapshot_nodes(v) if nodes is None else nodes
        self.send(SNAPSHOT_BEGIN, 0, {"version": v,
                                      "digest": history.digests[v] if digest is None else digest,
                                      "count": len(nodes), "next_ino": v + 2,
                                      "cluster_id": history.cluster})
        self.send(SNAPSHOT_CHUNK, 0, {"nodes": nodes})
        self.send(SNAPSHOT_END, 0, {"version": v, "count": len(nodes)})

    def keepalive(self, version, interval=0.2):
        """Heartbeats every interval until the connection closes (a live
        but idle upstream)."""
        def beat():
            while not self.closed.wait(interval):
                self.heartbeat(version)
        threading.Thread(target=beat, daemon=True).start()

    def wait_closed(self, timeout=30, what="the mirror dropping the connection"):
        assert self.closed.wait(timeout), "connection %d: %s did not happen in %ss" % (
            self.n, what, timeout)
        return self.closed_at

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class FakeUpstream:
    """Listens on a free port; accept() hands over the mirror's connections
    in order."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.conns = queue.Queue()
        self.count = 0
        self.all = []
        self.halt = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.halt:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.count += 1
            c = FakeConn(s, self.count)
            self.all.append(c)
            self.conns.put(c)

    def accept(self, timeout=30):
        try:
            return self.conns.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the mirror did not (re)connect within %ss" % timeout)

    def close(self):
        self.halt = True
        self.lsock.close()
        for c in self.all:
            c.close()


class Watcher(threading.Thread):
    """Polls the mirror's /status and checks that every (applied_version,
    digest) it reports is a valid state of one of the histories (or the
    empty replica at 0), and that no digest in `forbidden` ever shows."""

    def __init__(self, m, histories, forbidden=()):
        super().__init__(daemon=True)
        self.m = m
        self.valid = {(0, EMPTY_DIGEST)}
        for h in histories:
            self.valid |= {(v, d.hex()) for v, d in h.digests.items()}
        self.forbidden = {d.hex() if isinstance(d, bytes) else d for d in forbidden}
        self.bad = []
        self.samples = 0
        self.halt = threading.Event()
        self.start()

    def run(self):
        while not self.halt.is_set():
            try:
                st = self.m.status()
            except (OSError, AssertionError, ValueError):
                time.sleep(0.02)
                continue
            self.samples += 1
            pair = (st["applied_version"], st["digest"])
            if pair not in self.valid or st["digest"] in self.forbidden:
                self.bad.append(st)
            time.sleep(0.01)

    def check(self):
        self.halt.set()
        self.join(10)
        assert self.samples > 0, "the watcher saw no /status"
        assert not self.bad, "the mirror held a state the upstream never had: %r" % self.bad[:3]


def mirror(tmp, fake, name="mirror", config=None):
    cfg = {"reconnect": {"min": "50ms", "max": "300ms"}, "upstream_timeout": "1s",
           "upstream_max_frame_bytes": "64KiB", "read_deadline": "200ms"}
    cfg.update(config or {})
    return mp.Mirror(tmp, fake.address if isinstance(fake, FakeUpstream) else fake, name=name,
                     config=cfg)


def serve_well(conn, history, upto=None):
    """A well-behaved upstream on conn: from the mirror's `from`, the
    versions up to upto."""
    upto = history.head if upto is None else upto
    frm = conn.handshake(history)
    if frm < upto:
        conn.changes(history, frm + 1, upto)
    return frm


def at(m, history, v, timeout=30):
    return m.wait_state(lambda st: st["applied_version"] == v and
                        st["digest"] == history.digests[v].hex(), timeout=timeout,
                        what="version %d of %s" % (v, history.cluster))


def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_alive(m, reconnects_at_least):
    assert m.running(), "mp-mirror died:\n%s" % m.log()[-3000:]
    st = m.status()
    assert st["reconnects"] >= reconnects_at_least, st
    assert m.metrics()["mp_mirror_reconnects_total"] >= reconnects_at_least
    return st


def test_gap(tmp):
    h = History("fake-gap", 20)
    fake = FakeUpstream()
    m = mirror(tmp, fake)
    w = Watcher(m, [h])
    c1 = fake.accept()
    assert c1.handshake(h) == 0
    assert c1.hello.get("proto") == 1 and "token" not in c1.hello, c1.hello
    assert c1.subscribe.get("site") == "mirror", c1.subscribe
    c1.changes(h, 1, 5)
    at(m, h, 5)
    c1.changes(h, 7, 8)  # 6 is missing
    c1.wait_closed(10)
    m.wait_log("gap")
    # A repeat of an old version is no better.
    c2 = fake.accept()
    assert c2.handshake(h) == 5
    assert c2.subscribe.get("digest") == h.digests[5], c2.subscribe
    c2.changes(h, 6, 6)
    c2.changes(h, 5, 5)
    c2.wait_closed(10)
    c3 = fake.accept()
    assert serve_well(c3, h) == 6
    st = at(m, h, 20)
    assert st["cluster_id"] == "fake-gap", st
    assert max(c3.acks or [0]) <= 20
    mp.wait_until(lambda: c3.acks and c3.acks[-1] == 20, timeout=10, what="ACK of version 20")
    w.check()
    check_alive(m, 2)
    mt = m.metrics()
    assert mt["mp_mirror_divergences_total"] == 0 and mt["mp_mirror_bootstraps_total"] == 0, mt
    assert mt["mp_mirror_applied_versions_total"] == 20, mt
    m.stop()
    fake.close()


def test_wrong_digest(tmp):
    h = History("fake-digest", 12)
    bad_rec, bad_state = h.evil(6)
    fake = FakeUpstream()
    m = mirror(tmp, fake)
    w = Watcher(m, [h], forbidden=[bad_state])
    c1 = fake.accept()
    serve_well(c1, h, upto=5)
    at(m, h, 5)
    c1.send(CHANGES, 0, {"versions": [bad_rec]})
    c1.wait_closed(10)
    m.wait_log("differs")
    # It threw its replica away and starts over.
    c2 = fake.accept()
    assert c2.handshake(h) == 0, "after a bad digest the mirror resubscribed from %r" % (
        c2.subscribe,)
    c2.changes(h, 1, 12)
    at(m, h, 12)
    w.check()
    check_alive(m, 1)
    mc = m.client()
    mc.error("ENOENT", RESOLVE, {"path": "/evil"})
    assert mc.resolve("/d6")[mp.N_NAME] == "d6"
    mc.close()
    mt = m.metrics()
    assert mt["mp_mirror_divergences_total"] == 1, mt
    # The replica it rebuilt is what a restart loads (no second divergence).
    m.stop()
    m.start()
    c3 = fake.accept()
    frm = c3.handshake(h)
    assert frm == 12, "restarted at %d, not at the replica it had (12):\n%s" % (
        frm, m.log_since_start()[-2000:])
    assert m.metrics()["mp_mirror_divergences_total"] == 0
    m.stop()
    fake.close()


def test_garbage(tmp):
    h = History("fake-garbage", 10)
    fake = FakeUpstream()
    m = mirror(tmp, fake)
    w = Watcher(m, [h])
    # Each a function of the version due next.
    garbage = [
        lambda v: struct.pack(">I", 8) + b"\xc1" * 8,                     # not msgpack
        lambda v: mp.encode_frame(CHANGES, 0, {"versions": ["junk"]}),     # not a record
        lambda v: mp.encode_frame(CHANGES, 0, {"versions": [[v, T0, b"short", []]]}),
        lambda v: mp.encode_frame(CHANGES, 0, {"versions": [[v, T0, h.digests[v], [[9, 1]]]]}),
        lambda v: struct.pack(">I", 6) + b"\x92\x01\x02\x03\x04\x05",     # trailing bytes
        lambda v: mp.encode_frame(77, 0, {}),                              # unknown type
        lambda v: mp.encode_frame(HELLO_OK, 5, {"cluster_id": "x"}),       # out of place
        lambda v: struct.pack(">I", 200) + os.urandom(300),                # noise
    ]
    for n, g in enumerate(garbage):
        c = fake.accept()
        upto = min(h.head - 1, 2 + n)
        serve_well(c, h, upto=upto)
        at(m, h, upto)
        data = g(upto + 1)
        c.send_raw(data)
        c.wait_closed(10, what="the mirror dropping the connection after %r" % data[:24])
        assert m.running(), m.log()[-3000:]
    c = fake.accept()
    serve_well(c, h)
    at(m, h, 10)
    w.check()
    check_alive(m, len(garbage))
    for text in ("malformed frame", "unexpected"):
        assert text in m.log(), "the log does not say %r:\n%s" % (text, m.log()[-3000:])
    mt = m.metrics()
    assert mt["mp_mirror_applied_versions_total"] == 10, mt
    m.stop()
    fake.close()


def test_oversized_frame(tmp):
    h = History("fake-big", 10)
    fake = FakeUpstream()
    m = mirror(tmp, fake)
    w = Watcher(m, [h])
    c1 = fake.accept()
    serve_well(c1, h, upto=5)
    at(m, h, 5)
    # A header announcing 100 MiB; the body never comes.
    c1.send_raw(struct.pack(">I", 100 << 20) + b"\x93\x1f\x00")
    c1.wait_closed(10)
    m.wait_log("exceeds the limit")
    # And one just over the limit, sent whole.
    c2 = fake.accept()
    serve_well(c2, h, upto=6)
    big = {"versions": [h.records[7]], "pad": b"x" * 65536}
    c2.send(CHANGES, 0, big)
    c2.wait_closed(10)
    at(m, h, 6)
    c3 = fake.accept()
    serve_well(c3, h)
    at(m, h, 10)
    w.check()
    check_alive(m, 2)
    m.stop()
    fake.close()


def test_silence(tmp):
    h = History("fake-silent", 10)
    fake = FakeUpstream()
    m = mirror(tmp, fake)
    w = Watcher(m, [h])
    # Silent from the start: no HELLO_OK.
    c1 = fake.accept()
    c1.expect(HELLO)
    t0 = time.monotonic()
    t = c1.wait_closed(15) - t0
    assert 0.8 <= t < 8, "dropped a silent upstream after %.2f s (upstream_timeout 1s)" % t
    # Silent after some versions.
    c2 = fake.accept()
    serve_well(c2, h, upto=5)
    t0 = time.monotonic()
    at(m, h, 5)
    t = c2.wait_closed(15) - t0
    assert 0.8 <= t < 8, "dropped a hung upstream after %.2f s (upstream_timeout 1s)" % t
    m.wait_log("silent for 1000 ms")
    # Quiet but alive (heartbeats every 300 ms): kept for 3 s.
    c3 = fake.accept()
    serve_well(c3, h)
    t_end = time.monotonic() + 3
    while time.monotonic() < t_end:
        c3.heartbeat(h.head)
        assert not c3.closed.wait(0.3), "the mirror dropped an upstream that sends heartbeats"
    st = at(m, h, 10)
    assert st["state"] == "live" and st["upstream_state"] == "streaming", st
    # Hung in the middle of a frame: the header says 1000 bytes, 10 come.
    t0 = time.monotonic()
    cpu0 = cpu_seconds(m.pid)
    c3.send_raw(struct.pack(">I", 1000) + b"\x93" + b"\x00" * 9)
    closed = c3.closed.wait(8)
    cpu = cpu_seconds(m.pid) - cpu0
    assert closed, ("an upstream hung mid-frame was not dropped in 8 s (upstream_timeout 1s); "
                    "the mirror used %.1f s of CPU meanwhile" % cpu)
    t = c3.closed_at - t0
    assert 0.8 <= t < 8, "dropped an upstream hung mid-frame after %.2f s" % t
    assert cpu < 0.5 * t + 0.2, "%.1f s of CPU while waiting %.1f s for a frame" % (cpu, t)
    w.check()
    check_alive(m, 3)
    m.stop()
    fake.close()


def test_bad_snapshot_and_bootstrapping_health(tmp):
    h = History("fake-snap", 35)
    fake = FakeUpstream()
    m = mirror(tmp, fake, config={"upstream_timeout": "30s", "max_lag": "2s"})
    w = Watcher(m, [h], forbidden=[b"\x11" * 16])
    nodes = h.snapshot_nodes(30)
    # A snapshot whose nodes do not hash to its digest.
    c1 = fake.accept()
    c1.handshake(h, snapshot=True, version=30)
    c1.snapshot(h, 30, digest=b"\x11" * 16)
    c1.wait_closed(10)
    m.wait_log("does not check")
    # One whose count is wrong.
    c2 = fake.accept()
    c2.handshake(h, snapshot=True, version=30)
    c2.send(SNAPSHOT_BEGIN, 0, {"version": 30, "digest": h.digests[30], "count": len(nodes) + 1,
                                "next_ino": 32, "cluster_id": h.cluster})
    c2.send(SNAPSHOT_CHUNK, 0, {"nodes": nodes})
    c2.send(SNAPSHOT_END, 0, {"version": 30, "count": len(nodes) + 1})
    c2.wait_closed(10)
    # A good one that takes its time: meanwhile the mirror is bootstrapping,
    # /healthz says 503 and reads wait, then get ESTALE.
    c3 = fake.accept()
    c3.handshake(h, snapshot=True, version=30)
    c3.send(SNAPSHOT_BEGIN, 0, {"version": 30, "digest": h.digests[30], "count": len(nodes),
                                "next_ino": 32, "cluster_id": h.cluster})
    c3.send(SNAPSHOT_CHUNK, 0, {"nodes": nodes[:10]})
    m.wait_state(lambda st: st["state"] == "bootstrapping", timeout=10,
                 what="state bootstrapping")
    code, body = m.healthz()
    assert code == 503 and "bootstrapping" in body, (code, body)
    mc = m.client()
    mc.error("ESTALE", RESOLVE, {"path": "/", "min_version": 1})
    mc.error("ESTALE", RESOLVE, {"path": "/"})
    # Nothing to cascade yet either.
    sub = mp.Subscriber(m.port, role="mirror")
    t, b = sub.c.call(SUBSCRIBE, {"from": 0, "site": "py"})
    assert t == mp.ERROR and b["code"] == "EAGAIN", (t, b)
    sub.close()
    time.sleep(2.5)  # the snapshot takes longer than max_lag to arrive
    c3.send(SNAPSHOT_CHUNK, 0, {"nodes": nodes[10:]})
    c3.send(SNAPSHOT_END, 0, {"version": 30, "count": len(nodes)})
    st = at(m, h, 30)
    assert st["state"] == "live", st
    # Just installed, at the upstream's version, nothing heard since the
    # last snapshot frame: not lagging.
    health_after_install = m.healthz()
    lag_after_install = m.status()["lag_seconds"]
    assert mc.resolve("/d30")[mp.N_NAME] == "d30"
    mt = m.metrics()
    assert mt["mp_mirror_bootstraps_total"] == 1, mt
    # Then it follows on.
    c3.changes(h, 31, 35)
    at(m, h, 35)
    w.check()
    check_alive(m, 2)
    # Installed at the upstream's version and following it: not lagging.
    code, body = m.healthz()
    assert code == 200, "live at the upstream's version, /healthz says %d: %s (status %r)" % (
        code, body, m.status())
    assert health_after_install[0] == 200 and lag_after_install < 1, (
        "right after installing the snapshot at the upstream's version: /healthz %r, "
        "lag_seconds %.2f" % (health_after_install, lag_after_install))
    mc.close()
    m.stop()
    fake.close()


def test_other_cluster_after_reconnect(tmp):
    a = History("fake-a", 30, tag="a")
    b = History("fake-b", 10, tag="b")
    fake = FakeUpstream()
    m = mirror(tmp, fake)
    w = Watcher(m, [a, b])
    c1 = fake.accept()
    serve_well(c1, a)
    at(m, a, 30)
    c1.close()
    # Back as another cluster that pretends nothing happened: CHANGES of its
    # own history numbered after the mirror's version.
    c2 = fake.accept()
    t, id_, body = c2.expect(HELLO)
    c2.send(HELLO_OK, id_, {"cluster_id": "fake-b", "version": b.head, "proto": 1,
                            "role": "primary"})
    t, id_, body = c2.expect(SUBSCRIBE)
    c2.send(REPLY, id_, {"version": b.head, "from": body["from"], "snapshot": False})
    bogus = []
    for v in range(31, 36):
        rec = list(b.records[(v - 30)])
        rec[0] = v
        bogus.append(rec)
    c2.send(CHANGES, 0, {"versions": bogus})
    c2.wait_closed(10)
    m.wait_log("belongs to cluster")
    # The third connection serves cluster b properly, from 0.
    c3 = fake.accept()
    assert c3.handshake(b) == 0, c3.subscribe
    c3.changes(b, 1, 10)
    c3.keepalive(10)
    st = at(m, b, 10)
    assert st["cluster_id"] == "fake-b", st
    w.check()
    mc = m.client()
    mc.error("ENOENT", RESOLVE, {"path": "/a1"})
    assert mc.resolve("/b10")[mp.N_NAME] == "b10"
    assert mc.read(mp.VERSION, {})["cluster_id"] == "fake-b"
    mc.close()
    mt = m.metrics()
    assert mt["mp_mirror_divergences_total"] >= 1, mt
    check_alive(m, 2)
    # Live at b's version: cluster a's higher version is not lag.
    st = m.wait_state(lambda st: st["lag_versions"] == 0 and st["state"] == "live", timeout=10,
                      what="live with no lag at fake-b's version 10")
    assert st["upstream_version"] == 10, st
    m.stop()
    fake.close()


def test_origin_from_upstream(tmp):
    """The mirror announces the origin its upstream's HELLO_OK carried, as
    is (a scheme it does not know included), "" when there was none; an
    origin that is not a string, is too long or holds a control byte costs
    the connection and leaves the announced one alone."""
    h = History("fake-origin", 5)
    fake = FakeUpstream()
    m = mirror(tmp, fake)

    def announced():
        c = mp.Client(m.port, role="mirror")
        try:
            b = c.hello()
            assert b["site"] == "mirror", b
            return b["origin"]
        finally:
            c.close()

    def hello_ok(conn, origin):
        t, id_, body = conn.expect(HELLO)
        conn.send(HELLO_OK, id_, {"cluster_id": h.cluster, "version": h.head, "proto": 1,
                                  "role": "primary", "origin": origin})

    c = fake.accept()
    serve_well(c, h)  # a HELLO_OK without origin
    at(m, h, 5)
    assert announced() == ""
    c.close()
    for origin in ["gs://future-scheme/x", "s3://my-bucket/pre"]:
        c = fake.accept()
        hello_ok(c, origin)
        t, id_, body = c.expect(SUBSCRIBE)
        c.send(REPLY, id_, {"version": h.head, "from": body["from"], "snapshot": False})
        mp.wait_until(lambda: announced() == origin, timeout=10, what="origin %r" % origin)
        c.close()
    for bad in [5, "s3://my-bucket/\x01", "s3://" + "a" * 5000, ["s3://abc"]]:
        c = fake.accept()
        off = m.log_size()
        hello_ok(c, bad)
        c.wait_closed(10, what="the mirror dropping an upstream with origin %r" % bad)
        m.wait_log("origin", since=off)
        assert announced() == "s3://my-bucket/pre"
    check_alive(m, 6)
    m.stop()
    fake.close()


def test_cascade_when_upstream_mirror_rebootstraps(tmp):
    """Mirror A follows the fake, mirror B follows A. The fake sends A a
    bad record: A throws its replica away and rebuilds it. B's replica was
    fine all along: B must not go back in time (to A's empty replica) nor
    serve anything older than what it served before."""
    h = History("fake-cascade", 40)
    bad_rec, bad_state = h.evil(21)
    fake = FakeUpstream()
    a = mirror(tmp, fake, name="mirror-a")
    c1 = fake.accept()
    serve_well(c1, h, upto=20)
    c1.keepalive(20)
    at(a, h, 20)
    b = mirror(tmp, a, name="mirror-b")
    at(b, h, 20)
    wb = Watcher(b, [h], forbidden=[bad_state])
    versions = []
    halt = threading.Event()

    def watch_versions():
        while not halt.is_set():
            try:
                versions.append(b.status()["applied_version"])
            except (OSError, AssertionError, ValueError):
                pass
            time.sleep(0.005)
    vt = threading.Thread(target=watch_versions, daemon=True)
    vt.start()
    c1.send(CHANGES, 0, {"versions": [bad_rec]})
    c1.wait_closed(10)
    a.wait_log("differs")
    c2 = fake.accept()
    assert c2.handshake(h) == 0
    c2.changes(h, 1, 40)
    c2.keepalive(40)
    at(a, h, 40)
    at(b, h, 40)
    halt.set()
    vt.join(10)
    wb.check()
    drops = [(x, y) for x, y in zip(versions, versions[1:]) if y < x]
    assert not drops, ("mirror-b went back from version %d to %d while mirror-a rebuilt its "
                       "replica (B's own was valid)" % drops[0])
    mb = b.metrics()
    assert mb["mp_mirror_divergences_total"] == 0, mb
    for m in (b, a):
        m.stop()
    fake.close()


if __name__ == "__main__":
    mp.main(globals())
