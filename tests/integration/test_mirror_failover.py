#!/usr/bin/python3
"""mp-mirror and its upstreams: mirrors reconnect and catch up by themselves
when the primary restarts; with a list of upstreams a dead first one is
skipped, a mirror whose upstream mirror dies fails over along its list and
returns to the first once it is back;
/healthz turns 503 when the replica lags beyond max_lag and 200 again once
it is live."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402

MIRROR_CONFIG = {"reconnect": {"min": "50ms", "max": "500ms"}}


def mirror(tmp, upstream, name, config=None, **kw):
    cfg = dict(MIRROR_CONFIG)
    cfg.update(config or {})
    return mp.Mirror(tmp, upstream, name=name, config=cfg, **kw)


def dead_address():
    """127.0.0.1:PORT with nothing listening (bound and closed; a
    connection to it is refused)."""
    return "127.0.0.1:%d" % mp.free_port()


def write(p, tag, n):
    c = p.client()
    c.mkdir("/" + tag, parents=True)
    for i in range(n):
        c.create("/%s/f%d" % (tag, i), size=i)
    v = c.version()
    c.close()
    return v


def test_primary_restart(tmp):
    p = mp.Primary(tmp)
    write(p, "one", 20)
    a = mirror(tmp, p, "mirror-a")
    b = mirror(tmp, a, "mirror-b")
    a.wait_caught_up(p)
    b.wait_caught_up(p)
    port = p.port
    p.stop()
    # Both notice: the direct one loses its upstream; the cascaded one
    # keeps its (live) upstream mirror.
    a.wait_state(lambda st: st["state"] == "disconnected", timeout=30,
                 what="state disconnected")
    # Reads go on from the replica meanwhile.
    c = a.client()
    assert c.resolve("/one/f3")[mp.N_NAME] == "f3"
    c.close()
    r0 = a.status()["reconnects"]
    a.wait_state(lambda st: st["reconnects"] >= r0 + 2, timeout=30,
                 what="failed reconnects while the primary is down")
    p.start()
    assert p.port == port, "the primary came back on another port"
    v = write(p, "two", 30)
    a.wait_caught_up(p, timeout=60)
    b.wait_caught_up(p, timeout=60)
    sa = a.status()
    assert sa["state"] == "live" and sa["reconnects"] >= 1, sa
    assert a.metrics()["mp_mirror_reconnects_total"] >= 1
    assert a.metrics()["mp_mirror_bootstraps_total"] == 0
    # Both still serve the new writes.
    for m in (a, b):
        c = m.client()
        r = c.read(mp.RESOLVE, {"path": "/two/f29"}, min_version=v)
        assert r["version"] >= v and r["node"][mp.N_NAME] == "f29", r
        c.close()
    # And once more, while a writer keeps going: stop the primary mid-way.
    storm = mp.Storm(p.port, "/storm", 4).start()
    time.sleep(1.0)
    p.stop()
    storm.stop()
    p.start()
    write(p, "three", 5)
    a.wait_caught_up(p, timeout=60)
    b.wait_caught_up(p, timeout=60)
    b.stop()
    a.stop()
    p.stop()


def test_dead_first_upstream(tmp):
    p = mp.Primary(tmp)
    write(p, "x", 10)
    dead = dead_address()
    m = mirror(tmp, [dead, p], "mirror-f")
    st = m.wait_caught_up(p, timeout=60)
    assert st["upstream"] == p.address, st
    assert st["reconnects"] >= 1, st
    m.wait_log("upstream %s:" % dead)
    # Still following the second one.
    v = write(p, "y", 10)
    st = m.wait_caught_up(p, timeout=30)
    assert st["applied_version"] == v and st["upstream"] == p.address, st
    m.stop()
    p.stop()


def test_only_dead_upstreams(tmp):
    """Nothing reachable: the mirror keeps trying, says so, and serves no
    reads (it holds no replica yet)."""
    m = mirror(tmp, [dead_address(), dead_address()], "mirror-none",
               config={"read_deadline": "200ms"})
    st = m.wait_state(lambda st: st["reconnects"] >= 4, timeout=30, what="reconnects")
    assert st["state"] in ("disconnected", "bootstrapping"), st
    assert st["applied_version"] == 0, st
    code, body = m.healthz()
    assert code == 503, (code, body)
    c = m.client()
    e = c.error("ESTALE", mp.RESOLVE, {"path": "/"})
    assert e["version"] == 0, e
    c.close()
    m.stop()


def test_cascade_failover(tmp):
    p = mp.Primary(tmp)
    write(p, "x", 20)
    a = mirror(tmp, p, "mirror-a")
    a.wait_caught_up(p)
    # C prefers mirror A, then the primary.
    cm = mirror(tmp, [a, p], "mirror-c")
    st = cm.wait_caught_up(p)
    assert st["upstream"] == a.address, st
    assert [s["site"] for s in a.status()["subscribers"]] == ["mirror-c"], a.status()
    a.kill9()
    v = write(p, "y", 30)
    st = cm.wait_caught_up(p, timeout=60)
    assert st["upstream"] == p.address, st
    assert st["state"] == "live", st
    c = cm.client()
    assert c.read(mp.RESOLVE, {"path": "/y/f29"}, min_version=v)["node"][mp.N_NAME] == "f29"
    c.close()
    # The primary now serves it.
    assert any(s["site"] == "mirror-c" and s["connected"] for s in p.status()["subscribers"])
    # A comes back (from its journal): C, which prefers it, moves back to it
    # once it answers at C's version or later (probed every 5 s), and stays
    # correct throughout.
    a.start()
    a.wait_caught_up(p, timeout=60)
    write(p, "z", 10)
    cm.wait_caught_up(p, timeout=60)
    a.wait_caught_up(p, timeout=60)
    mp.wait_until(lambda: cm.status()["upstream"] == a.address and
                  cm.status()["upstream_state"] == "streaming", timeout=30,
                  what="mirror-c back on mirror-a")
    cm.wait_log("moving back to it")
    v = write(p, "w", 10)
    st = cm.wait_caught_up(p, timeout=60)
    assert st["upstream"] == a.address and st["state"] == "live", st
    assert cm.metrics()["mp_mirror_bootstraps_total"] == 0
    cm.stop()
    a.stop()
    p.stop()


def test_upstream_mirror_restarts(tmp):
    """B follows A only; A restarts (SIGTERM, then start) while the primary
    takes writes: B reconnects to A and ends at the primary's state without
    a snapshot of its own."""
    p = mp.Primary(tmp)
    a = mirror(tmp, p, "mirror-a")
    b = mirror(tmp, a, "mirror-b")
    storm = mp.Storm(p.port, "/s", 4).start()
    mp.wait_until(lambda: b.status()["applied_version"] > 100, timeout=60,
                  what="mirror-b following")
    a.stop()
    time.sleep(0.5)
    a.start()
    time.sleep(1.0)
    storm.stop()
    a.wait_caught_up(p, timeout=60)
    sb = b.wait_caught_up(p, timeout=60)
    assert sb["upstream"] == a.address and sb["state"] == "live", sb
    assert b.metrics()["mp_mirror_divergences_total"] == 0
    b.stop()
    a.stop()
    p.stop()


def test_healthz_lag(tmp):
    p = mp.Primary(tmp, config={"heartbeat_interval": "100ms"})
    write(p, "x", 5)
    m = mirror(tmp, p, "mirror-h",
               config={"max_lag": "1s", "upstream_timeout": "500ms"})
    m.wait_caught_up(p)
    mp.wait_until(lambda: m.healthz()[0] == 200, timeout=30, what="/healthz 200 when live")
    # Heartbeats keep it healthy while the primary is idle.
    t_end = time.monotonic() + 2.5
    while time.monotonic() < t_end:
        code, body = m.healthz()
        assert code == 200, "idle but live, /healthz said %d: %s" % (code, body)
        time.sleep(0.1)
    p.stop()
    t0 = time.monotonic()
    code, body = mp.wait_until(lambda: (lambda r: r if r[0] == 503 else None)(m.healthz()),
                               timeout=30, what="/healthz 503 once max_lag has passed")
    assert "lag" in body, body
    assert time.monotonic() - t0 >= 0.5, "503 before max_lag could have passed"
    st = m.status()
    assert st["lag_seconds"] > 1.0, st
    assert m.metrics()["mp_mirror_lag_seconds"] > 1.0
    p.start()
    write(p, "y", 5)
    m.wait_caught_up(p, timeout=60)
    mp.wait_until(lambda: m.healthz()[0] == 200, timeout=30, what="/healthz 200 again")
    assert m.status()["lag_seconds"] < 1.0
    m.stop()
    p.stop()


def test_healthz_lag_cascaded(tmp):
    """B follows A, A follows the primary. When the primary goes away, B is
    as stale as A: its /healthz must not stay 200 while A's says 503."""
    p = mp.Primary(tmp, config={"heartbeat_interval": "100ms"})
    write(p, "x", 5)
    cfg = {"max_lag": "1s", "upstream_timeout": "500ms", "heartbeat_interval": "100ms"}
    a = mirror(tmp, p, "mirror-a", config=cfg)
    b = mirror(tmp, a, "mirror-b", config=cfg)
    a.wait_caught_up(p)
    b.wait_caught_up(p)
    for m in (a, b):
        mp.wait_until(lambda: m.healthz()[0] == 200, timeout=30, what="%s healthy" % m.name)
    p.stop()
    mp.wait_until(lambda: a.healthz()[0] == 503, timeout=30, what="mirror-a lagging")
    # B holds only what A holds: it is as far behind, and must say so too
    # (well within the time A needed, and then some).
    try:
        mp.wait_until(lambda: b.healthz()[0] == 503, timeout=15, what="mirror-b lagging")
    except AssertionError:
        raise AssertionError(
            "mirror-a says %r, but mirror-b (which only has what A has) says %r; status %r" % (
                a.healthz(), b.healthz(), b.status()))
    p.start()
    write(p, "y", 5)
    a.wait_caught_up(p, timeout=60)
    b.wait_caught_up(p, timeout=60)
    for m in (a, b):
        mp.wait_until(lambda: m.healthz()[0] == 200, timeout=30, what="%s healthy" % m.name)
    b.stop()
    a.stop()
    p.stop()


if __name__ == "__main__":
    mp.main(globals())
