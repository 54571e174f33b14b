#!/usr/bin/python3
"""What an mp-mirror holds on disk, and when it must throw it away: SIGTERM
leaves everything applied durable; a mirror down for longer than the
primary's log retention bootstraps from a snapshot; a tampered journal or
snapshot, or a replica of another cluster, is detected, counted as a
divergence and replaced by a fresh bootstrap, and never served."""

import glob
import os
import re
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402

MIRROR_CONFIG = {"reconnect": {"min": "50ms", "max": "500ms"}}


def mirror(tmp, upstream, name, config=None, **kw):
    cfg = dict(MIRROR_CONFIG)
    cfg.update(config or {})
    return mp.Mirror(tmp, upstream, name=name, config=cfg, **kw)


def write(p, tag, n):
    c = p.client()
    c.mkdir("/" + tag, parents=True)
    for i in range(n):
        c.create("/%s/f%d" % (tag, i), size=i)
    v = c.version()
    c.close()
    return v


def loaded_version(m):
    found = re.search(r"loaded (\d+) entries at version (\d+) from (\S+)", m.log_since_start())
    assert found, "%s did not load its replica from disk:\n%s" % (m.name,
                                                                   m.log_since_start()[-3000:])
    assert found.group(3) == m.data_dir, found.group(0)
    return int(found.group(2))


def restarts_from_journal(m, p):
    """m restarts (SIGTERM, start) and loads what it had, without a
    divergence or a bootstrap."""
    v = m.status()["applied_version"]
    m.restart()
    assert loaded_version(m) == v, (loaded_version(m), v)
    m.wait_caught_up(p, timeout=60)
    mt = m.metrics()
    assert mt["mp_mirror_divergences_total"] == 0 and mt["mp_mirror_bootstraps_total"] == 0, (
        "%s needed a new replica after a clean restart: %r\n%s" % (
            m.name, mt, m.log_since_start()[-3000:]))


def test_sigterm_is_durable(tmp):
    p = mp.Primary(tmp)
    m = mirror(tmp, p, "mirror-t")
    storm = mp.Storm(p.port, "/s", 8).start()
    mp.wait_until(lambda: m.status()["applied_version"] > 300, timeout=60,
                  what="the mirror applying")
    # A read parked at the time of SIGTERM is no obstacle to a clean exit.
    parked = m.client()
    parked.send(mp.RESOLVE, {"path": "/", "min_version": 10 ** 9, "deadline_ms": 60000})
    mp.wait_until(lambda: m.status()["parked_reads"] == 1, timeout=10, what="a parked read")
    # SIGTERM while versions stream in: what it applied is on disk.
    m.stop()
    parked.close()
    stopped = re.search(r"stopped at version (\d+)", m.log_since_start())
    assert stopped, m.log_since_start()[-2000:]
    at_stop = int(stopped.group(1))
    storm.stop()
    v, d = mp.version_and_digest(p)
    assert at_stop <= v
    # The primary gone, the mirror serves exactly what it had.
    p.stop()
    m.start()
    assert loaded_version(m) == at_stop, (loaded_version(m), at_stop)
    st = m.status()
    assert st["applied_version"] == at_stop and st["durable_version"] == at_stop, st
    c = m.client()
    nodes = mp.all_nodes(c)
    assert mp.digest_of(nodes).hex() == st["digest"], "the loaded replica hashes differently"
    c.close()
    p.start()
    m.wait_caught_up(p, timeout=60)
    assert mp.digest_of(mp.all_nodes(m.client())).hex() == d
    mt = m.metrics()
    assert mt["mp_mirror_applied_versions_total"] == v - at_stop, mt
    assert mt["mp_mirror_bootstraps_total"] == 0 and mt["mp_mirror_divergences_total"] == 0, mt
    m.stop()
    p.stop()


