#!/usr/bin/python3
"""Clients of mp-mirror: reads with min_version are parked until the replica
gets there and answered then, or get ESTALE (with the applied version) after
their deadline, and are never answered below min_version; VERSION says how
stale the replica is, and reads bounded by max_staleness_ms get ESTALE at
once from a mirror staler than that; writes get EROFS
naming the upstream; tokens (site tokens upstream, client tokens limited to
their subtree); malformed and oversized frames; SIGHUP reload; cascaded
subscribers get the primary's change records unchanged."""

import os
import struct
import sys
import time

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from mp import (BATCH, CREATE, ERROR, GETATTR, HELLO, LOOKUP, MKDIR, READDIR, RENAME, REPLY,
                RESOLVE, RMDIR, SETATTR, SUBSCRIBE, SYMLINK, UNLINK, VERSION)  # noqa: E402

MIRROR_CONFIG = {"reconnect": {"min": "50ms", "max": "500ms"}}


def mirror(tmp, upstream, name="mirror", config=None, **kw):
    cfg = dict(MIRROR_CONFIG)
    cfg.update(config or {})
    return mp.Mirror(tmp, upstream, name=name, config=cfg, **kw)


def pair(tmp, pconfig=None, mconfig=None):
    p = mp.Primary(tmp, config=pconfig)
    m = mirror(tmp, p, config=mconfig)
    m.wait_caught_up(p)
    return p, m


def test_min_version_parked_then_answered(tmp):
    p, m = pair(tmp)
    pc = p.client()
    pc.mkdir("/d")
    st = m.wait_caught_up(p)
    v = st["applied_version"]
    c = m.client()
    # Ask for the next version, which does not exist yet.
    t0 = time.monotonic()
    rid = c.send(RESOLVE, {"path": "/d/new", "min_version": v + 1, "deadline_ms": 20000})
    mp.wait_until(lambda: m.metrics()["mp_mirror_parked_reads"] == 1, timeout=10,
                  what="the read parked")
    assert m.status()["parked_reads"] == 1
    # The connection still answers other requests meanwhile.
    r = c.read(VERSION, {})
    assert r["version"] == v, r
    w = pc.create("/d/new", size=7)["version"]
    assert w == v + 1
    t, id_, b = c.recv(timeout=20)
    elapsed = time.monotonic() - t0
    assert t == REPLY and id_ == rid, (t, id_, b)
    assert b["version"] >= v + 1 and b["node"][mp.N_NAME] == "new", b
    assert b["node"][mp.N_SIZE] == 7, b
    assert elapsed < 19, "answered only at the deadline"
    assert m.metrics()["mp_mirror_parked_reads"] == 0
    # Several parked reads on several connections, each answered once its
    # version arrives (not before).
    cs = [m.client() for _ in range(4)]
    ids = []
    for k, cc in enumerate(cs):
        ids.append(cc.send(RESOLVE, {"path": "/d/g%d" % k, "min_version": w + 1 + k,
                                     "deadline_ms": 20000}))
    mp.wait_until(lambda: m.metrics()["mp_mirror_parked_reads"] == 4, timeout=10,
                  what="four parked reads")
    for k in range(4):
        wv = pc.create("/d/g%d" % k)["version"]
        assert wv == w + 1 + k
        t, id_, b = cs[k].recv(timeout=20)
        assert t == REPLY and id_ == ids[k] and b["version"] >= wv, (k, t, b)
        assert b["node"][mp.N_NAME] == "g%d" % k, b
    for cc in cs:
        cc.close()
    # A parked read whose client goes away is dropped, not answered into
    # the void.
    gone = m.client()
    gone.send(RESOLVE, {"path": "/", "min_version": 10 ** 9, "deadline_ms": 30000})
    mp.wait_until(lambda: m.metrics()["mp_mirror_parked_reads"] == 1, timeout=10,
                  what="the read parked")
    gone.close()
    pc.create("/d/wake")
    mp.wait_until(lambda: m.metrics()["mp_mirror_parked_reads"] == 0, timeout=10,
                  what="the abandoned read dropped")
    assert m.running()
    c.close()
    pc.close()
    m.stop()
    p.stop()


