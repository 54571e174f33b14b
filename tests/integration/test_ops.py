#!/usr/bin/python3
"""Every write operation of docs/PROTOCOL.md and its errors, batches, READDIR
paging, versions, and persistence across a restart. Runs against SQLite, or
PostgreSQL with MP_TEST_STORE=postgres."""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from mp import (BATCH, CREATE, DIR, FILE, MKDIR, N_CTIME, N_EXTRA, N_GID,  # noqa: E402
                N_INO, N_MODE, N_MTIME, N_NAME, N_PARENT, N_SIZE, N_TYPE, N_UID, RENAME,
                RESOLVE, RMDIR, SETATTR, SYMLINK, SYMLNK, UNLINK, GETATTR, LOOKUP, READDIR)


def start(tmp, **kw):
    p = mp.Primary(tmp, store=mp.fresh_store("ops"), **kw)
    return p, p.client()


def expect_version(c, want):
    got = c.version()
    assert got == want, "version is %d, expected %d" % (got, want)


def test_mkdir(tmp):
    p, c = start(tmp)
    assert c.version() == 0
    r = c.mkdir("/a")
    assert r["version"] == 1, r
    n = r["node"]
    assert n[N_PARENT] == 1 and n[N_NAME] == "a" and n[N_TYPE] == DIR, n
    assert n[N_MODE] == 0o755 and n[N_UID] == 0 and n[N_GID] == 0 and n[N_EXTRA] is None, n
    assert n[N_INO] >= 2
    assert c.resolve("/a") == n
    assert c.getattr(n[N_INO]) == n
    assert c.lookup(1, "a") == n

    r = c.mkdir("/a/b", mode=0o700, uid=1000, gid=2000)
    assert r["version"] == 2
    assert r["node"][N_MODE] == 0o700 and r["node"][N_UID] == 1000 and r["node"][N_GID] == 2000

    e = c.error("EEXIST", MKDIR, {"path": "/a"}, contains="/a")
    assert e["version"] == 2 and e["errno"] == 17
    c.error("EEXIST", MKDIR, {"path": "/"})
    c.error("ENOENT", MKDIR, {"path": "/nope/x"}, contains="/nope/x")
    c.create("/a/f")
    c.error("ENOTDIR", MKDIR, {"path": "/a/f/x"})
    c.error("EINVAL", MKDIR, {"path": "/a/m", "mode": 0o10000}, contains="mode")
    expect_version(c, 3)

    # mkdir -p makes what is missing, in one version, and is a no-op after.
    r = c.mkdir("/p/q/r", parents=True)
    assert r["version"] == 4 and r["node"][N_NAME] == "r"
    q = c.resolve("/p/q")
    assert r["node"][N_PARENT] == q[N_INO]
    r = c.mkdir("/p/q/r", parents=True)
    assert r["version"] == 4, "mkdir -p of an existing tree made version %d" % r["version"]
    assert r["node"][N_NAME] == "r"
    r = c.mkdir("/p//q///r2/", parents=True)  # repeated and trailing slashes
    assert r["version"] == 5 and c.resolve("/p/q/r2")[N_INO] == r["node"][N_INO]
    c.error("ENOTDIR", MKDIR, {"path": "/a/f/x/y", "parents": True})
    expect_version(c, 5)
    c.close()
    p.stop()