def test_torn_tail(tmp):
    """The last record of the journal half written (as a crash leaves it):
    cut off at load, not a divergence; the rest comes from the upstream."""
    p = mp.Primary(tmp)
    write(p, "a", 30)
    m = mirror(tmp, p, "mirror-torn")
    v = m.wait_caught_up(p)["applied_version"]
    m.stop()
    j = journals(m)[-1]
    recs = journal_records(j)
    assert len(recs) >= 10, recs
    off, n = recs[-1]
    with open(j, "r+b") as f:
        f.truncate(off + n // 2)
    m.start()
    assert loaded_version(m) == v - 1, (loaded_version(m), v)
    assert "torn tail" in m.log_since_start()
    m.wait_caught_up(p)
    mt = m.metrics()
    assert mt["mp_mirror_divergences_total"] == 0 and mt["mp_mirror_bootstraps_total"] == 0, mt
    assert mt["mp_mirror_applied_versions_total"] == 1, mt
    restarts_from_journal(m, p)
    m.stop()
    p.stop()


def test_bootstrap_after_retention(tmp):
    p = mp.Primary(tmp, config={"log_retention": {"max_versions": 10, "max_age": "0s"}})
    write(p, "a", 5)
    m = mirror(tmp, p, "mirror-r", config={"snapshot_every": "4KiB"})
    m.wait_caught_up(p)
    assert m.metrics()["mp_mirror_bootstraps_total"] == 0
    mv = m.status()["applied_version"]
    m.stop()
    c = p.client()
    c.mkdir("/bulk")
    for i in range(200):
        c.create("/bulk/f%03d" % i, size=i,
                 layout=mp.layout(["bkt", "key/%d/%s" % (i, "x" * 100), "etag", 0, i]))
    c.close()
    # Retention runs every 5 s.
    mp.wait_until(lambda: p.status()["change_log"]["oldest_version"] > mv + 1, timeout=30,
                  what="retention trimming the log past the mirror's version %d" % mv)
    m.start()
    assert loaded_version(m) == mv
    st = m.wait_caught_up(p, timeout=60)
    assert st["state"] == "live", st
    mt = m.metrics()
    assert mt["mp_mirror_bootstraps_total"] == 1, mt
    assert mt["mp_mirror_divergences_total"] == 0, mt
    m.wait_log("bootstrapped")
    assert p.metrics()["mp_primary_snapshots_total"] == 1
    c = m.client()
    assert mp.digest_of(mp.all_nodes(c)).hex() == st["digest"]
    c.close()
    # Then it follows on from the snapshot.
    write(p, "after", 20)
    m.wait_caught_up(p, timeout=60)
    # And its own disk holds the bootstrapped replica: a restart loads it.
    restarts_from_journal(m, p)
    m.stop()
    p.stop()


# ---------------------------------------------------------------- tampering

def journal_records(path):
    """[(offset of the record's payload, its length)] of a journal file:
    [u32 length][u64 checksum][record] each."""
    data = open(path, "rb").read()
    out, pos = [], 0
    while pos + 12 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        if pos + 12 + n > len(data):
            break
        out.append((pos + 12, n))
        pos += 12 + n
    return out


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


class Reader(threading.Thread):
    """Reads at a mirror from the moment it listens: connects (retrying
    while it does not), HELLO, then RESOLVE of `path` with min_version in a
    loop. Records every answer: ("node", version, node, time), ("error",
    code, version, time) with time.monotonic() when it came."""

    def __init__(self, port, path, min_version, deadline_ms=300, cluster_id=None):
        super().__init__(daemon=True)
        self.port, self.path, self.min_version = port, path, min_version
        # As libmirrorplane does once it knows its cluster: HELLO names it,
        # and a mirror still holding another cluster's replica refuses.
        self.cluster_id = cluster_id
        self.refusals = 0
        self.deadline_ms = deadline_ms
        self.halt = threading.Event()
        self.answers = []
        self.failure = None

    def run(self):
        c = None
        try:
            while not self.halt.is_set():
                if c is None:
                    try:
                        c = mp.Client(self.port, role="mirror", timeout=10)
                        c.hello(cluster_id=self.cluster_id)
                    except (OSError, mp.ConnectionClosed, mp.MPError) as e:
                        if isinstance(e, mp.MPError):
                            assert e.code == "EPERM", e
                            self.refusals += 1
                        if c is not None:
                            c.close()
                        c = None
                        time.sleep(0.002)
                        continue
                try:
                    r = c.read(mp.RESOLVE, {"path": self.path}, min_version=self.min_version,
                               deadline_ms=self.deadline_ms)
                    self.answers.append(("node", r["version"], r["node"], time.monotonic()))
                except mp.MPError as e:
                    self.answers.append(("error", e.code, e.version, time.monotonic()))
                except (OSError, mp.ConnectionClosed):
                    c.close()
                    c = None
        except BaseException as e:
            self.failure = e
        finally:
            if c is not None:
                c.close()

    def stop(self):
        self.halt.set()
        self.join(30)
        assert not self.is_alive(), "the reader hangs"
        assert self.failure is None, repr(self.failure)
        return self.answers


def corrupted_then_repaired(tmp, corrupt):
    """A mirror with a replica on disk is stopped, corrupt(m) damages it,
    then it starts with its upstream down: it must serve nothing (it has no
    replica it can trust) until the upstream is back and it re-bootstrapped."""
    p = mp.Primary(tmp)
    write(p, "a", 40)
    m = mirror(tmp, p, "mirror-x", config={"snapshot_every": "1KiB", "read_deadline": "300ms"})
    m.wait_caught_up(p)
    # Versions after the first snapshot, so that the newest snapshot is
    # not the empty one and a journal follows it.
    write(p, "b", 60)
    m.wait_caught_up(p)
    mp.wait_until(lambda: len(snapshots(m)) and int(re.search(
        r"snapshot-(\d+)", snapshots(m)[-1]).group(1)) > 40, timeout=30,
        what="a snapshot of the mirror's replica past version 40")
    write(p, "c", 60)
    m.wait_caught_up(p)
    old_v, old_d = mp.version_and_digest(m)
    m.stop()
    corrupt(m)
    p.stop()
    # Reads from the moment it listens, asking for what it had.
    m.spawn()
    reader = Reader(m.port, "/a/f1", old_v, deadline_ms=200)
    reader.start()
    m.wait_ready()
    m.wait_log("discarding it and bootstrapping", since=m.log_offset)
    st = m.status()
    assert st["applied_version"] == 0 and st["state"] != "live", st
    assert m.metrics()["mp_mirror_divergences_total"] == 1
    assert m.healthz()[0] == 503
    mp.wait_until(lambda: len(reader.answers) >= 3, timeout=30,
                  what="reads answered while the upstream is down")
    t_up = time.monotonic()
    p.start()
    v = write(p, "d", 10)
    st = m.wait_caught_up(p, timeout=60)
    answers = reader.stop()
    # Without an upstream it had nothing to answer from but the damaged
    # disk: every read before the primary came back got ESTALE.
    early = [a for a in answers if a[3] < t_up]
    assert early and all(a[0] == "error" and a[1] == "ESTALE" for a in early), (
        "reads answered from a damaged replica: %r" % [a for a in early if a[1] != "ESTALE"][:3])
    assert all(a[2] == 0 for a in early), early[:3]
    assert any(a[0] == "node" for a in answers), answers[-3:]
    assert st["cluster_id"] == p.status()["cluster_id"], st
    c = m.client()
    assert c.read(mp.RESOLVE, {"path": "/d/f9"}, min_version=v)["node"][mp.N_NAME] == "f9"
    assert mp.digest_of(mp.all_nodes(c)).hex() == p.status()["digest"]
    c.close()
    mt = m.metrics()
    assert mt["mp_mirror_divergences_total"] == 1, mt
    # Its new replica survives a restart.
    restarts_from_journal(m, p)
    m.stop()
    p.stop()


def snapshots(m):
    return sorted(glob.glob(os.path.join(m.data_dir, "snapshot-*.mps")))


def journals(m):
    return sorted(glob.glob(os.path.join(m.data_dir, "journal-*.mpj")))


def test_tampered_journal(tmp):
    def corrupt(m):
        js = [j for j in journals(m) if len(journal_records(j)) >= 10]
        assert js, "no journal with records in %s: %r" % (m.data_dir, os.listdir(m.data_dir))
        recs = journal_records(js[-1])
        off, n = recs[len(recs) // 2]
        flip(js[-1], off + n // 2)
    corrupted_then_repaired(tmp, corrupt)


def test_tampered_snapshot(tmp):
    def corrupt(m):
        s = snapshots(m)[-1]
        flip(s, os.path.getsize(s) // 2)
    corrupted_then_repaired(tmp, corrupt)


def test_other_cluster(tmp):
    """A data directory made against P1, given to a mirror of P2: the
    replica is thrown away (divergence), P2's is bootstrapped, and no read
    is answered from P1's state once the mirror connected to P2. P1 is ahead
    of P2 so that P1's state would satisfy min_version reads meant for P2."""
    p1 = mp.Primary(tmp, name="p1")
    write(p1, "only-p1", 80)
    m = mirror(tmp, p1, "mirror-o", config={"read_deadline": "300ms"})
    m.wait_caught_up(p1)
    v1 = m.status()["applied_version"]
    cluster1 = m.status()["cluster_id"]
    m.stop()
    p1.stop()
    p2 = mp.Primary(tmp, name="p2")
    v2 = write(p2, "only-p2", 20)
    assert v2 < v1
    cluster2 = p2.status()["cluster_id"]
    assert cluster2 != cluster1
    m.upstream = p2
    m.spawn()
    # From its first moment, a read asking for P2's version must not get
    # P1's namespace (which has no /only-p2).
    reader = Reader(m.port, "/only-p2/f3", v2, deadline_ms=300, cluster_id=cluster2)
    reader.start()
    m.wait_ready()
    st = m.wait_caught_up(p2, timeout=60)
    mp.wait_until(lambda: any(a[0] == "node" for a in reader.answers), timeout=30,
                  what="a read answered from P2's replica")
    answers = reader.stop()
    assert st["cluster_id"] == cluster2, st
    wrong = [a for a in answers if a[0] == "error" and a[1] not in ("ESTALE",)]
    assert not wrong, "reads for P2's state got %r (first answers %r)" % (wrong[:3], answers[:5])
    assert any(a[0] == "node" for a in answers), answers[-5:]
    m.wait_log("belongs to cluster")
    mt = m.metrics()
    assert mt["mp_mirror_divergences_total"] == 1, mt
    c = m.client()
    c.error("ENOENT", mp.RESOLVE, {"path": "/only-p1"})
    assert c.read(mp.VERSION, {})["cluster_id"] == cluster2
    assert mp.digest_of(mp.all_nodes(c)).hex() == p2.status()["digest"]
    c.close()
    # Live at P2 (not still counting P1's versions as lag).
    st = m.wait_state(lambda st: st["state"] == "live" and st["lag_versions"] == 0, timeout=15,
                      what="live at P2 without lag")
    assert st["upstream_version"] == v2, st
    code, body = m.healthz()
    assert code == 200, (code, body)
    # And the new replica is what a restart loads.
    restarts_from_journal(m, p2)
    m.stop()
    p2.stop()


def test_primary_history_rewritten(tmp):
    """The primary's store is put back to an older copy (version 21) and
    takes other writes past the mirror's version: same cluster, another
    history. The mirror's digest at its version no longer matches; it must
    end at the primary's new state, not keep the old history."""
    import shutil
    p = mp.Primary(tmp)
    v_backup = write(p, "old", 20)
    p.stop()
    shutil.copytree(p.data_dir, os.path.join(tmp, "backup"))
    p.start()
    write(p, "gone", 20)
    m = mirror(tmp, p, "mirror-h")
    v_old = m.wait_caught_up(p)["applied_version"]
    m.stop()
    p.stop()
    shutil.rmtree(p.data_dir)
    shutil.copytree(os.path.join(tmp, "backup"), p.data_dir)
    p.start()
    assert p.status()["version"] == v_backup
    v_new = write(p, "new", 40)
    assert v_new > v_old
    m.start()
    st = m.wait_caught_up(p, timeout=60)
    c = m.client()
    c.error("ENOENT", mp.RESOLVE, {"path": "/gone"})
    assert c.resolve("/new/f39")[mp.N_NAME] == "f39"
    assert mp.digest_of(mp.all_nodes(c)).hex() == st["digest"]
    c.close()
    mt = m.metrics()
    assert mt["mp_mirror_bootstraps_total"] == 1, mt
    m.wait_log("bootstrapped")
    restarts_from_journal(m, p)
    # And back behind the mirror's version: ESTALE at subscribe, a fresh
    # replica.
    m.stop()
    p.stop()
    shutil.rmtree(p.data_dir)
    shutil.copytree(os.path.join(tmp, "backup"), p.data_dir)
    p.start()
    m.start()
    st = m.wait_caught_up(p, timeout=60)
    assert st["applied_version"] == v_backup, st
    assert m.metrics()["mp_mirror_divergences_total"] == 1
    c = m.client()
    c.error("ENOENT", mp.RESOLVE, {"path": "/new"})
    c.close()
    m.stop()
    p.stop()


if __name__ == "__main__":
    mp.main(globals())