def test_stale_after_deadline(tmp):
    p, m = pair(tmp, mconfig={"read_deadline": "300ms"})
    pc = p.client()
    pc.mkdir("/d")
    v = m.wait_caught_up(p)["applied_version"]
    c = m.client()
    before = m.metrics()["mp_mirror_stale_reads_total"]
    t0 = time.monotonic()
    e = c.error("ESTALE", RESOLVE, {"path": "/d", "min_version": v + 1000, "deadline_ms": 200},
                contains="min_version")
    elapsed = time.monotonic() - t0
    assert 0.2 <= elapsed < 1.5, "ESTALE after %.3f s for a 200 ms deadline" % elapsed
    assert e["version"] == v, "ESTALE carries version %r, the mirror is at %d" % (e["version"], v)
    assert str(v) in e["message"], e
    # The configured read_deadline when the read names none.
    t0 = time.monotonic()
    c.error("ESTALE", READDIR, {"path": "/", "min_version": v + 1})
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 1.5, "ESTALE after %.3f s for read_deadline 300ms" % elapsed
    # deadline_ms 0: at once.
    t0 = time.monotonic()
    c.error("ESTALE", GETATTR, {"ino": 1, "min_version": v + 1, "deadline_ms": 0})
    assert time.monotonic() - t0 < 0.5
    assert m.metrics()["mp_mirror_stale_reads_total"] == before + 3
    # Bad fields.
    c.error("EINVAL", RESOLVE, {"path": "/", "min_version": "1"}, contains="min_version")
    c.error("EINVAL", RESOLVE, {"path": "/", "min_version": -1}, contains="min_version")
    c.error("EINVAL", RESOLVE, {"path": "/", "deadline_ms": 60001}, contains="deadline_ms")
    # min_version at or below the applied version: at once.
    r = c.read(RESOLVE, {"path": "/d"}, min_version=v, deadline_ms=0)
    assert r["version"] == v
    c.close()
    pc.close()
    m.stop()
    p.stop()


def test_never_below_min_version(tmp):
    p, m = pair(tmp)
    pc = p.client()
    pc.mkdir("/loop")
    dir_ino = pc.resolve("/loop")[mp.N_INO]
    m.wait_caught_up(p)
    c = m.client()
    for i in range(500):
        name = "f%d" % i
        r = pc.create("/loop/" + name, size=i)
        v, ino = r["version"], r["node"][mp.N_INO]
        k = i % 4
        if k == 0:
            b = c.read(RESOLVE, {"path": "/loop/" + name}, min_version=v, deadline_ms=10000)
            node = b["node"]
        elif k == 1:
            b = c.read(LOOKUP, {"parent": dir_ino, "name": name}, min_version=v,
                       deadline_ms=10000)
            node = b["node"]
        elif k == 2:
            b = c.read(GETATTR, {"ino": ino}, min_version=v, deadline_ms=10000)
            node = b["node"]
        else:
            b = c.read(READDIR, {"path": "/loop", "cursor": "f%d" % (i - 1) if i else None,
                                 "limit": 1}, min_version=v, deadline_ms=10000)
            assert b["entries"], "READDIR at version %d lacks %s" % (b["version"], name)
            node = b["entries"][0]
        assert b["version"] >= v, "answered at version %d below min_version %d" % (
            b["version"], v)
        assert node[mp.N_INO] == ino and node[mp.N_NAME] == name and node[mp.N_SIZE] == i, (
            i, node)
    assert m.metrics()["mp_mirror_stale_reads_total"] == 0
    c.close()
    pc.close()
    m.stop()
    p.stop()


# ---------------------------------------------------------------- staleness

FAST_BEAT = {"heartbeat_interval": "100ms"}
READS = [(VERSION, {}), (LOOKUP, {"parent": mp.ROOT, "name": "d"}), (GETATTR, {"ino": mp.ROOT}),
         (RESOLVE, {"path": "/d"}), (READDIR, {"path": "/"})]