def test_bad_names_and_paths(tmp):
    p, c = start(tmp)
    c.mkdir("/a")
    v = c.version()
    for op in (MKDIR, CREATE):
        for path in ("/a/.", "/a/..", "/a/./b", "/a/../b", "/a/x\x00y", "/a\x00/b",
                     "a", "a/b", "", "./a"):
            c.error("EINVAL", op, {"path": path})
        for path in (b"/a/" + b"n" * 256, b"/" + b"n" * 256 + b"/x"):
            # A name over 255 bytes is a bad name (EINVAL) or over a limit
            # (E2BIG): PROTOCOL.md allows reading it either way.
            t, e = c.call(op, {"path": path})
            assert t == mp.ERROR and e["code"] in ("EINVAL", "E2BIG"), (t, e)
            assert "name" in e["message"] or "path" in e["message"], e
        long_path = "/" + "d/" * 2100  # 4201 bytes
        c.error("E2BIG", op, {"path": long_path}, contains="path")
    c.error("EINVAL", SYMLINK, {"path": "/a/s", "target": ""})
    c.error("EINVAL", SYMLINK, {"path": "/a/s", "target": "x\x00y"})
    c.error("E2BIG", SYMLINK, {"path": "/a/s", "target": "t" * 4097})
    c.error("EINVAL", RENAME, {"from": "/a", "to": "/b/.."})
    c.error("EINVAL", RENAME, {"from": "a", "to": "/b"})
    c.error("EINVAL", UNLINK, {"path": "/a/.."})
    c.error("EINVAL", RMDIR, {"path": "relative"})
    c.error("EINVAL", SETATTR, {"path": "/a/../a", "mode": 0o700})
    expect_version(c, v)

    # 255 bytes is a valid name, and 4096 bytes a valid path.
    name = "n" * 255
    c.create("/a/" + name)
    assert c.resolve("/a/" + name)[N_NAME] == name
    comps, path = [], ""
    while len(path) < 4096 - 201:
        comps.append("c" * 200)
        path = "/" + "/".join(comps)
    last = 4096 - len(path) - 1
    path = path + "/" + "z" * last
    assert len(path) == 4096
    r = c.mkdir(path, parents=True)
    assert c.resolve(path)[N_INO] == r["node"][N_INO]
    # Names are bytes: anything but '/' and NUL.
    odd = b"\xff\xfe caf\xc3\xa9 \x01\x7f"
    c.create(b"/a/" + odd)
    n = c.resolve(b"/a/" + odd)
    assert mp.name_bytes(n[N_NAME]) == odd, n
    c.close()
    p.stop()


def test_create_replace_symlink(tmp):
    p, c = start(tmp)
    c.mkdir("/d")
    d0 = c.resolve("/d")
    lay1 = mp.layout(["bkt", "obj/1", "etag1", 0, 10])
    r = c.create("/d/f", size=10, mode=0o640, uid=7, gid=8, layout=lay1)
    f = r["node"]
    assert f[N_TYPE] == FILE and f[N_SIZE] == 10 and f[N_MODE] == 0o640, f
    assert f[N_UID] == 7 and f[N_GID] == 8
    assert f[N_EXTRA] == mp.layout_bytes(lay1), f[N_EXTRA]
    d1 = c.resolve("/d")
    assert d1[N_MTIME] == f[N_MTIME] and d1[N_CTIME] == f[N_CTIME], (d1, f)
    assert d1[N_MTIME] > d0[N_MTIME]

    lay2 = mp.layout(["bkt", "obj/2", "etag2", 0, 5], ["bkt", "obj/3", "", 5, 15])
    r = c.create("/d/f", size=20, layout=lay2)
    g = r["node"]
    assert r["version"] == 3, r
    assert g[N_INO] == f[N_INO], "create over a file changed the inode %d -> %d" % (
        f[N_INO], g[N_INO])
    assert g[N_SIZE] == 20 and g[N_EXTRA] == mp.layout_bytes(lay2), g
    assert g[N_MTIME] >= f[N_MTIME]
    # A layout may come already encoded, as bin.
    r = c.create("/d/f", size=3, layout=mp.layout_bytes(lay1))
    assert r["node"][N_EXTRA] == mp.layout_bytes(lay1) and r["node"][N_INO] == f[N_INO]
    # No layout replaces the layout with none.
    r = c.create("/d/f")
    assert r["node"][N_EXTRA] is None and r["node"][N_SIZE] == 0, r
    r = c.create("/d/g", mtime=1234567890123456789)
    assert r["node"][N_MTIME] == 1234567890123456789
    v = c.version()
    c.error("EINVAL", CREATE, {"path": "/d/h", "layout": [["bkt", "key", "etag", 0]]},
            contains="extent")
    c.error("EINVAL", CREATE, {"path": "/d/h", "layout": [["", "key", "etag", 0, 1]]},
            contains="bucket")
    c.error("EINVAL", CREATE, {"path": "/d/h", "layout": "not a layout"}, contains="layout")
    c.error("EINVAL", CREATE, {"path": "/d/h", "layout": b"\xc1"}, contains="layout")
    ext = ["bkt", "k", "", 0, 1]
    c.error("E2BIG", CREATE, {"path": "/d/h", "layout": [ext] * 4097}, contains="4096")
    c.error("E2BIG", CREATE, {"path": "/d/h", "layout": [["bkt", "k" * 1000, "", 0, 1]] * 70},
            contains="65536")
    r = c.create("/d/big", layout=[ext] * 4096)
    assert r["node"][N_EXTRA] == mp.layout_bytes([ext] * 4096)
    c.unlink("/d/big")
    v += 2
    c.error("EISDIR", CREATE, {"path": "/d"})
    c.error("EISDIR", CREATE, {"path": "/"})
    c.error("ENOENT", CREATE, {"path": "/nope/f"})
    c.error("ENOTDIR", CREATE, {"path": "/d/f/x"})
    expect_version(c, v)
    c.error("ENOENT", RESOLVE, {"path": "/d/h"})

    r = c.symlink("/d/s", "../target/x", uid=5)
    s = r["node"]
    assert s[N_TYPE] == SYMLNK and s[N_EXTRA] == b"../target/x" and s[N_SIZE] == 11, s
    assert s[N_MODE] == 0o777 and s[N_UID] == 5
    c.error("EEXIST", SYMLINK, {"path": "/d/s", "target": "y"})
    c.error("EEXIST", SYMLINK, {"path": "/d/f", "target": "y"})
    c.error("EEXIST", CREATE, {"path": "/d/s"})
    # RESOLVE does not follow symlinks.
    assert c.resolve("/d/s")[N_INO] == s[N_INO]
    c.close()
    p.stop()


