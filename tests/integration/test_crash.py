#!/usr/bin/python3
"""kill -9 in the middle of a write storm: every acknowledged write survives,
the change log is contiguous from version 1, and the digest recorded, the
digest recomputed from the stored nodes and the daemon's agree. Runs against
SQLite, or PostgreSQL with MP_TEST_STORE=postgres."""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from mp import N_INO, N_NAME, N_PARENT, N_TYPE, DIR, FILE, PUT  # noqa: E402

WRITERS = 16


class Writer(threading.Thread):
    """Loops create /R/wK/fI, mkdir /R/wK/dI, rename fI -> dI/f and records
    every acknowledged reply as (op, i, version, ino)."""

    def __init__(self, port, prefix, k, go, stop):
        super().__init__(daemon=True)
        self.c = mp.Client(port, hello=True)
        self.dir = "%s/w%d" % (prefix, k)
        self.go, self.stop = go, stop
        self.acked = []
        self.error = None

    def run(self):
        self.go.wait()
        i = 0
        try:
            while not self.stop.is_set():
                f, d = "%s/f%d" % (self.dir, i), "%s/d%d" % (self.dir, i)
                r = self.c.create(f, size=i)
                self.acked.append(("create", i, r["version"], r["node"][N_INO]))
                r = self.c.mkdir(d)
                self.acked.append(("mkdir", i, r["version"], r["node"][N_INO]))
                r = self.c.rename(f, d + "/f")
                self.acked.append(("rename", i, r["version"], r["node"][N_INO]))
                i += 1
        except (mp.ConnectionClosed, ConnectionResetError, BrokenPipeError, TimeoutError,
                OSError):
            pass  # the daemon went away
        except BaseException as e:  # an ERROR reply or a bad frame: a failure
            self.error = e
        finally:
            self.c.close()


def collect_log(p, upto):
    """Every change record 1..upto through a subscription from 0."""
    s = mp.Subscriber(p.port)
    r = s.subscribe(0, site="crash-check")
    assert r["snapshot"] is False, "a subscription from 0 with the whole log got a snapshot"
    s.pump(until=upto, timeout=120)
    s.close()
    assert sorted(s.records) == list(range(1, upto + 1)), "records are not 1..%d" % upto
    return s


def storm_and_kill(p, rnd, seconds):
    prefix = "/r%d" % rnd
    c = p.client()
    c.mkdir(prefix)
    c.batch([(mp.MKDIR, {"path": "%s/w%d" % (prefix, k)}) for k in range(WRITERS)])
    v_before = c.version()
    c.close()
    go, stop = threading.Event(), threading.Event()
    writers = [Writer(p.port, prefix, k, go, stop) for k in range(WRITERS)]
    for w in writers:
        w.start()
    go.set()
    time.sleep(seconds)
    p.kill9()
    stop.set()
    for w in writers:
        w.join(60)
        assert not w.is_alive(), "a writer hangs after the kill"
        assert w.error is None, "writer %s failed: %r" % (w.dir, w.error)
    return prefix, writers, v_before