def with_bound(body, ms):
    b = dict(body)
    b["max_staleness_ms"] = ms
    return b


def test_version_fields(tmp):
    p, m = pair(tmp, pconfig=FAST_BEAT)
    pc = p.client()
    pc.mkdir("/d")
    v = m.wait_caught_up(p)["applied_version"]
    pv = pc.read(VERSION, {})
    assert pv["role"] == "primary" and pv["staleness_ms"] == 0, pv
    assert pv["primary_version"] == pv["version"] == v, pv
    assert "site" not in pv, pv
    c = m.client()
    samples = []
    for _ in range(20):
        r = c.read(VERSION, {})
        assert r["role"] == "mirror" and r["site"] == m.site, r
        assert r["cluster_id"] == pv["cluster_id"], r
        assert r["version"] == v and r["primary_version"] == v, (r, v)
        samples.append(r["staleness_ms"])
        time.sleep(0.05)
    # Heartbeats every 100 ms keep the replica's staleness well under a
    # second; the clocks are the same machine's.
    assert all(isinstance(s, int) and 0 <= s < 1000 for s in samples), samples
    # primary_version follows the primary.
    w = pc.create("/d/f")["version"]
    m.wait_caught_up(p)
    r = c.read(VERSION, {})
    assert r["version"] == w and r["primary_version"] == w, (r, w)
    # A replica loaded from its journal that has not heard from an
    # upstream since: staleness unknown, so a bounded read goes to the
    # primary; an unbounded one is answered from the replica.
    c.close()
    pc.close()
    p.stop()
    m.restart()
    c = m.client()
    r = c.read(VERSION, {})
    assert r["staleness_ms"] == -1 and r["version"] == w and r["primary_version"] == w, r
    c.error("ESTALE", RESOLVE, {"path": "/d/f", "max_staleness_ms": 86400000},
            contains=[m.site, "unknown", "max_staleness_ms 86400000"])
    assert c.resolve("/d/f")[mp.N_NAME] == "f"
    c.close()
    m.stop()
    # A mirror still bootstrapping refuses a bounded read at once rather
    # than park it.
    n = mirror(tmp, p, name="mirror-new")
    c = n.client()
    t0 = time.monotonic()
    c.error("ESTALE", RESOLVE, {"path": "/", "max_staleness_ms": 60000, "deadline_ms": 5000},
            contains=["mirror-new", "bootstrapping", "max_staleness_ms 60000"])
    assert time.monotonic() - t0 < 2, "the bounded read waited"
    c.close()
    n.stop()