def test_unlink_rmdir_setattr(tmp):
    p, c = start(tmp)
    c.mkdir("/d")
    c.mkdir("/d/e")
    f = c.create("/d/f", size=1)["node"]
    c.symlink("/d/s", "/x")
    v = c.version()
    c.error("EISDIR", UNLINK, {"path": "/d/e"})
    c.error("ENOENT", UNLINK, {"path": "/d/nope"})
    c.error("ENOENT", UNLINK, {"path": "/nope/x"})
    c.error("ENOTDIR", UNLINK, {"path": "/d/f/x"})
    c.error("ENOTEMPTY", RMDIR, {"path": "/d"}, contains="/d")
    c.error("ENOTDIR", RMDIR, {"path": "/d/f"})
    c.error("ENOENT", RMDIR, {"path": "/d/nope"})
    c.error("EBUSY", RMDIR, {"path": "/"})
    c.error("ENOENT", SETATTR, {"path": "/d/nope", "mode": 0o600})
    c.error("EISDIR", SETATTR, {"path": "/d/e", "size": 5})
    c.error("EINVAL", SETATTR, {"path": "/d/s", "mode": 0o600})
    c.error("EINVAL", SETATTR, {"path": "/d/f", "mode": 0o17777})
    expect_version(c, v)

    r = c.setattr("/d/f", mode=0o4711, uid=11, gid=12, size=99, mtime=-5)
    n = r["node"]
    assert r["version"] == v + 1
    assert n[N_INO] == f[N_INO] and n[N_MODE] == 0o4711 and n[N_UID] == 11 and n[N_GID] == 12
    assert n[N_SIZE] == 99 and n[N_MTIME] == -5 and n[N_CTIME] >= f[N_CTIME], n
    assert c.getattr(f[N_INO]) == n
    r = c.setattr("/d/e", mode=0o711)
    assert r["node"][N_MODE] == 0o711 and r["node"][N_TYPE] == DIR

    before = c.resolve("/d")
    r = c.unlink("/d/f")
    assert r["version"] == v + 3 and "node" not in r, r
    c.error("ENOENT", GETATTR, {"ino": f[N_INO]})
    after = c.resolve("/d")
    assert after[N_MTIME] > before[N_MTIME], "unlink did not update the parent's mtime"
    c.unlink("/d/s")
    c.error("ENOENT", RESOLVE, {"path": "/d/s"})
    r = c.rmdir("/d/e")
    assert r["version"] == v + 5
    r = c.rmdir("/d/")
    assert r["version"] == v + 6
    assert c.readdir(path="/")["entries"] == []
    c.close()
    p.stop()


