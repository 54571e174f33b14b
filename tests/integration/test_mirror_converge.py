#!/usr/bin/python3
"""mp-mirror under write load: two mirrors, one cascading from the other,
end at the primary's version and digest while 16 writers hammer the
primary; a mirror killed with -9 in the middle of applying comes back from
its own journal (no snapshot), loses and repeats no version and resumes from
what it had made durable. Runs against SQLite, or PostgreSQL with
MP_TEST_STORE=postgres."""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402

WRITERS = 16
# Reconnect quickly: tests wait for catching up, not for back-off.
MIRROR_CONFIG = {"reconnect": {"min": "50ms", "max": "500ms"}}


def start_primary(tmp, **kw):
    return mp.Primary(tmp, store=mp.fresh_store("mirror"), **kw)


def mirror(tmp, upstream, name, config=None, **kw):
    cfg = dict(MIRROR_CONFIG)
    cfg.update(config or {})
    return mp.Mirror(tmp, upstream, name=name, config=cfg, **kw)


def assert_serves(m, primary):
    """m's replica, read back over the wire and hashed in Python, is the
    primary's namespace at its version (not just the digest m reports)."""
    want_v, want_d = mp.version_and_digest(primary)
    c = m.client()
    try:
        r = c.read(mp.VERSION, {})
        assert r["version"] == want_v, "%s answers at version %d, the primary is at %d" % (
            m.name, r["version"], want_v)
        nodes = mp.all_nodes(c)
        assert mp.digest_of(nodes).hex() == want_d, (
            "%s serves %d nodes hashing to %s; the primary's digest is %s" % (
                m.name, len(nodes), mp.digest_of(nodes).hex(), want_d))
        pc = primary.client()
        pnodes = {n[mp.N_INO]: n for n in mp.all_nodes(pc)}
        pc.close()
        assert {n[mp.N_INO]: n for n in nodes} == pnodes, "%s's nodes differ" % m.name
    finally:
        c.close()


def site(daemon, name):
    for s in daemon.status()["subscribers"]:
        if s["site"] == name:
            return s
    return None


def test_cascade_converges_under_writers(tmp):
    p = start_primary(tmp)
    c = p.client()
    c.mkdir("/before")
    for i in range(30):
        c.create("/before/f%d" % i, size=i)
    a = mirror(tmp, p, "mirror-a")
    b = mirror(tmp, a, "mirror-b")
    a.wait_caught_up(p, timeout=60)
    b.wait_caught_up(p, timeout=60)
    storm = mp.Storm(p.port, "/storm", WRITERS).start()
    # Both mirrors follow while the storm runs (they are applying, not
    # merely catching up at the end).
    t_end = time.monotonic() + 5
    seen_a, seen_b = set(), set()
    while time.monotonic() < t_end:
        seen_a.add(a.status()["applied_version"])
        seen_b.add(b.status()["applied_version"])
        time.sleep(0.2)
    acked = storm.stop()
    assert len(acked) >= WRITERS * 5, "only %d writes acknowledged" % len(acked)
    assert len(set(acked)) == len(acked), "two acknowledged writes share a version"
    assert len(seen_a) > 2 and len(seen_b) > 2, (
        "the mirrors did not move during the storm: %r %r" % (sorted(seen_a), sorted(seen_b)))
    v, d = mp.version_and_digest(p)
    assert v >= max(acked)
    sa = a.wait_caught_up(p, timeout=120)
    sb = b.wait_caught_up(p, timeout=120)
    for st, name, up in ((sa, "mirror-a", p), (sb, "mirror-b", a)):
        assert st["cluster_id"] == p.status()["cluster_id"], st
        assert st["upstream"] == up.address, st
        assert st["state"] == "live" and st["lag_versions"] == 0, st
        assert st["entries"] == p.status()["entries"], (st, p.status()["entries"])
    assert_serves(a, p)
    assert_serves(b, p)
    # Every version was applied exactly once, and none was skipped.
    for m in (a, b):
        mt = m.metrics()
        assert mt["mp_mirror_applied_versions_total"] == v, (m.name, mt)
        assert mt["mp_mirror_bootstraps_total"] == 0, (m.name, mt)
        assert mt["mp_mirror_divergences_total"] == 0, (m.name, mt)
        assert mt["mp_mirror_applied_version"] == v, (m.name, mt)
    # Each upstream hears the acknowledgements of its subscriber.
    mp.wait_until(lambda: (site(p, "mirror-a") or {}).get("acked_version") == v, timeout=30,
                  what="mirror-a acknowledging version %d at the primary" % v)
    mp.wait_until(lambda: (site(a, "mirror-b") or {}).get("acked_version") == v, timeout=30,
                  what="mirror-b acknowledging version %d at mirror-a" % v)
    assert a.status()["durable_version"] == v and b.status()["durable_version"] == v
    c.close()
    b.stop()
    a.stop()
    p.stop()