def check_round(p, prefix, writers, v_before):
    acked = [a for w in writers for a in w.acked]
    versions = [a[2] for a in acked]
    assert len(acked) >= WRITERS, "only %d writes acknowledged before the kill" % len(acked)
    assert len(set(versions)) == len(versions), "two acknowledged writes share a version"
    assert min(versions) > v_before, (min(versions), v_before)

    sc = p.storecheck()
    v = sc["version"]
    assert max(versions) <= v, "acknowledged version %d lost: the store is at %d" % (
        max(versions), v)
    assert sc["log_oldest"] == 1 and sc["log_newest"] == v and sc["log_contiguous"], sc
    assert sc["log_count"] == v and sc["records_valid"], sc
    assert sc["meta_digest"] == sc["recomputed_digest"] == sc["log_last_digest"], sc
    assert sc["replay_digest"] == sc["recomputed_digest"], sc

    p.start()
    st = p.status()
    assert st["version"] == v and st["digest"] == sc["recomputed_digest"], (st, sc)
    assert st["entries"] == sc["entries"], (st, sc)
    c = p.client()
    nodes = mp.all_nodes(c)
    assert mp.digest_of(nodes).hex() == st["digest"], "the Python digest differs"

    # Every acknowledged version is in the log and holds what its reply said.
    s = collect_log(p, v)
    assert s.model.digest().hex() == st["digest"]
    for op, i, ver, ino in acked:
        muts = s.records[ver][3]
        puts = {m[1][N_INO]: m[1] for m in muts if m[0] == PUT}
        assert ino in puts, "version %d (%s %d) does not put inode %d" % (ver, op, i, ino)
        want = {"create": "f%d" % i, "mkdir": "d%d" % i, "rename": "f"}[op]
        assert puts[ino][N_NAME] == want, (op, i, puts[ino])

    # And the namespace holds every acknowledged write.
    for w in writers:
        done = {}
        for op, i, ver, ino in w.acked:
            done.setdefault(i, {})[op] = ino
        for i, ops in done.items():
            f, d = "%s/f%d" % (w.dir, i), "%s/d%d" % (w.dir, i)
            if "rename" in ops:
                n = c.resolve(d + "/f")
                assert n[N_INO] == ops["create"] and n[N_TYPE] == FILE and n[2] == "f", n
                c.error("ENOENT", mp.RESOLVE, {"path": f})
            else:
                # The rename may have been made durable without its reply.
                try:
                    n = c.resolve(f)
                except mp.MPError:
                    n = c.resolve(d + "/f")
                assert n[N_INO] == ops["create"], (n, ops)
            if "mkdir" in ops:
                n = c.resolve(d)
                assert n[N_INO] == ops["mkdir"] and n[N_TYPE] == DIR
                assert n[N_PARENT] == c.resolve(w.dir)[N_INO]
    c.close()
    return v, len(acked)


def test_kill9_mid_storm(tmp):
    p = mp.Primary(tmp, store=mp.fresh_store("crash"))
    for rnd, seconds in enumerate((0.4, 1.2, 2.5)):
        prefix, writers, v_before = storm_and_kill(p, rnd, seconds)
        v, n = check_round(p, prefix, writers, v_before)
        print("round %d: killed after %.1f s, %d writes acknowledged, recovered at version %d"
              % (rnd, seconds, n, v))
    # A last clean stop after the crashes.
    p.stop()


def test_second_primary_on_the_same_store(tmp):
    """Two primaries on one store would hand out the same versions. The
    second must be refused at start; the first goes on serving. (The same
    holds for a primary restarted while a killed one's session still
    commits.)"""
    store = mp.fresh_store("twice")
    data = os.path.join(tmp, "data")
    a = mp.Primary(tmp, store=store, data_dir=data, name="first")
    c = a.client()
    c.mkdir("/a")
    b = mp.Primary(tmp, store=store, data_dir=data, name="second", start=False)
    b.spawn()
    deadline = time.monotonic() + 20
    started = False
    while b.proc.poll() is None and time.monotonic() < deadline:
        try:
            if b.http("GET", "/healthz", timeout=1)[0] in (200, 503):
                started = True
                break
        except OSError:
            pass
        time.sleep(0.05)
    if started or b.proc.poll() is None:
        what = "it serves"
        try:
            cb = b.client(timeout=5)
            cb.mkdir("/from-second")
            what = "its write was acknowledged"
        except (socket.timeout, TimeoutError):
            what = "its write hangs (%s)" % (
                "store_failing" if b.status()["store_failing"] else "no reply")
        except Exception as e:
            what = "its write failed: %r" % e
        b.kill9()
        raise AssertionError("a second primary started on a store in use: %s" % what)
    assert b.proc.returncode != 0, b.proc.returncode
    assert c.mkdir("/b")["version"] == 2
    c.close()
    a.stop()


if __name__ == "__main__":
    mp.main(globals())