def test_max_staleness(tmp):
    p, m = pair(tmp, pconfig=FAST_BEAT)
    pc = p.client()
    pc.mkdir("/d")
    v = m.wait_caught_up(p)["applied_version"]
    c = m.client()
    # Heartbeats flow: bounded reads of every kind are answered.
    for t, body in READS:
        r = c.read(t, with_bound(body, 1000))
        assert r["version"] == v, r
    assert c.read(RESOLVE, {"path": "/d"}, min_version=v)["version"] == v
    # Garbage bounds.
    for bad in ["500", -1, 86400001, 2 ** 64 - 1, 1.5, [500]]:
        c.error("EINVAL", RESOLVE, {"path": "/d", "max_staleness_ms": bad},
                contains="max_staleness_ms")
    c.read(RESOLVE, {"path": "/d", "max_staleness_ms": 86400000})
    # The primary stops answering (and heartbeating): within a couple of
    # seconds bounded reads are refused, at once and naming the site, its
    # staleness and the bound; unbounded ones are still answered.
    p.signal(mp.signal.SIGSTOP)
    try:
        def refused():
            t, b = c.call(RESOLVE, {"path": "/d", "max_staleness_ms": 500})
            return b if t == mp.ERROR else None

        e = mp.wait_until(refused, timeout=10, what="ESTALE for max_staleness_ms 500")
        assert e["code"] == "ESTALE" and e["version"] == v, e
        msg = e["message"]
        assert m.site in msg and "max_staleness_ms 500" in msg and "primary" in msg, msg
        stale_ms = int(msg.split(" is ")[1].split(" ms stale")[0])
        assert stale_ms > 500, msg
        for t, body in READS:
            t0 = time.monotonic()
            c.error("ESTALE", t, with_bound(body, 500), contains=[m.site, "ms stale"])
            assert time.monotonic() - t0 < 0.5
        # min_version met, but too stale all the same.
        c.error("ESTALE", RESOLVE, {"path": "/d", "min_version": v, "max_staleness_ms": 500})
        r = c.read(VERSION, {})
        assert r["staleness_ms"] > 500 and r["version"] == v, r
        assert c.resolve("/d")[mp.N_NAME] == "d"
        assert c.read(RESOLVE, {"path": "/d", "max_staleness_ms": 600000})["version"] == v
    finally:
        p.signal(mp.signal.SIGCONT)
    # The primary is back: fresh again.
    mp.wait_until(lambda: c.call(RESOLVE, {"path": "/d", "max_staleness_ms": 500})[0] == REPLY,
                  timeout=20, what="bounded reads answered again")
    pc.create("/d/back")
    m.wait_caught_up(p)
    assert c.read(RESOLVE, {"path": "/d/back", "max_staleness_ms": 1000})["node"][mp.N_NAME] \
        == "back"
    c.close()
    pc.close()
    m.stop()
    p.stop()


def test_writes_refused(tmp):
    p, m = pair(tmp)
    pc = p.client()
    pc.mkdir("/d")
    pc.create("/d/f")
    v = m.wait_caught_up(p)["applied_version"]
    c = m.client()
    for t, body in [(MKDIR, {"path": "/x"}), (CREATE, {"path": "/d/g"}),
                    (SYMLINK, {"path": "/s", "target": "/d"}),
                    (RENAME, {"from": "/d/f", "to": "/d/h"}), (UNLINK, {"path": "/d/f"}),
                    (RMDIR, {"path": "/d"}), (SETATTR, {"path": "/d", "mode": 0o700}),
                    (BATCH, {"ops": [[MKDIR, {"path": "/y"}]]})]:
        e = c.error("EROFS", t, body, contains=["read-only", p.address])
        assert e["version"] == v, e
    assert c.read(VERSION, {})["version"] == v
    assert c.resolve("/d/f")[mp.N_NAME] == "f"
    assert p.status()["version"] == v, "a refused write reached the primary"
    c.close()
    pc.close()
    m.stop()
    p.stop()


# ---------------------------------------------------------------- tokens

def write_secret(tmp):
    path = os.path.join(tmp, "secret")
    with open(path, "wb") as f:
        f.write(b"0123456789abcdef0123456789abcdef\n")
    os.chmod(path, 0o600)
    return path


def make_token(secret, *args):
    rc, out, err = mp.run_primary(["token", "create"] + list(args) + ["--secret-file", secret])
    assert rc == 0, "token create %s failed (%d): %s" % (" ".join(args), rc, err)
    return out.strip()


def token_file(tmp, name, tok):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(tok + "\n")
    os.chmod(path, 0o600)
    return path


