#!/usr/bin/python3
"""Garbage collection of superseded origin objects at the primary
(primary/gc.c), through the mp CLI against a real mp-primary: an overwritten
or removed file's objects survive the retention and are deleted after it;
imported objects (in another bucket, or in the origin outside mp/ and
u/NAME/) are never deleted, nor an origin object another file still names;
the breaker holds a pass that would delete too much, leaves the objects
intact and lets it go once after `mp gc --confirm`; the trash list outlives
a restart of the primary. Against the file:// origin and, when an s3rver is
available (MP_TEST_S3_ENDPOINT or node/npm), an s3:// origin. Runs against
SQLite, or PostgreSQL with MP_TEST_STORE=postgres."""

import os
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402

GC = 60  # MT_GC
RETENTION = 3.0  # seconds
# No timer passes during a test: every pass is an `mp gc --now`.
BASE = {"gc": {"retention": "3s", "interval": "1h", "max_delete_ratio": "1",
               "max_delete_count": "10000"}}


def gc_config(**over):
    c = {"gc": dict(BASE["gc"])}
    c["gc"].update(over)
    return c


class FileOrigin:
    name = "file"

    def __init__(self, tmp):
        # Named in the configuration: with a PostgreSQL store the primary
        # has no --data-dir to put its default origin under.
        self.dir = os.path.join(os.path.realpath(tmp), "objects")
        os.makedirs(self.dir, exist_ok=True)

    def primary_config(self, cfg):
        return dict(cfg, origin="file://" + self.dir)

    def options(self):
        return []

    def attach(self, primary):
        pass

    def exists(self, key):
        return os.path.exists(os.path.join(self.dir, key))

    def put(self, key, data):
        path = os.path.join(self.dir, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def import_source(self):
        return "origin"


class S3Origin:
    name = "s3"

    def __init__(self, tmp):
        import test_cli_s3 as s3  # starts an s3rver if none runs (or skips)
        self.s3 = s3
        self.endpoint = s3.s3_endpoint()
        self.bucket = "mp-gc"
        s3.make_bucket(self.endpoint, self.bucket)
        self.prefix = "t%d-%s" % (os.getpid(), os.path.basename(tmp))

    def primary_config(self, cfg):
        cfg = dict(cfg)
        cfg["origin"] = "s3://%s/%s" % (self.bucket, self.prefix)
        cfg["gc"] = dict(cfg["gc"])
        cfg["gc"]["s3"] = {"endpoint": self.endpoint, "access_key": "S3RVER",
                           "secret_key": "S3RVER"}
        return cfg

    def options(self):
        return ["buckets.origin.endpoint=" + self.endpoint] + [
            "buckets.origin." + c for c in self.s3.CREDS]

    def attach(self, primary):
        pass

    def _path(self, key):
        return "/%s/%s/%s" % (self.bucket, self.prefix, urllib.parse.quote(key))

    def exists(self, key):
        status, _, _ = self.s3.s3_request(self.endpoint, "HEAD", self._path(key))
        assert status in (200, 404), "HEAD %s: %d" % (key, status)
        return status == 200

    def put(self, key, data):
        status, _, body = self.s3.s3_request(self.endpoint, "PUT", self._path(key), body=data)
        assert status == 200, "PUT %s: %d %r" % (key, status, body)

    def import_source(self):
        return "origin"


def start(tmp, origin, cfg=None, store=None, name="primary"):
    p = mp.Primary(tmp, store=store, config=origin.primary_config(cfg or BASE), name=name)
    origin.attach(p)
    cli = mp.Cli(tmp, p, None, options=origin.options())
    return p, cli


def put(tmp, cli, remote, data):
    local = os.path.join(tmp, "upload")
    with open(local, "wb") as f:
        f.write(data)
    cli.run("put", local, remote)
    return keys_of(cli, remote)


def keys_of(cli, remote):
    n = cli.json("stat", remote)["nodes"][0]
    return [e["key"] for e in n["extents"]]


def gc(cli, *args, expect=0):
    r = cli.run("--json", "gc", *args, expect=expect)
    return r.json() if expect == 0 else r


def wait_retention(since):
    left = since + RETENTION + 0.3 - time.monotonic()
    if left > 0:
        time.sleep(left)


def check_superseded(tmp, origin, store=None):
    """Overwrite and unlink: objects survive a pass inside the retention and
    are deleted by one after it; the live file's object stays."""
    p, cli = start(tmp, origin, store=store)
    [k1] = put(tmp, cli, "/f", b"first version\n" * 100)
    [k3] = put(tmp, cli, "/g", b"unlinked later\n" * 10)
    local = os.path.join(tmp, "upload2")
    with open(local, "wb") as f:
        f.write(b"second version\n" * 100)
    t0 = time.monotonic()
    cli.run("put", local, "/f")
    cli.run("rm", "/g")
    st = gc(cli, "--now")
    # The objects were superseded after t0 and the pass began before now:
    # inside the retention, unless these three runs were very slow.
    took = time.monotonic() - t0
    assert took < RETENTION, "put, rm and gc --now took %.1f s" % took
    assert st["state"] == "idle" and st["last_pass_deleted"] == 0, st
    assert origin.exists(k1) and origin.exists(k3), "deleted inside the retention"
    assert st["trash_objects"] == 2 and st["trash_bytes"] == 1400 + 150, st
    [k2] = keys_of(cli, "/f")
    t_over = t_rm = time.monotonic()
    assert cli.run("cat", "/f").out == b"second version\n" * 100
    wait_retention(max(t_over, t_rm))
    st = gc(cli, "--now")
    assert st["last_pass_deleted"] == 2 and st["trash_objects"] == 0, st
    assert not origin.exists(k1) and not origin.exists(k3), "superseded objects still there"
    assert origin.exists(k2), "the live object was deleted"
    assert cli.run("cat", "/f").out == b"second version\n" * 100
    status = p.status()["gc"]
    assert status["deleted_total"] == 2 and status["state"] == "idle", status
    m = p.metrics()
    assert m.get("mp_primary_gc_deleted_objects_total") == 2, m
    assert m.get("mp_primary_gc_trash_objects") == 0, m
    # mv over an existing file trashes the replaced file's object.
    [k4] = put(tmp, cli, "/h", b"h" * 10)
    [k5] = put(tmp, cli, "/i", b"i" * 10)
    cli.run("mv", "/i", "/h")
    assert gc(cli, "--status")["trash_objects"] == 1
    wait_retention(time.monotonic())
    gc(cli, "--now")
    assert not origin.exists(k4) and origin.exists(k5)
    assert cli.run("cat", "/h").out == b"i" * 10
    p.stop()


def test_superseded_file(tmp):
    check_superseded(tmp, FileOrigin(tmp), store=mp.fresh_store("gcfile"))


def test_superseded_s3(tmp):
    check_superseded(tmp, S3Origin(tmp), store=mp.fresh_store("gcs3"))


def test_imported_never_deleted(tmp):
    """Objects of another bucket, or of the origin outside mp/ and u/NAME/,
    are never trashed; an origin object a second file still names stays."""
    origin = FileOrigin(tmp)
    p, cli = start(tmp, origin, store=mp.fresh_store("gcimp"))
    bucket = os.path.join(tmp, "bucket")
    os.makedirs(os.path.join(bucket, "data"))
    with open(os.path.join(bucket, "data", "x"), "wb") as f:
        f.write(b"imported from another bucket")
    origin.put("data/y", b"imported from the origin itself")
    [live] = put(tmp, cli, "/own", b"an uploaded file")
    origin.put("mp/zz-not-ours-but-imported", b"an object under mp/ that a user imported")
    cli = mp.Cli(tmp, p, None, options=origin.options() + ["buckets.local.url=file://" + bucket])
    cli.run("import", "local/data", "/imp-local")
    cli.run("import", "origin/data", "/imp-origin")
    # A second file naming the uploaded file's object (as an import of mp/
    # in the origin would) keeps it alive when the first goes.
    cli.run("import", "origin/mp", "/imp-mp")
    assert keys_of(cli, "/imp-local/x") == ["data/x"]
    assert keys_of(cli, "/imp-origin/y") == ["data/y"]
    assert live in keys_of(cli, "/imp-mp/" + live[3:])
    cli.run("rm", "/imp-local/x")
    cli.run("rm", "/imp-origin/y")
    cli.run("rm", "/own")
    cli.run("rm", "/imp-mp/zz-not-ours-but-imported")
    st = gc(cli, "--status")
    # Only the two mp/ objects are candidates; data/ never.
    assert st["trash_objects"] == 2, st
    wait_retention(time.monotonic())
    st = gc(cli, "--now")
    assert st["last_pass_deleted"] == 1, st
    assert os.path.exists(os.path.join(bucket, "data", "x")), "deleted another bucket's object"
    assert origin.exists("data/y"), "deleted an imported origin object"
    assert origin.exists(live), "deleted an object another file still names"
    assert not origin.exists("mp/zz-not-ours-but-imported")
    assert cli.run("cat", "/imp-mp/" + live[3:]).out == b"an uploaded file"
    assert st["trash_objects"] == 0, st
    p.stop()


def test_breaker(tmp):
    """A pass that would delete more than the ratio (or the count) holds:
    nothing deleted, state held in mp gc, /status and /metrics, until
    --confirm lets it go once."""
    origin = FileOrigin(tmp)
    p, cli = start(tmp, origin, cfg=gc_config(max_delete_ratio="0.3"),
                   store=mp.fresh_store("gcbrk"))
    gc(cli, "--confirm", expect=1)
    keys = []
    for i in range(4):
        keys += put(tmp, cli, "/d/f%d" % i, b"x%d" % i)
    for i in range(2):
        cli.run("rm", "/d/f%d" % i)
    wait_retention(time.monotonic())
    # 2 trashed of 4 objects (2 live + 2 trashed): 50% > 30%.
    st = gc(cli, "--now")
    assert st["state"] == "held" and st["would_delete"] == 2, st
    assert "max_delete_ratio" in st["held_reason"], st
    assert all(origin.exists(k) for k in keys), "the breaker let objects go"
    s = p.status()["gc"]
    assert s["state"] == "held" and s["would_delete"] == 2, s
    assert p.metrics().get("mp_primary_gc_breaker_held") == 1
    text = cli.run("gc").text
    assert "held" in text and "--confirm" in text, text
    # A timer pass (or another --now) holds again; nothing is deleted.
    st = gc(cli, "--now")
    assert st["state"] == "held" and all(origin.exists(k) for k in keys)
    st = gc(cli, "--confirm")
    assert st["state"] == "idle" and st["last_pass_deleted"] == 2, st
    assert not origin.exists(keys[0]) and not origin.exists(keys[1])
    assert origin.exists(keys[2]) and origin.exists(keys[3])
    assert p.metrics().get("mp_primary_gc_breaker_held") == 0
    # The confirmation was for one pass: the next large one holds again.
    cli.run("rm", "/d/f2")
    wait_retention(time.monotonic())
    st = gc(cli, "--now")
    assert st["state"] == "held" and st["would_delete"] == 1 and origin.exists(keys[2]), st
    p.stop()
    # The count limit, on its own.
    p.write_config(origin.primary_config(gc_config(max_delete_count="0")))
    p.start()
    st = gc(cli, "--now")
    assert st["state"] == "held" and "max_delete_count" in st["held_reason"], st
    assert origin.exists(keys[2])
    p.stop()


def test_restart_keeps_trash(tmp):
    """The trash list is in the store: a restart (and a kill -9) keep it."""
    origin = FileOrigin(tmp)
    store = mp.fresh_store("gcrst")
    p, cli = start(tmp, origin, store=store)
    [k1] = put(tmp, cli, "/f", b"one")
    put(tmp, cli, "/f", b"two")
    [k3] = put(tmp, cli, "/g", b"three")
    t0 = time.monotonic()
    p.stop()
    p.start()
    assert gc(cli, "--status")["trash_objects"] == 1
    cli.run("rm", "/g")
    p.kill9()
    p.start()
    st = gc(cli, "--status")
    assert st["trash_objects"] == 2 and st["trash_bytes"] == 3 + 5, st
    wait_retention(t0)
    wait_retention(time.monotonic())
    st = gc(cli, "--now")
    assert st["last_pass_deleted"] == 2, st
    assert not origin.exists(k1) and not origin.exists(k3)
    p.stop()


def test_delete_failure_retried(tmp):
    """A delete that fails leaves its row: counted, logged, named in the
    status, and retried by the next pass; a missing object counts as done."""
    origin = FileOrigin(tmp)
    p, cli = start(tmp, origin, store=mp.fresh_store("gcfail"))
    [k1] = put(tmp, cli, "/a", b"a")
    [k2] = put(tmp, cli, "/b", b"b")
    cli.run("rm", "/a")
    cli.run("rm", "/b")
    # The file of k1 becomes a directory holding a file: unlink fails.
    path = os.path.join(origin.dir, k1)
    os.unlink(path)
    os.makedirs(os.path.join(path, "inside"))
    os.unlink(os.path.join(origin.dir, k2))  # already gone: done
    wait_retention(time.monotonic())
    since = p.log_size()
    st = gc(cli, "--now")
    assert st["last_pass_deleted"] == 1 and st["last_pass_failed"] == 1, st
    assert st["trash_objects"] == 1 and k1 in st["last_error"], st
    p.wait_log("deleting '%s' from the origin failed" % k1, since=since)
    assert p.metrics().get("mp_primary_gc_failures_total") == 1
    os.rmdir(os.path.join(path, "inside"))
    os.rmdir(path)
    st = gc(cli, "--now")
    assert st["last_pass_deleted"] == 1 and st["last_pass_failed"] == 0, st
    assert st["trash_objects"] == 0 and st["last_error"] == "", st
    p.stop()


def test_bad_input(tmp):
    """Bad configuration and requests are refused naming what was wrong."""
    origin = FileOrigin(tmp)
    p = mp.Primary(tmp, config=gc_config(max_delete_ratio="1.5"), start=False)
    out = subprocess.run(p.argv() + ["-n"], capture_output=True, text=True)
    assert out.returncode != 0 and "gc.max_delete_ratio" in out.stdout + out.stderr, out
    p2, cli = start(tmp, origin, name="p2")
    with p2.client() as c:
        c.error("EINVAL", GC, {"action": "sweep"}, contains="status, run or confirm")
        c.error("EINVAL", GC, {}, contains="action")
        c.error("EINVAL", GC, {"action": "confirm"}, contains="nothing to confirm")
    cli.run("gc", "--now", "--confirm", expect=2)
    p2.stop()
    # An origin GC cannot open does not keep the primary from serving: the
    # pass fails, says why, and is retried.
    gone = os.path.join(tmp, "no-such-dir")
    p3 = mp.Primary(tmp, config=dict(BASE, origin="file://" + gone), name="p3")
    cli3 = mp.Cli(tmp, p3, None)
    cli3.run("mkdir", "/d")
    st = gc(cli3, "--now")
    assert "cannot open the origin" in st["last_error"] and st["failures_total"] == 1, st
    p3.stop()


if __name__ == "__main__":
    mp.main(globals())