def loaded_line(m):
    """(entries, version) of the "loaded N entries at version V from DIR"
    line of m's current run."""
    text = m.log_since_start()
    found = re.search(r"loaded (\d+) entries at version (\d+) from (\S+)", text)
    assert found, "%s did not load its replica from its data directory:\n%s" % (
        m.name, text[-3000:])
    assert found.group(3) == m.data_dir, found.group(0)
    return int(found.group(1)), int(found.group(2))


def subscribed_from(p, site_name, since):
    """Versions site_name subscribed from at p, in p's log after offset since."""
    return [(int(x.group(1)), x.group(2)) for x in re.finditer(
        r"site %s \([^)]*\) subscribed from version (\d+)([^\n]*)" % re.escape(site_name),
        p.log()[since:])]


def test_kill9_mid_apply(tmp):
    p = start_primary(tmp)
    # Small snapshot_every: snapshots (forked) and new journals come and go
    # while the kills happen.
    m = mirror(tmp, p, "mirror-k", config={"snapshot_every": "256KiB"})
    m.wait_caught_up(p, timeout=60)
    for rnd in range(3):
        storm = mp.Storm(p.port, "/r%d" % rnd, WRITERS).start()
        # Let it apply for a while, then kill it while versions stream in.
        v0 = m.status()["applied_version"]
        mp.wait_until(lambda: m.status()["applied_version"] > v0 + 200, timeout=60,
                      what="mirror-k applying the storm")
        time.sleep(1.0 + rnd * 0.5)
        before = m.status()
        assert before["applied_version"] > 0, before
        durable_before = before["durable_version"]
        m.kill9()
        # The storm goes on while the mirror is down.
        time.sleep(0.5)
        offset = len(p.log())
        m.start()
        entries, loaded = loaded_line(m)
        assert loaded >= durable_before, (
            "round %d: loaded version %d, but %d was durable before the kill" % (
                rnd, loaded, durable_before))
        acked = storm.stop()
        assert acked, "no write acknowledged in round %d" % rnd
        v, _ = mp.version_and_digest(p)
        assert max(acked) <= v
        m.wait_caught_up(p, timeout=120)
        mt = m.metrics()
        # No snapshot: the journal was enough.
        assert mt["mp_mirror_bootstraps_total"] == 0, (rnd, mt)
        assert mt["mp_mirror_divergences_total"] == 0, (rnd, mt)
        assert "bootstrapped" not in m.log_since_start(), m.log_since_start()[-3000:]
        # It resumed from what it had: the primary saw a subscription from
        # the loaded version, and every later version was applied once.
        subs = subscribed_from(p, "mirror-k", offset)
        assert subs and subs[0][0] == loaded and "snapshot" not in subs[0][1], (
            "round %d: loaded %d, the primary saw subscriptions %r" % (rnd, loaded, subs))
        assert mt["mp_mirror_applied_versions_total"] == v - loaded, (
            "round %d: loaded %d, primary at %d, applied %d versions" % (
                rnd, loaded, v, mt["mp_mirror_applied_versions_total"]))
        mp.wait_until(lambda: m.status()["durable_version"] == v, timeout=30,
                      what="round %d: durable_version reaching %d" % (rnd, v))
        assert_serves(m, p)
    m.stop()
    p.stop()


if __name__ == "__main__":
    mp.main(globals())