def test_tokens(tmp):
    secret = write_secret(tmp)
    p = mp.Primary(tmp, config={"secret_file": secret})
    admin = p.client(token=make_token(secret, "--client", "admin", "--read-write"))
    admin.mkdir("/a")
    admin.create("/a/f")
    admin.mkdir("/b")
    admin.create("/b/secret")
    site_a = token_file(tmp, "site-a.token", make_token(secret, "--site", "mirror-a"))
    a = mirror(tmp, p, "mirror-a", config={"secret_file": secret, "token_file": site_a})
    a.wait_caught_up(p)
    assert any(s["site"] == "mirror-a" for s in p.status()["subscribers"])
    # A cascaded mirror presents its own site token to mirror A.
    site_b = token_file(tmp, "site-b.token", make_token(secret, "--site", "mirror-b"))
    b = mirror(tmp, a, "mirror-b", config={"secret_file": secret, "token_file": site_b})
    b.wait_caught_up(p)
    assert any(s["site"] == "mirror-b" for s in a.status()["subscribers"]), a.status()
    # Clients at the mirror: a token is required; a client token limited
    # to /a reads /a and its ancestors only.
    c = mp.Client(a.port, role="mirror")
    c.error("EACCES", HELLO, {"proto": 1}, contains="token")
    c.close()
    c = a.client(token=make_token(secret, "--client", "c1", "--subtree", "/a", "--read-only"))
    assert c.resolve("/a/f")[mp.N_NAME] == "f"
    assert c.resolve("/")[mp.N_INO] == mp.ROOT
    names = [n[mp.N_NAME] for n in c.readdir(path="/")["entries"]]
    assert names == ["a"], "readdir of / shows %r to a token of /a" % names
    c.error("EACCES", RESOLVE, {"path": "/b/secret"})
    c.error("EACCES", READDIR, {"path": "/b"})
    c.error("EACCES", RESOLVE, {"path": "/b"}, )
    b_ino = admin.resolve("/b/secret")[mp.N_INO]
    c.error("EACCES", GETATTR, {"ino": b_ino})
    c.error("EACCES", GETATTR, {"ino": b_ino, "min_version": 1})
    # A client token cannot subscribe at a mirror either.
    c.error("EACCES", SUBSCRIBE, {"from": 0}, contains="site token")
    c.close()
    # A mirror without a token, or with a client token, does not get in,
    # says why, and keeps trying.
    bad = token_file(tmp, "client.token", make_token(secret, "--client", "x", "--read-only"))
    n1 = mirror(tmp, p, "mirror-notoken", config={"secret_file": secret})
    n2 = mirror(tmp, p, "mirror-clienttoken", config={"secret_file": secret, "token_file": bad})
    for n in (n1, n2):
        st = n.wait_state(lambda st: st["reconnects"] >= 3, timeout=30, what="retries")
        assert st["applied_version"] == 0 and st["state"] != "live", st
        assert n.healthz()[0] == 503
    n1.wait_log("token")
    n2.wait_log("site token")
    sites = [s["site"] for s in p.status()["subscribers"]]
    assert "mirror-notoken" not in sites and "x" not in sites, sites
    for d in (n2, n1, b, a, p):
        d.stop()
    admin.close()


# ---------------------------------------------------------------- frames

def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def packb(o):
    return msgpack.packb(o, use_bin_type=True)


def expect_error(c, code, contains, id_=None):
    t, rid, b = c.recv()
    assert t == ERROR, "expected ERROR %s, got %r %r" % (code, t, b)
    assert b["code"] == code, "expected %s, got %s: %s" % (code, b["code"], b["message"])
    for s in [contains] if isinstance(contains, str) else contains:
        assert s.lower() in b["message"].lower(), "message %r lacks %r" % (b["message"], s)
    if id_ is not None:
        assert rid == id_, "error id %r, expected %r" % (rid, id_)
    return b


def nested(depth):
    o = 1
    for _ in range(depth):
        o = [o]
    return o