def test_rename(tmp):
    p, c = start(tmp)
    c.mkdir("/a")
    c.mkdir("/b")
    f = c.create("/a/f", size=1)["node"]
    a0, b0 = c.resolve("/a"), c.resolve("/b")
    r = c.rename("/a/f", "/b/g")
    n = r["node"]
    assert n[N_INO] == f[N_INO] and n[N_NAME] == "g" and n[N_PARENT] == b0[N_INO], n
    assert n[N_SIZE] == 1
    c.error("ENOENT", RESOLVE, {"path": "/a/f"})
    a1, b1 = c.resolve("/a"), c.resolve("/b")
    assert a1[N_MTIME] > a0[N_MTIME] and b1[N_MTIME] > b0[N_MTIME], (a0, a1, b0, b1)
    assert a1[N_MTIME] == b1[N_MTIME] == n[N_CTIME], "parents' mtimes and the ctime differ"

    # Replacing a file: the target inode goes, the source takes its name.
    h = c.create("/b/h", size=2)["node"]
    r = c.rename("/b/g", "/b/h")
    assert r["node"][N_INO] == f[N_INO]
    c.error("ENOENT", GETATTR, {"ino": h[N_INO]})
    assert c.resolve("/b/h")[N_INO] == f[N_INO]
    c.error("ENOENT", RESOLVE, {"path": "/b/g"})

    # Directories: onto an empty one replaces it; onto a non-empty one not.
    c.mkdir("/d1")
    c.create("/d1/x")
    empty = c.mkdir("/d2")["node"]
    c.mkdir("/d3")
    c.create("/d3/y")
    v = c.version()
    c.error("ENOTEMPTY", RENAME, {"from": "/d1", "to": "/d3"})
    c.error("ENOTDIR", RENAME, {"from": "/d1", "to": "/b/h"})
    c.error("EISDIR", RENAME, {"from": "/b/h", "to": "/d1"})
    c.error("EINVAL", RENAME, {"from": "/d1", "to": "/d1/sub"}, contains="subtree")
    c.mkdir("/d1/s1")
    c.mkdir("/d1/s1/s2")
    v += 2
    c.error("EINVAL", RENAME, {"from": "/d1", "to": "/d1/s1/s2/z"}, contains="subtree")
    c.error("ENOENT", RENAME, {"from": "/nope", "to": "/z"})
    c.error("ENOENT", RENAME, {"from": "/d1", "to": "/nope/z"})
    c.error("EBUSY", RENAME, {"from": "/", "to": "/z"})
    c.error("EBUSY", RENAME, {"from": "/d1", "to": "/"})
    expect_version(c, v)
    d1 = c.resolve("/d1")
    r = c.rename("/d1", "/d2")
    assert r["version"] == v + 1 and r["node"][N_INO] == d1[N_INO]
    c.error("ENOENT", GETATTR, {"ino": empty[N_INO]})
    assert c.resolve("/d2/s1/s2")[N_INO] == c.lookup(c.resolve("/d2/s1")[N_INO], "s2")[N_INO]
    assert c.resolve("/d2/x")

    # Onto itself: nothing changes, no version.
    v = c.version()
    for src, dst in (("/d2", "/d2"), ("/b/h", "/b//h/"), ("/d2/s1", "/d2/s1")):
        r = c.rename(src, dst)
        assert r["version"] == v, "rename %s onto itself made version %d" % (src, r["version"])
        assert r["node"][N_INO] == c.resolve(src)[N_INO]
    expect_version(c, v)
    c.close()
    p.stop()
    sc = p.storecheck()
    assert sc["log_newest"] == v and sc["log_count"] == v, sc


