#!/usr/bin/python3
"""The admin endpoints, configuration reloads on SIGHUP, and a SIGTERM drain
under load."""

import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402


def test_endpoints(tmp):
    p = mp.Primary(tmp)
    code, body = p.http("GET", "/healthz")
    assert code == 200 and body.strip() == "ok", (code, body)
    c = p.client()
    hello_cluster = c.req(mp.VERSION, {})["cluster_id"]
    writes = 0
    for i in range(30):
        c.mkdir("/d%d" % i)
        writes += 1
    c.batch([(mp.CREATE, {"path": "/d0/f%d" % i}) for i in range(10)])
    writes += 1
    c.rename("/d1", "/d1")  # no version
    errors = 0
    for i in range(3):
        c.error("EEXIST", mp.MKDIR, {"path": "/d0"})
        errors += 1
    c.error("EINVAL", mp.MKDIR, {"path": "relative"})  # refused before the commit
    errors += 1

    st = p.status()
    for k in ("role", "cluster_id", "version", "digest", "entries", "store", "subscribers",
              "change_log", "connections", "draining"):
        assert k in st, "/status lacks %s: %r" % (k, st)
    assert st["role"] == "primary" and st["cluster_id"] == hello_cluster, st
    assert st["version"] == writes == c.version(), (st, writes)
    assert re.fullmatch(r"[0-9a-f]{32}", st["digest"]), st["digest"]
    nodes = mp.all_nodes(c)
    assert st["entries"] == len(nodes) == 1 + 30 + 10, st
    assert st["digest"] == mp.digest_of(nodes).hex()
    assert st["store"] == "sqlite" and st["subscribers"] == [] and st["connections"] == 1, st
    assert st["draining"] is False and st["change_log"]["oldest_version"] == 1, st

    m = p.metrics()
    assert m["mp_primary_version"] == st["version"], m
    assert m["mp_primary_writes_total"] == writes, m["mp_primary_writes_total"]
    assert m["mp_primary_write_errors_total"] == errors, m["mp_primary_write_errors_total"]
    assert m["mp_primary_namespace_entries"] == st["entries"]
    assert m["mp_primary_connections"] == 1
    for h in ("mp_primary_commit_seconds", "mp_primary_commit_batch_versions"):
        buckets = [(k, v) for k, v in m.items() if k.startswith(h + "_bucket{")]
        assert buckets, "no histogram %s" % h
        values = [v for _, v in buckets]
        assert values == sorted(values), "%s buckets not cumulative: %r" % (h, buckets)
        assert m[h + '_bucket{le="+Inf"}'] == m[h + "_count"] > 0, h
    # Each commit made at least one version; all of them add up to writes.
    assert m["mp_primary_commit_batch_versions_sum"] == writes, m
    assert m["mp_primary_commit_seconds_count"] == m["mp_primary_commit_batch_versions_count"]
    assert 0 < m["mp_primary_commit_seconds_sum"] < 60

    for method in ("POST", "PUT", "DELETE"):
        code, body = p.http(method, "/status", body=b"x")
        assert code == 405, (method, code, body)
    code, _ = p.http("GET", "/nope")
    assert code == 404, code
    code, _ = p.http("HEAD", "/healthz")
    assert code == 200
    c.close()
    p.stop()