def test_malformed_frames(tmp):
    p, m = pair(tmp, mconfig={"max_frame_bytes": "64KiB"})
    pc = p.client()
    pc.mkdir("/d")
    v = m.wait_caught_up(p)["applied_version"]
    other = m.client()
    c = m.client()
    cases = [
        (b"\xc1", "invalid msgpack"),
        (b"\x93\x01\x02", "declares 3 items"),
        (packb([VERSION, 1, {}]) + b"\x00", "trailing"),
        (packb({"type": 10}), "[type, id, body]"),
        (packb([VERSION, 1]), "[type, id, body]"),
        (packb("hello"), "[type, id, body]"),
        (packb([-1, 1, {}]), "type"),
        (packb([VERSION, "x", {}]), "id"),
        (packb([VERSION, 1, {1: 2}]), "keys"),
        (b"", "truncated"),
        (packb([VERSION, 1, {"x": nested(100)}]), "nested"),
    ]
    for payload, why in cases:
        c.send_raw(frame(payload))
        expect_error(c, "EPROTO", why)
        assert other.read(VERSION, {})["version"] == v
    # The connection goes on after each of them.
    assert c.read(VERSION, {})["version"] == v
    c.error("EPROTO", 99, {}, contains="unknown message type 99")
    c.error("EPROTO", mp.CHANGES, {})
    c.error("EPROTO", mp.ACK, {"version": 1})
    c.error("EINVAL", RESOLVE, {"path": 5}, contains="path")
    c.error("EINVAL", READDIR, {"path": "/", "limit": "10"}, contains="limit")
    c.error("EINVAL", SUBSCRIBE, {"from": "0"}, contains="from")
    assert m.metrics()["mp_mirror_frames_rejected_total"] >= len(cases)
    # Before HELLO.
    c2 = mp.Client(m.port, role="mirror")
    c2.error("EPROTO", VERSION, {}, contains="HELLO")
    c2.error("EPROTO", HELLO, {"proto": 2}, contains="version")
    c2.error("EPERM", HELLO, {"proto": 1, "cluster_id": "another"}, contains="another")
    hello = c2.hello(cluster_id=p.status()["cluster_id"])
    assert hello["cluster_id"] == p.status()["cluster_id"] and hello["version"] == v, hello
    c2.close()
    # Oversized: E2BIG naming the limit, then closed, without waiting for
    # the body.
    c3 = m.client()
    c3.send_raw(struct.pack(">I", 65536 + 1) + b"\x93")
    frames = c3.expect_closed()
    assert [f[2]["code"] for f in frames] == ["E2BIG"], frames
    assert "65536" in frames[0][2]["message"], frames
    c3.close()
    c4 = m.client()
    c4.send_raw(b"\xff\xff\xff\xff")
    assert [f[2]["code"] for f in c4.expect_closed()] == ["E2BIG"]
    c4.close()
    # Exactly the limit is fine (a read with padding).
    c5 = m.client()
    body = {"path": "/d", "pad": b""}
    body["pad"] = b"x" * (65536 - len(packb([RESOLVE, 1, body])) - 2)
    while len(packb([RESOLVE, 1, body])) < 65536:
        body["pad"] += b"x"
    payload = packb([RESOLVE, 1, body])
    assert len(payload) == 65536, len(payload)
    c5.send_raw(frame(payload))
    t, rid, b = c5.recv()
    assert t == REPLY and b["node"][mp.N_NAME] == "d", (t, b)
    c5.close()
    # Garbage bytes and a half frame, then gone.
    g = mp.Client(m.port)
    g.send_raw(os.urandom(3) + b"\x00" + os.urandom(200))
    g.close()
    h = mp.Client(m.port)
    h.send_raw(frame(packb([HELLO, 1, {"proto": 1}]))[:6])
    h.close()
    m.wait_log("exceeds the limit")
    # Still following the primary and serving.
    pc.create("/d/after")
    m.wait_caught_up(p)
    assert other.resolve("/d/after")[mp.N_NAME] == "after"
    other.close()
    c.close()
    pc.close()
    m.stop()
    p.stop()