def test_batch(tmp):
    p, c = start(tmp)
    c.mkdir("/x")
    digest0 = p.status()["digest"]
    v = c.version()
    ops = [(MKDIR, {"path": "/b1"}), (CREATE, {"path": "/b1/f"}), (MKDIR, {"path": "/nope/x"}),
           (CREATE, {"path": "/b2"})]
    e = c.error("ENOENT", BATCH, {"ops": [[t, b] for t, b in ops]}, contains="op 2 (MKDIR)")
    assert e["version"] == v
    expect_version(c, v)
    c.error("ENOENT", RESOLVE, {"path": "/b1"})
    c.error("ENOENT", RESOLVE, {"path": "/b2"})
    assert p.status()["digest"] == digest0, "a failed batch changed the digest"
    # The failing op may be the last one, after a rename and a removal.
    ops = [(RENAME, {"from": "/x", "to": "/y"}), (RMDIR, {"path": "/y"}),
           (CREATE, {"path": "/y"})]
    c.error("EEXIST", BATCH, {"ops": [[t, b] for t, b in ops] + [[MKDIR, {"path": "/y"}]]},
            contains="op 3 (MKDIR)")
    assert c.resolve("/x")[N_TYPE] == DIR
    assert p.status()["digest"] == digest0
    # Shape errors.
    c.error("EINVAL", BATCH, {"ops": [[MKDIR, {"path": "/q"}], [MKDIR]]}, contains="op 1")
    c.error("EINVAL", BATCH, {"ops": [[BATCH, {"ops": []}]]}, contains="op 0")
    c.error("EINVAL", BATCH, {"ops": [[RESOLVE, {"path": "/"}]]}, contains="op 0")
    c.error("EINVAL", BATCH, {"ops": "x"}, contains="ops")
    c.error("EINVAL", BATCH, {}, contains="ops")
    c.error("EINVAL", BATCH, {"ops": [[MKDIR, {"path": 5}]]}, contains="path")
    expect_version(c, v)

    r = c.batch([(MKDIR, {"path": "/b1"}), (CREATE, {"path": "/b1/f", "size": 3}),
                 (SYMLINK, {"path": "/b1/s", "target": "f"}), (UNLINK, {"path": "/b1/s"}),
                 (RENAME, {"from": "/b1/f", "to": "/b1/g"}), (SETATTR,
                                                             {"path": "/b1", "mode": 0o700})])
    assert r["version"] == v + 1, r
    inos = r["inos"]
    assert len(inos) == 6 and inos[3] == 0, inos
    assert inos[0] == c.resolve("/b1")[N_INO] == inos[5]
    assert inos[1] == inos[4] == c.resolve("/b1/g")[N_INO]
    c.error("ENOENT", GETATTR, {"ino": inos[2]})
    assert c.resolve("/b1")[N_MODE] == 0o700

    # Nothing to do: no version.
    r = c.batch([])
    assert r["version"] == v + 1 and r["inos"] == [], r
    r = c.batch([(MKDIR, {"path": "/b1", "parents": True}), (RENAME, {"from": "/b1", "to": "/b1"})])
    assert r["version"] == v + 1 and r["inos"] == [inos[0], inos[0]], r
    expect_version(c, v + 1)

    # 10,000 ops is the limit: one version holding them all.
    big = [[CREATE, {"path": "/big/f%05d" % i}] for i in range(9999)]
    r = c.batch([(MKDIR, {"path": "/big"})] + [tuple(o) for o in big])
    assert r["version"] == v + 2 and len(r["inos"]) == 10000
    assert len(set(r["inos"])) == 10000
    st = p.status()
    assert st["version"] == v + 2 and st["entries"] == 1 + 1 + 2 + 1 + 9999, st
    e = c.error("E2BIG", BATCH, {"ops": big + [[CREATE, {"path": "/big/a"}],
                                              [CREATE, {"path": "/big/b"}]]},
                contains="10000")
    expect_version(c, v + 2)
    c.error("ENOENT", RESOLVE, {"path": "/big/a"})
    c.close()
    p.stop()


def test_readdir(tmp):
    p, c = start(tmp)
    c.mkdir("/big")
    rnd = random.Random(7)
    names = set()
    while len(names) < 2500:
        n = bytes(rnd.choice(b"abcXYZ019_-.\xc3\xa9\xff") for _ in range(rnd.randint(1, 12)))
        if n not in (b".", b".."):
            names.add(n)
    names = list(names)
    rnd.shuffle(names)
    for i in range(0, len(names), 1000):
        c.batch([(CREATE, {"path": b"/big/" + n}) if j % 2 else (MKDIR, {"path": b"/big/" + n})
                 for j, n in enumerate(names[i:i + 1000])])
    want = sorted(names)  # byte order
    dir_ino = c.resolve("/big")[N_INO]
    pages, cursor, got = [], None, []
    while True:
        r = c.readdir(path="/big", cursor=cursor, limit=1000)
        assert r["dir"] == dir_ino
        pages.append(len(r["entries"]))
        got.extend(r["entries"])
        if r["next"] is None:
            break
        assert mp.name_bytes(r["next"]) == mp.name_bytes(r["entries"][-1][N_NAME])
        cursor = mp.name_bytes(r["next"])
        assert len(pages) < 10, "READDIR does not end"
    assert pages == [1000, 1000, 500], pages
    assert [mp.name_bytes(n[N_NAME]) for n in got] == want, "entries not in byte order"
    assert all(n[N_PARENT] == dir_ino for n in got)
    # By inode, default limit 1000.
    r = c.readdir(ino=dir_ino)
    assert len(r["entries"]) == 1000 and r["entries"] == got[:1000]
    # A cursor need not be an existing name.
    mid = want[1234] + b"\x01"
    r = c.readdir(ino=dir_ino, cursor=mid, limit=10000)
    assert [mp.name_bytes(n[N_NAME]) for n in r["entries"]] == [n for n in want if n > mid]
    assert r["next"] is None
    r = c.readdir(ino=dir_ino, cursor=want[-1])
    assert r["entries"] == [] and r["next"] is None
    # Exactly the limit left: the page is full and the next is empty or nil.
    r = c.readdir(ino=dir_ino, cursor=want[-11], limit=10)
    assert len(r["entries"]) == 10
    if r["next"] is not None:
        r2 = c.readdir(ino=dir_ino, cursor=mp.name_bytes(r["next"]), limit=10)
        assert r2["entries"] == [] and r2["next"] is None
    # Errors.
    c.create("/file")
    c.error("ENOTDIR", READDIR, {"path": "/file"})
    c.error("ENOENT", READDIR, {"path": "/nope"})
    c.error("ENOENT", READDIR, {"ino": 999999})
    c.error("EINVAL", READDIR, {"path": "/big", "limit": 0})
    c.error("EINVAL", READDIR, {"path": "/big", "limit": 10001})
    c.error("EINVAL", READDIR, {})
    c.error("EINVAL", LOOKUP, {"parent": 1})
    c.error("ENOENT", LOOKUP, {"parent": 1, "name": "nope"})
    c.error("ENOENT", GETATTR, {"ino": 424242})
    c.error("EINVAL", GETATTR, {"ino": "x"})
    c.close()
    p.stop()


