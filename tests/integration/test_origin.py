#!/usr/bin/python3
"""The origin bucket: the primary announces the URL file data is put to in
HELLO_OK (its `origin` option, by default file://DATA_DIR/objects as an
absolute path, created at start); a bad origin is a configuration error
naming the option; mirrors pass on their upstream's origin with their site
name, down a cascade too, and learn a new one when the primary changes it."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from mp import HELLO, RESOLVE, VERSION  # noqa: E402

MIRROR_CONFIG = {"reconnect": {"min": "50ms", "max": "300ms"}}


def hello(port, role="primary"):
    """The HELLO_OK body of a fresh connection."""
    c = mp.Client(port, role=role)
    try:
        return c.hello()
    finally:
        c.close()


def write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_default_origin(tmp):
    p = mp.Primary(tmp)
    h = hello(p.port)
    want = "file://%s/objects" % os.path.realpath(p.data_dir)
    assert h["origin"] == want, "HELLO_OK origin %r, expected %r" % (h.get("origin"), want)
    assert os.path.isdir(os.path.join(p.data_dir, "objects")), "objects/ was not created"
    assert "site" not in h, "the primary's HELLO_OK carries a site: %r" % h
    assert set(h) == {"cluster_id", "version", "proto", "role", "origin"}, h
    p.stop()
    # A relative data directory behind a symbolic link: the announced path
    # is absolute and resolved, whatever the daemon's working directory.
    os.mkdir(os.path.join(tmp, "real"))
    os.symlink("real", os.path.join(tmp, "link"))
    q = mp.Primary(tmp, name="rel", data_dir="link/data")  # cwd is tmp
    want = "file://%s/real/data/objects" % os.path.realpath(tmp)
    assert hello(q.port)["origin"] == want, (hello(q.port), want)
    assert os.path.isdir(os.path.join(tmp, "real", "data", "objects"))
    q.stop()


def test_configured_origin(tmp):
    p = mp.Primary(tmp, config={"origin": "s3://my-bucket/pre"})
    h = hello(p.port)
    assert h["origin"] == "s3://my-bucket/pre", h
    assert not os.path.exists(os.path.join(p.data_dir, "objects")), \
        "objects/ created although origin is configured"
    # Reads ignore max_staleness_ms at the primary (current by definition).
    c = p.client()
    c.mkdir("/d")
    v = c.read(VERSION, {"max_staleness_ms": 0})
    assert v["role"] == "primary" and v["staleness_ms"] == 0, v
    assert v["primary_version"] == v["version"] == c.version(), v
    assert "site" not in v, v
    assert c.read(RESOLVE, {"path": "/d", "max_staleness_ms": 0})["node"][mp.N_NAME] == "d"
    c.close()
    # The origin needs a restart: a reload keeps the running one.
    p.write_config({"origin": "s3://other-bucket"})
    off = p.log_size()
    p.signal(mp.signal.SIGHUP)
    p.wait_log("configuration reloaded", since=off)
    assert "'origin' needs a restart" in p.log()[off:], p.log()[off:]
    assert hello(p.port)["origin"] == "s3://my-bucket/pre"
    p.restart()
    assert hello(p.port)["origin"] == "s3://other-bucket"
    p.stop()


def test_origin_check(tmp):
    good = ["s3://abc", "s3://my-bucket/pre", "s3://my.bucket-1/a/b/", "s3://" + "a" * 63,
            "s3://abc/" + "p" * 512, "file:///srv/objects", "file:///x",
            "file:///" + "d" * 1016]
    for i, url in enumerate(good):
        path = write(tmp, "good%d.yaml" % i, "origin: %s\n" % url)
        rc, out, err = mp.run_primary(["-n", "-c", path])
        assert rc == 0 and out.strip() == "configuration OK", (url, rc, out, err)
    bad = ["http://x", "s3://ab", "file://relative", "s3://" + "a" * 64, "s3://Bad_Bucket",
           "file:///", "s3://", "objects", "S3://abc", "\"s3://abc\\tdef\"",
           "s3://abc/" + "p" * 513, "file:///" + "d" * 1020]
    for i, url in enumerate(bad):
        path = write(tmp, "bad%d.yaml" % i, "origin: %s\n" % url)
        rc, out, err = mp.run_primary(["-n", "-c", path])
        assert rc == 1, "origin %r: exit %d: %s%s" % (url, rc, out, err)
        assert "configuration OK" not in out
        assert "origin" in err, "the error for origin %r does not name it: %r" % (url, err)
    # And the daemon does not start with one.
    path = write(tmp, "start.yaml", "origin: http://x\n")
    rc, out, err = mp.run_primary(["-c", path, "--data-dir", os.path.join(tmp, "d"),
                                   "--listen", "127.0.0.1:%d" % mp.free_port(),
                                   "--admin", "127.0.0.1:%d" % mp.free_port()])
    assert rc == 1 and "origin" in err, (rc, out, err)


def test_mirrors_pass_origin_on(tmp):
    p = mp.Primary(tmp, config={"origin": "s3://my-bucket/pre"})
    a = mp.Mirror(tmp, p, name="mirror-a", config=MIRROR_CONFIG)
    b = mp.Mirror(tmp, a, name="mirror-b", config=MIRROR_CONFIG)  # cascaded
    b.wait_caught_up(p)
    for m in (a, b):
        h = hello(m.port, role="mirror")
        assert h["origin"] == "s3://my-bucket/pre", (m.name, h)
        assert h["site"] == m.site, (m.name, h)
        assert h["cluster_id"] == p.status()["cluster_id"], h
    # A new origin at the primary reaches both, the cascaded one included
    # (its connection to mirror-a did not break).
    p.stop()
    p.write_config({"origin": "file:///srv/new-objects"})
    p.start()
    for m in (a, b):
        mp.wait_until(lambda: hello(m.port, role="mirror")["origin"] ==
                      "file:///srv/new-objects", timeout=20,
                      what="%s announcing the new origin" % m.name)
    c = p.client()
    c.mkdir("/after")
    b.wait_caught_up(p)
    c.close()
    # A mirror that has not reached an upstream since it started (its
    # replica loaded from its journal) announces an empty origin.
    p.stop()
    a.stop()
    b.restart()
    h = hello(b.port, role="mirror")
    assert h["origin"] == "" and h["site"] == "mirror-b", h
    b.stop()


if __name__ == "__main__":
    mp.main(globals())