def test_subscribers_at_a_mirror(tmp):
    """A Python subscriber at the mirror gets exactly the primary's change
    records (digests checked per record), from 0 and from the middle."""
    p = mp.Primary(tmp)
    pc = p.client()
    for i in range(30):
        pc.create("/f%d" % i, size=i)
    m = mirror(tmp, p)
    m.wait_caught_up(p)
    sp = mp.Subscriber(p.port)
    sp.subscribe(0, site="py-primary")
    sm = mp.Subscriber(m.port, role="mirror")
    r = sm.subscribe(0, site="py-mirror")
    assert r["snapshot"] is False, r
    for i in range(30):
        pc.mkdir("/d%d" % i)
    v = pc.version()
    sp.pump(until=v)
    sm.pump(until=v)
    assert sm.records == sp.records, "the mirror re-serves different change records"
    assert sm.model.digest().hex() == p.status()["digest"]
    mp.wait_until(lambda: any(s["site"] == "py-mirror" and s["acked_version"] == v
                              for s in m.status()["subscribers"]), timeout=10,
                  what="the subscriber's ACK at the mirror")
    final = sp.model.digest()
    at40 = mp.NamespaceModel()
    for ver in range(1, 41):
        at40.apply_record(sp.records[ver])
    # From the middle with the right digest: no snapshot.
    s2 = mp.Subscriber(m.port, model=at40.copy(), role="mirror")
    r = s2.subscribe(40, digest=at40.digest(), site="py-mid")
    assert r["snapshot"] is False, r
    s2.pump(until=v)
    assert s2.model.digest() == final and not s2.snapshots
    assert min(s2.records) == 41, min(s2.records)
    # From the middle with a wrong digest: a snapshot of the mirror's state.
    s3 = mp.Subscriber(m.port, model=at40.copy(), role="mirror")
    r = s3.subscribe(40, digest=b"\x00" * 16, site="py-wrong")
    assert r["snapshot"] is True, r
    s3.pump(until=v)
    assert len(s3.snapshots) == 1 and s3.model.digest() == final
    # Ahead of the mirror: ESTALE.
    s4 = mp.Subscriber(m.port, role="mirror")
    try:
        s4.subscribe(v + 5, site="py-ahead")
        raise AssertionError("SUBSCRIBE ahead of the mirror was accepted")
    except mp.MPError as e:
        assert e.code == "ESTALE", e
    for s in (sp, sm, s2, s3, s4):
        s.close()
    pc.close()
    m.stop()
    p.stop()


def test_sighup_reload(tmp):
    p = mp.Primary(tmp)
    cfg = dict(MIRROR_CONFIG, read_deadline="200ms")
    m = mp.Mirror(tmp, p, config=cfg)
    m.wait_caught_up(p)
    v = m.status()["applied_version"]
    c = m.client()

    def stale_after():
        t0 = time.monotonic()
        c.error("ESTALE", RESOLVE, {"path": "/", "min_version": v + 100})
        return time.monotonic() - t0

    assert 0.2 <= stale_after() < 1.5
    cfg["read_deadline"] = "700ms"
    m.write_config(cfg)
    off = m.log_size()
    m.signal(mp.signal.SIGHUP)
    m.wait_log("configuration reloaded", since=off)
    assert 0.7 <= stale_after() < 2.5
    # A bad file keeps the running configuration.
    m.write_config("read_deadline: [1, 2\n")
    off = m.log_size()
    m.signal(mp.signal.SIGHUP)
    m.wait_log("reload failed", since=off)
    assert 0.7 <= stale_after() < 2.5
    # Serving and following all along, on the same connection.
    pc = p.client()
    pc.mkdir("/after")
    st = m.wait_caught_up(p)
    assert st["state"] == "live"
    assert c.resolve("/after")[mp.N_NAME] == "after"
    pc.close()
    c.close()
    m.write_config(cfg)
    m.stop()
    p.stop()


def test_config_check(tmp):
    rc, out, err = mp.run_mirror(["-n", "--site", "x", "--upstream", "127.0.0.1:1"])
    assert rc == 0 and "configuration OK" in out, (rc, out, err)
    for args, why in [([], "site"),
                      (["--site", "x", "--upstream", "nohostport"], "HOST:PORT"),
                      (["--site", "x", "--upstream", "127.0.0.1:1", "--log-level", "loud"],
                       "log_level")]:
        rc, out, err = mp.run_mirror(["-n"] + args)
        assert rc != 0 and why.lower() in err.lower(), (args, rc, out, err)


if __name__ == "__main__":
    mp.main(globals())