def test_versions_and_restart(tmp):
    p, c = start(tmp)
    seen = []
    seen.append(c.mkdir("/v")["version"])
    seen.append(c.create("/v/f", size=5, layout=mp.layout(["b", "k", "e", 0, 5]))["version"])
    seen.append(c.symlink("/v/s", "f")["version"])
    seen.append(c.setattr("/v/f", uid=3)["version"])
    seen.append(c.rename("/v/f", "/v/g")["version"])
    seen.append(c.batch([(MKDIR, {"path": "/w"}), (CREATE, {"path": "/w/x"})])["version"])
    seen.append(c.unlink("/v/s")["version"])
    c.mkdir("/z")
    seen.append(c.rmdir("/z")["version"])
    assert seen == [1, 2, 3, 4, 5, 6, 7, 9], seen
    e = c.error("ENOENT", UNLINK, {"path": "/v/s"})
    assert e["version"] == 9
    # Two clients' writes interleave; each reply still carries its own version.
    c2 = p.client()
    vs = sorted([c.mkdir("/m1")["version"], c2.mkdir("/m2")["version"],
                 c.create("/m1/f")["version"], c2.create("/m2/f")["version"]])
    assert vs == [10, 11, 12, 13], vs
    assert c2.version() == 13 and c2.req(mp.VERSION, {})["cluster_id"] == p.status()["cluster_id"]
    for i in range(40):
        c.mkdir("/many%02d" % i)
    nodes = sorted(mp.all_nodes(c))
    st = p.status()
    assert st["version"] == 53 and st["entries"] == len(nodes), (st, len(nodes))
    assert st["digest"] == mp.digest_of(nodes).hex(), (st["digest"], mp.digest_of(nodes).hex())
    m = p.metrics()
    assert m["mp_primary_version"] == 53, m.get("mp_primary_version")
    c.close()
    c2.close()
    p.stop()

    sc = p.storecheck()
    assert sc["version"] == 53, sc
    assert sc["meta_digest"] == sc["recomputed_digest"] == st["digest"], sc
    assert sc["log_oldest"] == 1 and sc["log_newest"] == 53 and sc["log_contiguous"], sc
    assert sc["records_valid"] and sc["replay_digest"] == st["digest"], sc
    assert sc["log_last_digest"] == st["digest"] and sc["entries"] == len(nodes), sc

    p.start()
    c = p.client()
    assert c.version() == 53
    again = sorted(mp.all_nodes(c))
    assert again == nodes, "the namespace differs after a restart"
    st2 = p.status()
    assert st2["digest"] == st["digest"] and st2["version"] == 53 and st2["cluster_id"] == \
        st["cluster_id"], (st, st2)
    assert st2["change_log"]["oldest_version"] == 1, st2
    max_ino = max(n[N_INO] for n in nodes)
    r = c.create("/after")
    assert r["version"] == 54 and r["node"][N_INO] > max_ino, (r, max_ino)
    c.close()
    p.stop()


if __name__ == "__main__":
    mp.main(globals())