def test_sighup_reload(tmp):
    cfg = {"log_level": "info", "max_frame_bytes": "1MiB"}
    p = mp.Primary(tmp, config=cfg)
    c = p.client()
    c.mkdir("/x")
    # Debug logs a line per connection; at info there is none (the HELLO
    # reply shows the connection was accepted).
    probe = p.client()
    probe.close()
    assert "connection from" not in p.log(), "debug line logged at level info"
    cfg["log_level"] = "debug"
    cfg["max_frame_bytes"] = "8KiB"
    p.write_config(cfg)
    mark = len(p.log())
    p.signal(signal.SIGHUP)
    p.wait_log("configuration reloaded", since=mark)
    mark = len(p.log())
    mp.Client(p.port).close()
    p.wait_log("connection from", since=mark)
    # The new frame limit holds for new frames.
    big = p.client()
    big.send_raw(mp.encode_frame(mp.MKDIR, 9, {"path": "/big", "pad": b"x" * 9000}))
    big.expect_closed()
    big.close()
    p.wait_log("exceeds the limit of 8192")
    # A broken file keeps the running configuration.
    for broken, what in [("log_level: debug\nmax_frame_bytes: 10\n", "max_frame_bytes"),
                         ("log_level: [\n", "primary.yaml"),
                         ("log_levle: info\n", "log_levle")]:
        p.write_config(broken)
        mark = len(p.log())
        p.signal(signal.SIGHUP)
        text = p.wait_log("reload failed", since=mark)[mark:]
        assert what in text, "reload failure does not name %r: %s" % (what, text)
        assert c.mkdir("/after-%d" % mark)["version"] > 1
        code, _ = p.http("GET", "/healthz")
        assert code == 200
    mark = len(p.log())
    mp.Client(p.port).close()
    p.wait_log("connection from", since=mark)  # still at debug
    # A new heartbeat interval applies at once.
    cfg["heartbeat_interval"] = "200ms"
    p.write_config(cfg)
    mark = len(p.log())
    p.signal(signal.SIGHUP)
    p.wait_log("configuration reloaded", since=mark)
    s = mp.Subscriber(p.port)
    s.subscribe(c.version(), site="hb")
    while len(s.heartbeats) < 4:
        s.handle(*s.c.recv(timeout=5))
    times = [b["time"] / 1e9 for _, b in s.heartbeats]
    gaps = [y - x for x, y in zip(times, times[1:])]
    assert all(0.1 < g < 0.4 for g in gaps), "heartbeat gaps after reload: %r" % gaps
    s.close()
    # Settings that need a restart are kept, with a warning.
    cfg["cluster_id"] = "other"
    p.write_config(cfg)
    mark = len(p.log())
    p.signal(signal.SIGHUP)
    text = p.wait_log("configuration reloaded", since=mark)[mark:]
    assert "cluster_id" in text and "restart" in text, text
    assert p.status()["cluster_id"] != "other"
    c.close()
    p.stop()


def test_sigterm_drains_writers(tmp):
    p = mp.Primary(tmp, store=mp.fresh_store("admin"))
    setup = p.client()
    setup.batch([(mp.MKDIR, {"path": "/w%d" % k}) for k in range(8)])
    setup.close()
    go, acked, failures = threading.Event(), [[] for _ in range(8)], []

    def writer(k):
        c = p.client()
        go.wait()
        i = 0
        try:
            while True:
                r = c.create("/w%d/f%d" % (k, i))
                acked[k].append((i, r["version"], r["node"][mp.N_INO]))
                i += 1
        except mp.MPError as e:
            if e.code != "ESHUTDOWN":
                failures.append(e)
        except (mp.ConnectionClosed, OSError):
            pass
        except BaseException as e:
            failures.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(8)]
    for t in threads:
        t.start()
    go.set()
    time.sleep(1.0)
    rc = p.stop(timeout=60)
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a writer hangs after SIGTERM"
    assert not failures, failures
    assert rc == 0
    text = p.log_since_start()
    assert "SIGTERM: draining" in text and "stopped at version" in text, text[-2000:]
    n = sum(len(a) for a in acked)
    assert n > 8, "only %d writes before SIGTERM" % n
    p.start()
    c = p.client()
    v = c.version()
    for k in range(8):
        for i, ver, ino in acked[k]:
            assert ver <= v
            assert c.resolve("/w%d/f%d" % (k, i))[mp.N_INO] == ino
    c.close()
    p.stop()
    sc = p.storecheck()
    assert sc["log_contiguous"] and sc["log_newest"] == v and sc["meta_digest"] == \
        sc["recomputed_digest"], sc


if __name__ == "__main__":
    mp.main(globals())
