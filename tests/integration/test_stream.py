#!/usr/bin/python3
"""The change stream: a Python mirror subscribes, applies CHANGES and
snapshots, checks every record's digest, ACKs, and ends with the primary's
digest. Runs against SQLite, or PostgreSQL with MP_TEST_STORE=postgres."""

import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from mp import CREATE, MKDIR, UNLINK  # noqa: E402


def start(tmp, **kw):
    return mp.Primary(tmp, store=mp.fresh_store("stream"), **kw)


def write_some(c, tag, n):
    """n versions of assorted writes under /tag; returns the last version."""
    v = c.mkdir("/" + tag, parents=True)["version"]
    for i in range(n - 1):
        k = i % 6
        base = "/%s/e%d" % (tag, i // 6)
        if k == 0:
            v = c.mkdir(base)["version"]
        elif k == 1:
            v = c.create(base + "/f", size=i, layout=mp.layout(["b", "k%d" % i, "e", 0, i]))[
                "version"]
        elif k == 2:
            v = c.symlink(base + "/s", "f")["version"]
        elif k == 3:
            v = c.rename(base + "/f", base + "/g")["version"]
        elif k == 4:
            v = c.setattr(base + "/g", mode=0o600, mtime=i)["version"]
        else:
            v = c.batch([(UNLINK, {"path": base + "/s"}), (MKDIR, {"path": base + "/sub"}),
                         (CREATE, {"path": base + "/sub/x"})])["version"]
    return v


def assert_same(p, c, model):
    """The model equals the primary's namespace, node for node."""
    st = p.status()
    assert model.version == st["version"], (model.version, st["version"])
    assert model.digest().hex() == st["digest"], "mirror digest %s, primary %s" % (
        model.digest().hex(), st["digest"])
    nodes = {n[mp.N_INO]: n for n in mp.all_nodes(c)}
    assert nodes == model.nodes, "the mirror's nodes differ from the primary's"
    model.check_tree()


def site_status(p, name):
    for s in p.status()["subscribers"]:
        if s["site"] == name:
            return s
    raise AssertionError("site %s not in /status: %r" % (name, p.status()["subscribers"]))


def test_from_zero_with_writes_before_and_during(tmp):
    p = start(tmp)
    c = p.client()
    v0 = write_some(c, "before", 50)
    s = mp.Subscriber(p.port)
    r = s.subscribe(0, site="m1")
    assert r["snapshot"] is False and r["version"] == v0, r
    done = []
    w = threading.Thread(target=lambda: done.append(write_some(p.client(), "during", 150)))
    w.start()
    s.pump(until=v0, timeout=60)
    w.join(120)
    assert done, "the writer failed"
    s.pump(until=done[0], timeout=60)
    assert sorted(s.records) == list(range(1, done[0] + 1))
    assert not s.snapshots
    assert_same(p, c, s.model)
    # Acked: /status shows the site live with no lag.
    mp.wait_until(lambda: site_status(p, "m1")["acked_version"] == done[0], timeout=10,
                  what="ack visible in /status")
    st = site_status(p, "m1")
    assert st["connected"] is True and st["state"] == "live", st
    assert st["lag_versions"] == 0 and st["lag_seconds"] == 0, st
    m = p.metrics()
    assert m['mp_primary_site_lag_versions{site="m1"}'] == 0, m
    assert m["mp_primary_subscribers"] == 1, m
    # An ACK of a version never sent does not count.
    s.ack(done[0] + 100)
    s.ack(done[0] - 3)
    time.sleep(0.2)
    assert site_status(p, "m1")["acked_version"] == done[0], site_status(p, "m1")
    # Live: a write now arrives on its own.
    v = c.mkdir("/live")["version"]
    s.pump(until=v, timeout=10)
    assert_same(p, c, s.model)
    mp.wait_until(lambda: site_status(p, "m1")["acked_version"] == v, timeout=10,
                  what="ack of the live version")
    s.close()
    st = mp.wait_until(lambda: (lambda x: x if not x["connected"] else None)(
        site_status(p, "m1")), timeout=10, what="site disconnected")
    assert st["state"] == "disconnected" and st["acked_version"] == v, st
    c.close()
    p.stop()


def test_resume_from_the_middle(tmp):
    p = start(tmp)
    c = p.client()
    v1 = write_some(c, "a", 30)
    s = mp.Subscriber(p.port)
    s.subscribe(0, site="m2")
    s.pump(until=v1, timeout=30)
    saved = s.model.copy()
    s.close()
    v2 = write_some(c, "b", 40)
    # With the digest at from: no snapshot, versions from from+1.
    s = mp.Subscriber(p.port, model=saved.copy())
    r = s.subscribe(v1, digest=saved.digest(), site="m2")
    assert r["snapshot"] is False and r["from"] == v1 and r["version"] == v2, r
    s.pump(until=v2, timeout=30)
    assert min(s.records) == v1 + 1 and not s.snapshots
    assert_same(p, c, s.model)
    s.close()
    # Without a digest, and after a restart (the log now comes from the store).
    p.restart()
    c = p.client()
    v3 = write_some(c, "c", 10)
    s = mp.Subscriber(p.port, model=saved.copy())
    r = s.subscribe(v1, site="m2")
    assert r["snapshot"] is False and r["version"] == v3, r
    s.pump(until=v3, timeout=30)
    assert min(s.records) == v1 + 1 and not s.snapshots
    assert_same(p, c, s.model)
    s.close()
    c.close()
    p.stop()


def test_from_before_retention(tmp):
    p = start(tmp, config={"log_retention": {"max_versions": 10, "max_age": "0s"}})
    c = p.client()
    # Enough nodes and layout bytes for several SNAPSHOT_CHUNKs.
    c.mkdir("/bulk")
    c.batch([(CREATE, {"path": "/bulk/f%05d" % i, "size": i,
                       "layout": mp.layout(["bkt", "key/%d/%s" % (i, "x" * 300), "etag", 0, i])})
             for i in range(6000)])
    v = write_some(c, "r", 98)
    assert v == 100
    st = mp.wait_until(lambda: (lambda x: x if x["change_log"]["oldest_version"] > 1 else None)(
        p.status()), timeout=20, what="retention trimming the log")
    oldest = st["change_log"]["oldest_version"]
    assert oldest <= v - 10 + 1, "retention kept fewer than 10 versions: oldest %d" % oldest
    s = mp.Subscriber(p.port)
    r = s.subscribe(1, site="late")
    assert r["snapshot"] is True and r["version"] == v, r
    w = threading.Thread(target=lambda: write_some(p.client(), "during", 20))
    w.start()
    s.pump(until=v, timeout=30)
    assert len(s.snapshots) == 1, s.snapshots
    begin, end, count = s.snapshots[0]
    assert begin["cluster_id"] == st["cluster_id"] and begin["version"] >= v, begin
    w.join(60)
    final = c.version()
    s.pump(until=final, timeout=30)
    assert min(s.records) == begin["version"] + 1 if s.records else begin["version"] == final
    assert_same(p, c, s.model)
    assert p.metrics()["mp_primary_snapshots_total"] == 1
    # From 0 is before retention too.
    s2 = mp.Subscriber(p.port)
    assert s2.subscribe(0, site="fresh")["snapshot"] is True
    s2.pump(until=final, timeout=30)
    assert_same(p, c, s2.model)
    s2.close()
    s.close()
    c.close()
    p.stop()
    sc = p.storecheck()
    assert sc["log_oldest"] > 1 and sc["log_newest"] == final and sc["log_contiguous"], sc
    assert sc["meta_digest"] == sc["recomputed_digest"] == s.model.digest().hex(), sc


def test_lagging_site_keeps_its_place(tmp):
    """Retention keeps what a connected site has not acknowledged."""
    p = start(tmp, config={"log_retention": {"max_versions": 10, "max_age": "0s"},
                           "log_level": "debug"})
    c = p.client()
    v0 = write_some(c, "a", 5)
    s = mp.Subscriber(p.port)
    s.subscribe(0, site="slow")
    s.pump(until=v0, timeout=10)  # acks v0, then stops reading
    mp.wait_until(lambda: site_status(p, "slow")["acked_version"] == v0, what="ack of v0")
    v = write_some(c, "b", 60)
    # The next retention pass (every 5 s) trims only what slow acknowledged.
    text = p.wait_log("trimming the change log below version %d\n" % (v0 + 1), timeout=15)
    trims = [int(x) for x in re.findall(r"trimming the change log below version (\d+)", text)]
    assert max(trims) == v0 + 1, "retention trimmed below %r, site slow is at %d" % (trims, v0)
    st = mp.wait_until(lambda: (lambda x: x if x["change_log"]["oldest_version"] > 1 else None)(
        p.status()), what="the trim")
    assert st["change_log"]["oldest_version"] == v0 + 1, st["change_log"]
    s.pump(until=v, timeout=30)
    assert not s.snapshots
    assert_same(p, c, s.model)
    s.close()
    c.close()
    p.stop()


def test_heartbeat(tmp):
    p = start(tmp)
    c = p.client()
    v = write_some(c, "h", 5)
    s = mp.Subscriber(p.port)
    s.subscribe(0, site="hb")
    s.pump(until=v, timeout=10)
    # Idle: heartbeats a second apart (by the server's clock), each carrying
    # the version.
    while len(s.heartbeats) < 4:
        t, id_, b = s.c.recv(timeout=5)
        assert t == mp.HEARTBEAT, (t, b)
        s.handle(t, id_, b)
    times = [b["time"] / 1e9 for _, b in s.heartbeats]
    gaps = [y - x for x, y in zip(times, times[1:])]
    assert all(0.85 < g < 1.25 for g in gaps), "heartbeat gaps %r" % gaps
    for _, b in s.heartbeats:
        assert b["version"] == v, b
        assert abs(b["time"] / 1e9 - time.time()) < 30, b
    # A write: changes come, not a heartbeat.
    v = c.mkdir("/after")["version"]
    t, id_, b = s.c.recv(timeout=5)
    assert t == mp.CHANGES and b["versions"][0][0] == v, (t, b)
    s.close()
    c.close()
    p.stop()


def test_heartbeat_after_a_change(tmp):
    """A HEARTBEAT comes when the stream was idle for a heartbeat interval
    (1 s): within about 1.5 s of the last CHANGES, whatever the phase of the
    daemon's timer. Measured with the server's clock (record and heartbeat
    times)."""
    p = start(tmp)
    c = p.client()
    s = mp.Subscriber(p.port)
    s.subscribe(0, site="hb")
    late = []
    for i in range(6):
        time.sleep(0.17 * i)  # move the write across the timer's phase
        v = c.mkdir("/d%d" % i)["version"]
        s.pump(until=v, timeout=10)
        rec_time = s.records[v][1] / 1e9
        t, id_, b = s.c.recv(timeout=5)
        assert t == mp.HEARTBEAT, (t, b)
        gap = b["time"] / 1e9 - rec_time
        if gap > 1.5:
            late.append(round(gap, 2))
    assert not late, "heartbeats %r s after the last change (interval 1 s)" % late
    s.close()
    c.close()
    p.stop()


def test_ahead_and_divergent(tmp):
    p = start(tmp)
    c = p.client()
    v = write_some(c, "x", 20)
    s = mp.Subscriber(p.port)
    try:
        s.subscribe(v + 5, site="ahead")
        raise AssertionError("SUBSCRIBE from ahead of the primary was accepted")
    except mp.MPError as e:
        assert e.code == "ESTALE" and "ahead" in e.message and str(v + 5) in e.message, e
    # The connection may subscribe properly after that.
    assert s.subscribe(0, site="ahead")["snapshot"] is False
    s.pump(until=v, timeout=10)
    mid = s.model.copy()
    at10 = mp.NamespaceModel()
    for ver in range(1, 11):
        at10.apply_record(s.records[ver])
    s.close()
    # The right digest at from: no snapshot.
    for model in (at10, mid):
        s = mp.Subscriber(p.port, model=model.copy())
        assert s.subscribe(model.version, digest=model.digest(), site="ok")["snapshot"] is False
        s.pump(until=v, timeout=10)
        assert not s.snapshots and s.model.digest() == mid.digest()
        s.close()
    # A wrong digest at from: a snapshot, then the live stream.
    for frm in (v, v - 5):
        s = mp.Subscriber(p.port)
        r = s.subscribe(frm, digest=b"\x00" * 16, site="diverged")
        assert r["snapshot"] is True, "wrong digest at %d: %r" % (frm, r)
        s.pump(until=v, timeout=10)
        assert len(s.snapshots) == 1
        v2 = c.create("/x/new%d" % frm)["version"]
        s.pump(until=v2, timeout=10)
        v = v2
        assert_same(p, c, s.model)
        s.close()
    c.error("EINVAL", mp.SUBSCRIBE, {"from": 0, "digest": b"short"}, contains="digest")
    c.close()
    p.stop()


def test_divergent_after_restart(tmp):
    """After a restart the primary's in-memory log is empty: a mirror whose
    digest at a middle version differs must still get a snapshot."""
    p = start(tmp)
    c = p.client()
    v = write_some(c, "x", 20)
    c.close()
    p.restart()
    c = p.client()
    s = mp.Subscriber(p.port)
    r = s.subscribe(v - 5, digest=b"\x00" * 16, site="diverged")
    assert r["snapshot"] is True, "a wrong digest at version %d was not noticed: %r" % (
        v - 5, r)
    s.pump(until=v, timeout=10)
    assert_same(p, c, s.model)
    s.close()
    c.close()
    p.stop()


if __name__ == "__main__":
    mp.main(globals())
