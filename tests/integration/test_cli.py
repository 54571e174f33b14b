#!/usr/bin/python3
"""The mp CLI against a real primary and a real mirror, with the primary's
default file:// origin (DATA_DIR/objects): round trips of file bytes (put,
get and cat at the mirror, sizes around the part size and one past 100 MiB),
objects never overwritten, put -r / get -r of a tree, ls of a directory of
several READDIR pages, the --json documents, the metadata commands, the
session cookie across processes at a lagging mirror, imports from a file://
bucket, and bad input (exit status 2 for usage, 1 for a failed operation,
one line on stderr naming the problem).

Every mp run is a subprocess with explicit --primary/--mirror flags and its
own session file under the test's temporary directory (mp.Cli).

The round-trip, overwrite and tree helpers are shared with test_cli_s3.py,
which runs them against an s3rver origin."""

import hashlib
import os
import random
import signal
import socket
import stat
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from mp import CREATE, MKDIR, SYMLINK  # noqa: E402

MiB = 1 << 20
# Around the 8 MiB part size (one PUT up to it, multipart past it) and the
# 5 MiB S3 minimum part.
SIZES = [0, 1, 5 * MiB - 1, 8 * MiB, 8 * MiB + 1, 30 * MiB]
BIG = 105 * MiB  # many parts, uploaded and fetched in parallel

MIRROR_CONFIG = {"reconnect": {"min": "50ms", "max": "300ms"}}


def cluster(tmp, primary_config=None):
    """A primary and a mirror of it."""
    p = mp.Primary(tmp, config=primary_config)
    m = mp.Mirror(tmp, p, config=MIRROR_CONFIG)
    return p, m


def sha(data):
    return hashlib.sha256(data).hexdigest()


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def write_random(path, size, seed):
    """size pseudo-random bytes (seeded) at path; returns their SHA-256."""
    rng = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 4 * MiB)
            b = rng.randbytes(n)
            h.update(b)
            f.write(b)
            left -= n
    return h.hexdigest()


def one_line(r, *words):
    """r failed with exactly one line on stderr and nothing on stdout; the
    line starts with "mp:" and mentions each of words."""
    assert r.rc != 0, r
    lines = r.err.split("\n")
    assert len(lines) == 2 and lines[1] == "" and lines[0], \
        "expected exactly one line on stderr: %r" % r
    assert lines[0].startswith("mp:"), "stderr does not start with 'mp:': %r" % r
    assert r.out == b"", "a failed mp printed on stdout: %r" % r
    for w in words:
        assert w.lower() in lines[0].lower(), "stderr %r does not mention %r" % (lines[0], w)
    return lines[0]


class FileBackend:
    """The primary's default origin: objects are files under DATA_DIR/objects."""

    name = "file"
    primary_config = None
    options = ()

    def __init__(self, primary):
        self.dir = os.path.join(os.path.realpath(primary.data_dir), "objects")

    def watch(self):
        """Nothing watches a directory's writes."""
        return None

    def object_size(self, key):
        """The stored object's size, or None when it does not exist."""
        try:
            return os.path.getsize(os.path.join(self.dir, key))
        except FileNotFoundError:
            return None


def check_layout(node, size, backend, object_size=64 * MiB):
    """node (from mp --json stat) is a file of size bytes whose layout is new
    objects of the origin bucket, object_size bytes each but the last, which
    exist with those sizes. Returns the first object's key."""
    assert node["type"] == "file" and node["size"] == size, node
    ext = node["extents"]
    if size == 0:
        assert ext == [], "an empty file with a layout: %r" % ext
        return None
    want = (size + object_size - 1) // object_size
    assert len(ext) == want, "expected %d extent(s): %r" % (want, ext)
    assert len(set(e["key"] for e in ext)) == len(ext), "an object used twice: %r" % ext
    for i, e in enumerate(ext):
        length = min(object_size, size - i * object_size)
        assert e["bucket"] == "origin" and e["offset"] == 0 and e["length"] == length, e
        assert e["key"].startswith("mp/") and len(e["key"]) > 10, e
        assert e["etag"], e
        got = backend.object_size(e["key"])
        assert got == length, "object %s holds %r bytes, the extent %d" % (e["key"], got, length)
    return ext[0]["key"]


# Options that make a put one object sent as a multipart upload.
MULTIPART = ["object_size=1GiB", "multipart_threshold=5MiB"]


def roundtrip(tmp, cli, backend, path, size, seed, options=(), parts=None):
    """put a file of size bytes at path, then stat, get and cat it at the
    mirror; the bytes must come back (SHA-256). parts: how many parts the
    upload must have been made of, when the backend can watch (s3)."""
    src = os.path.join(tmp, "src-%d-%d" % (size, seed))
    want = write_random(src, size, seed)
    t0 = time.monotonic()
    watcher = backend.watch() if parts is not None else None
    if parts is not None:
        options = list(options) + MULTIPART
    object_size = (1 << 30) if "object_size=1GiB" in options else 64 * MiB
    put_options = list(options)
    if watcher is not None:
        put_options.append("buckets.origin.endpoint=" + watcher.endpoint)
    try:
        put = cli.json("put", src, path, options=put_options)
        if watcher is not None:
            assert watcher.part_puts() == parts, \
                "put of %d bytes: %d parts, expected %d" % (size, watcher.part_puts(), parts)
    finally:
        if watcher is not None:
            watcher.close()
    assert isinstance(put.get("version"), int) and put["version"] > 0, put
    node = cli.json("stat", path, options=options)["nodes"][0]
    check_layout(node, size, backend, object_size)
    assert node["version"] >= put["version"], \
        "stat at version %d after a put at %d: not read-your-writes" % (node["version"],
                                                                        put["version"])
    assert node["served_by"].startswith("mirror "), \
        "the read was not served by the mirror: %r" % node
    assert node["mode"] == "%04o" % (os.stat(src).st_mode & 0o7777), node
    dst = os.path.join(tmp, "got-%d-%d" % (size, seed))
    cli.run("get", path, dst, options=options)
    assert os.path.getsize(dst) == size, (dst, os.path.getsize(dst), size)
    assert file_sha(dst) == want, "get %s (%d bytes): the bytes differ" % (path, size)
    out = cli.run("cat", path, options=options).out
    assert len(out) == size and sha(out) == want, \
        "cat %s: %d bytes that differ from the %d put" % (path, len(out), size)
    os.unlink(dst)
    os.unlink(src)
    return time.monotonic() - t0


def roundtrips(tmp, cli, backend, big=True):
    for i, size in enumerate(SIZES):
        roundtrip(tmp, cli, backend, "/rt/f%d" % size, size, seed=i)
    # Smaller parts: 30 MiB in six.
    roundtrip(tmp, cli, backend, "/rt/parts5", 30 * MiB, seed=100,
              options=["part_size=5MiB"], parts=6)
    if big:
        roundtrip(tmp, cli, backend, "/rt/big", BIG, seed=101, parts=BIG // (8 * MiB) + 1)
    # Standard input and standard output.
    data = random.Random(7).randbytes(3 * MiB + 17)
    cli.run("put", "-", "/rt/stdin", input=data)
    assert cli.run("get", "/rt/stdin", "-").out == data
    check_layout(cli.json("stat", "/rt/stdin")["nodes"][0], len(data), backend)
    # Into an existing directory: the local file's name is appended; with
    # several operands, each goes in by name; cat concatenates.
    names = {"named.bin": b"named", "second": b"2nd" * 1000, "third": b""}
    for n, v in names.items():
        with open(os.path.join(tmp, n), "wb") as f:
            f.write(v)
    cli.run("put", os.path.join(tmp, "named.bin"), "/rt")
    assert cli.run("cat", "/rt/named.bin").out == b"named"
    cli.run("mkdir", "/rt/many")
    cli.run("put", *[os.path.join(tmp, n) for n in names], "/rt/many")
    assert cli.run("ls", "/rt/many").text.split() == sorted(names)
    assert cli.run("cat", "/rt/many/second", "/rt/many/named.bin").out == b"2nd" * 1000 + b"named"
    down = os.path.join(tmp, "down")
    os.mkdir(down)
    cli.run("get", "/rt/many/second", "/rt/many/third", "/rt/named.bin", down)
    assert sorted(os.listdir(down)) == ["named.bin", "second", "third"], os.listdir(down)
    for n, v in names.items():
        with open(os.path.join(down, n), "rb") as f:
            assert f.read() == v, n
    one_line(cli.run("put", os.path.join(tmp, "second"), os.path.join(tmp, "third"),
                     "/rt/not-a-dir", expect=1), "/rt/not-a-dir")


def overwrite(tmp, cli, backend):
    """A second put of a path makes a new object; the first stays."""
    a = os.path.join(tmp, "a")
    with open(a, "wb") as f:
        f.write(b"first version\n" * 1000)
    cli.run("put", a, "/ow/file")
    k1 = check_layout(cli.json("stat", "/ow/file")["nodes"][0], 14000, backend)
    with open(a, "wb") as f:
        f.write(b"second, longer version\n" * 1000)
    cli.run("put", a, "/ow/file")
    k2 = check_layout(cli.json("stat", "/ow/file")["nodes"][0], 23000, backend)
    assert k1 != k2, "the second put reused the object key %s" % k1
    assert backend.object_size(k1) == 14000, "the first object was overwritten or removed"
    assert backend.object_size(k2) == 23000
    assert cli.run("cat", "/ow/file").out == b"second, longer version\n" * 1000


def make_tree(root):
    """Nested directories, 200 small files, an empty file, an empty
    directory, an executable, a symlink."""
    rng = random.Random(3)
    os.makedirs(root)
    for i in range(200):
        d = os.path.join(root, "d%d" % (i % 5), "e%d" % (i % 3)) if i % 4 else root
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "file%03d.dat" % i), "wb") as f:
            f.write(rng.randbytes(rng.randrange(1, 5000)))
    open(os.path.join(root, "d1", "empty"), "wb").close()
    os.makedirs(os.path.join(root, "d2", "emptydir", "deeper"))
    with open(os.path.join(root, "run.sh"), "wb") as f:
        f.write(b"#!/bin/sh\necho hi\n")
    os.chmod(os.path.join(root, "run.sh"), 0o755)
    os.symlink("d1/e1/file001.dat", os.path.join(root, "link"))


def tree_state(root):
    """relative path -> what it is, for comparing two trees."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            r = os.path.normpath(os.path.join(rel, n))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[r] = ("symlink", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[r] = ("dir",)
            else:
                out[r] = ("file", st.st_size, file_sha(p), oct(st.st_mode & 0o777))
    return out


def tree_roundtrip(tmp, cli, backend):
    src = os.path.join(tmp, "tree")
    make_tree(src)
    cli.run("mkdir", "/trees")
    cli.run("put", "-r", src, "/trees")  # an existing directory: into /trees/tree
    link = cli.json("stat", "/trees/tree/link")["nodes"][0]
    assert link["type"] == "symlink" and link["target"] == "d1/e1/file001.dat", link
    assert cli.json("stat", "/trees/tree/d1/empty")["nodes"][0]["size"] == 0
    node = cli.json("stat", "/trees/tree/d2/e1/file007.dat")["nodes"][0]
    check_layout(node, os.path.getsize(os.path.join(src, "d2", "e1", "file007.dat")), backend)
    want = tree_state(src)
    assert len(want) > 200, len(want)

    def same(dst):
        got = tree_state(dst)
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        differ = sorted(k for k in want if k in got and want[k] != got[k])
        assert not missing and not extra and not differ, \
            "get -r differs from what put -r sent: missing %r, extra %r, differing %r" % (
                missing[:10], extra[:10], [(k, want[k], got[k]) for k in differ[:10]])

    dst = os.path.join(tmp, "tree-back")  # does not exist: made as dst
    cli.run("get", "-r", "/trees/tree", dst)
    same(dst)
    # A remote directory that does not exist is made as REMOTE; a local
    # directory that exists receives the tree by name.
    cli.run("put", "-r", src, "/trees/renamed")
    os.mkdir(os.path.join(tmp, "into"))
    cli.run("get", "-r", "/trees/renamed", os.path.join(tmp, "into"))
    same(os.path.join(tmp, "into", "renamed"))


# ---------------------------------------------------------------- tests

def test_roundtrip_file_origin(tmp):
    p, m = cluster(tmp)
    backend = FileBackend(p)
    cli = mp.Cli(tmp, p, m)
    roundtrips(tmp, cli, backend)
    overwrite(tmp, cli, backend)
    tree_roundtrip(tmp, cli, backend)
    p.stop()
    m.stop()


def test_ls_pages(tmp):
    """A directory of 2,500 entries (three READDIR pages) lists whole and in
    byte order, as text and as JSON, at the mirror."""
    p, m = cluster(tmp)
    rng = random.Random(5)
    names = set()
    while len(names) < 2500:
        n = rng.choice(["f", "F", "a-", "Z_", "é", "0", "a.b", "ü"]) + str(rng.randrange(10 ** 6))
        names.add(n)
    names = sorted(names)
    order = list(names)
    rng.shuffle(order)
    c = p.client()
    c.mkdir("/big")
    for i in range(0, len(order), 1000):
        ops = []
        for k, n in enumerate(order[i:i + 1000]):
            if k % 3 == 0:
                ops.append((MKDIR, {"path": "/big/" + n}))
            elif k % 3 == 1:
                ops.append((SYMLINK, {"path": "/big/" + n, "target": "x"}))
            else:
                ops.append((CREATE, {"path": "/big/" + n, "size": 0}))
        c.batch(ops)
    c.close()
    want = sorted(names, key=lambda s: s.encode())
    cli = mp.Cli(tmp, p, m)
    m.wait_caught_up(p)
    got = cli.run("ls", "/big").text.split("\n")
    assert got[-1] == "", "ls output does not end with a newline"
    got = got[:-1]
    assert len(got) == 2500, "ls printed %d names of 2500" % len(got)
    assert got == want, "ls is not in byte order or lost names: first difference at %d" % next(
        i for i in range(2500) if got[i] != want[i])
    doc = cli.json("ls", "/big")
    assert list(doc) == ["listings"] and len(doc["listings"]) == 1, list(doc)
    lst = doc["listings"][0]
    assert lst["path"] == "/big" and lst["type"] == "dir", lst
    assert [e["name"] for e in lst["entries"]] == want
    assert all(e["path"] == "/big/" + e["name"] for e in lst["entries"])
    long_ = cli.run("ls", "-l", "/big").text.splitlines()
    assert len(long_) == 2500
    assert sum(1 for line in long_ if line.startswith("l") and line.endswith(" -> x")) == \
        sum(1 for e in lst["entries"] if e["type"] == "symlink")
    p.stop()
    m.stop()


def check_node_json(n, path=None):
    for k, t in (("path", str), ("name", str), ("type", str), ("ino", int), ("parent", int),
                 ("mode", str), ("uid", int), ("gid", int), ("size", int), ("mtime_ns", int),
                 ("mtime", str), ("ctime_ns", int), ("ctime", str)):
        assert isinstance(n.get(k), t), "node field %s: %r in %r" % (k, n.get(k), n)
    assert n["type"] in ("dir", "file", "symlink"), n
    assert len(n["mode"]) == 4 and int(n["mode"], 8) <= 0o7777, n
    assert n["mtime"].endswith("Z") and n["mtime"][4] == "-", n
    if path is not None:
        assert n["path"] == path, n


def test_json_shapes(tmp):
    p, m = cluster(tmp)
    cli = mp.Cli(tmp, p, m)
    cli.run("mkdir", "-p", "/j/sub")
    cli.run("put", "-", "/j/file", input=b"0123456789")
    cli.run("ln", "-s", "file", "/j/link")
    doc = cli.json("ls", "/j")
    assert set(doc) == {"listings"} and len(doc["listings"]) == 1, doc
    d = doc["listings"][0]
    assert d["path"] == "/j" and d["type"] == "dir" and len(d["entries"]) == 3, d
    for e in d["entries"]:
        check_node_json(e, "/j/" + e["name"])
    assert [e["name"] for e in d["entries"]] == ["file", "link", "sub"], d
    assert d["entries"][1]["target"] == "file", d
    assert "extents" not in d["entries"][0], d
    f = cli.json("ls", "/j/file")["listings"][0]
    assert f["type"] == "file" and len(f["entries"]) == 1 and f["entries"][0]["size"] == 10, f

    doc = cli.json("stat", "/j/file", "/j/link", "/j")
    assert set(doc) == {"nodes"} and len(doc["nodes"]) == 3, doc
    for n, path in zip(doc["nodes"], ("/j/file", "/j/link", "/j")):
        check_node_json(n, path)
        assert isinstance(n["version"], int) and n["version"] > 0, n
        assert n["served_by"].split(" ")[0] in ("mirror", "primary"), n
    assert isinstance(doc["nodes"][0]["extents"], list) and doc["nodes"][0]["extents"], doc
    assert doc["nodes"][1]["target"] == "file", doc

    st = cli.json("status")
    assert set(st) == {"primary_up", "servers", "cache_group", "sites"} and st["primary_up"] is True, st
    assert st["cache_group"] == [], st  # no mp-cache in this test
    roles = {s["address"]: s for s in st["servers"]}
    assert set(roles) == {p.address, m.address}, st
    assert roles[p.address]["role"] == "primary" and roles[m.address]["role"] == "mirror"
    assert roles[m.address]["site"] == m.site, st
    for s in st["servers"]:
        assert s["up"] is True and s["state"] == "up" and isinstance(s["version"], int), s
        assert isinstance(s["rtt_ms"], (int, float)) and isinstance(s["lag_versions"], int), s
        assert s["staleness_ms"] is None or isinstance(s["staleness_ms"], int), s

    v = cli.json("version")
    assert set(v) == {"client", "primary", "mirror", "mirror_address", "cluster_id"}, v
    assert v["cluster_id"] == p.status()["cluster_id"], (v, p.status())
    assert v["primary"] == p.status()["version"] and v["mirror_address"] == m.address, v
    assert isinstance(v["mirror"], int) and v["mirror"] <= v["primary"], v

    # Writes print {"version": N}, increasing.
    a = cli.json("mkdir", "/j/x")["version"]
    b = cli.json("mv", "/j/x", "/j/y")["version"]
    c = cli.json("rm", "/j/y")["version"]
    assert 0 < a < b < c, (a, b, c)
    # Without a mirror: version says so, and status shows the primary alone.
    solo = mp.Cli(tmp, p)
    v = solo.json("version")
    assert v["mirror"] is None and v["mirror_address"] is None, v
    # A mirror that is down: status says why, exit 0 while the primary is up.
    dead = mp.Cli(tmp, p, "127.0.0.1:%d" % mp.free_port())
    st = dead.json("status")
    down = [s for s in st["servers"] if s["role"] == "mirror"]
    assert len(down) == 1 and down[0]["up"] is False and down[0]["error"], st
    # Several operands, directories among them: still one JSON document.
    doc = cli.json("ls", "/j", "/j/file", "/j/sub")
    assert [(x["path"], x["type"], len(x["entries"])) for x in doc["listings"]] == [
        ("/j", "dir", 3), ("/j/file", "file", 1), ("/j/sub", "dir", 0)], doc
    p.stop()
    m.stop()


def test_meta_commands(tmp):
    p, m = cluster(tmp)
    cli = mp.Cli(tmp, p, m)

    def kinds(path):
        return {e["name"]: e["type"] for e in cli.json("ls", path)["listings"][0]["entries"]}

    cli.run("mkdir", "-p", "/m/a/b/c")
    cli.run("mkdir", "-p", "/m/a/b/c")  # exists: no error with -p
    one_line(cli.run("mkdir", "/m/a", expect=1), "/m/a", "exist")
    cli.run("mkdir", "-m", "700", "/m/private")
    assert cli.json("stat", "/m/private")["nodes"][0]["mode"] == "0700"
    cli.run("put", "-", "/m/a/b/c/f", input=b"data")
    cli.run("ln", "-s", "../a/b/c/f", "/m/a/link")
    n = cli.json("stat", "/m/a/link")["nodes"][0]
    assert n["type"] == "symlink" and n["target"] == "../a/b/c/f", n
    assert "link -> ../a/b/c/f" in cli.run("ls", "-l", "/m/a").text
    # ln without -s is refused.
    one_line(cli.run("ln", "x", "/m/y", expect=2), "ln -s")
    cli.run("mv", "/m/a/b", "/m/moved")
    assert kinds("/m") == {"a": "dir", "moved": "dir", "private": "dir"}, kinds("/m")
    assert cli.run("cat", "/m/moved/c/f").out == b"data"
    one_line(cli.run("stat", "/m/a/b", expect=1), "/m/a/b", "no such")
    # rm of a non-empty directory needs -r; rm -r takes the tree.
    one_line(cli.run("rm", "/m/moved", expect=1), "/m/moved")
    cli.run("rm", "-r", "/m/moved")
    one_line(cli.run("stat", "/m/moved/c/f", expect=1), "no such")
    cli.run("rm", "/m/a/link")
    cli.run("rm", "-f", "/m/not-there")
    one_line(cli.run("rm", "/m/not-there", expect=1), "/m/not-there")
    one_line(cli.run("rm", "-r", "/", expect=1), "root")
    assert kinds("/m") == {"a": "dir", "private": "dir"}, kinds("/m")
    cli.run("rm", "-r", "/m")
    assert "m" not in kinds("/")
    p.stop()
    m.stop()


class StreamRelay:
    """A TCP relay between a mirror and its upstream (target: HOST:PORT)
    that can hold back what the upstream sends, so that the mirror keeps
    answering reads but lags."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.flowing = threading.Event()
        self.flowing.set()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.lsock.accept()
                up = socket.create_connection(self.target, timeout=10)
            except OSError:
                return
            up.settimeout(None)
            self.socks += [down, up]
            threading.Thread(target=self._pump, args=(down, up, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, True), daemon=True).start()

    def _pump(self, src, dst, holdable):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if holdable:
                    self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hold(self):
        self.flowing.clear()

    def release(self):
        self.flowing.set()

    def close(self):
        self.release()
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def test_session_cookie(tmp):
    """mp put then mp cat, separate processes sharing a session file, at a
    mirror stopped (SIGSTOP) during the put and for ~300 ms after it: the
    cat returns the new bytes (the mirror waits for the version, or the read
    falls back to the primary). With a fresh session file an eventual read
    may be stale, but it works."""
    p, m = cluster(tmp)
    cli = mp.Cli(tmp, p, m)
    cli.run("put", "-", "/s/f", input=b"old bytes")
    m.wait_caught_up(p)
    cluster_id = p.status()["cluster_id"]
    data = None
    for i in range(4):
        data = b"new bytes %d " % i * (1000 * (i + 1))
        m.signal(signal.SIGSTOP)
        resume = None
        try:
            # A put from standard input never reads at the mirror.
            version = cli.json("put", "-", "/s/f", input=data)["version"]
            resume = threading.Timer(0.3, os.kill, (m.pid, signal.SIGCONT))
            resume.start()
            if i % 2 == 0:
                got = cli.run("cat", "/s/f").out
                assert got == data, "cat after put at a lagging mirror: %r..., expected %r..." % (
                    got[:40], data[:40])
            else:
                node = cli.json("stat", "/s/f")["nodes"][0]
                assert node["size"] == len(data) and node["version"] >= version, \
                    "stat after put at version %d: %r" % (version, node)
        finally:
            if resume is not None:
                resume.join()
            os.kill(m.pid, signal.SIGCONT)
        with open(cli.session) as f:
            line = f.read().split("\n")[0].split(" ")
        assert line[0] == cluster_id and int(line[1]) >= version, \
            "session file %r after a put at version %d" % (line, version)
    # A fresh session file and eventual consistency: stale is allowed.
    m.signal(signal.SIGSTOP)
    resume = None
    try:
        cli.run("put", "-", "/s/f", input=b"newest")
        resume = threading.Timer(0.3, os.kill, (m.pid, signal.SIGCONT))
        resume.start()
        r = cli.run("--consistency", "eventual", "cat", "/s/f",
                    session=os.path.join(tmp, "fresh-session"))
        assert r.out in (b"newest", data), r
    finally:
        if resume is not None:
            resume.join()
        os.kill(m.pid, signal.SIGCONT)
    m.wait_caught_up(p)
    p.stop()
    m.stop()


def test_session_cookie_lagging_stream(tmp):
    """The same with a mirror that keeps answering but lags: its change
    stream is held back in a relay during the put and for 300 ms after it
    (the mirror's status shows the lag). mp cat with the put's session file
    must return the new bytes; a read with a fresh session file works
    (stale or not)."""
    p = mp.Primary(tmp)
    relay = StreamRelay(p.address)
    m = mp.Mirror(tmp, relay.address, config=MIRROR_CONFIG)
    try:
        cli = mp.Cli(tmp, p, m)
        cli.run("put", "-", "/s/f", input=b"old bytes")
        m.wait_caught_up(p)
        for i in range(3):
            data = b"lagging %d " % i * 5000
            relay.hold()
            release = None
            try:
                version = cli.json("put", "-", "/s/f", input=data)["version"]
                applied = m.status()["applied_version"]
                assert applied < version, \
                    "the mirror has version %d although its stream is held" % applied
                release = threading.Timer(0.3, relay.release)
                release.start()
                if i == 2:
                    r = cli.run("--consistency", "eventual", "cat", "/s/f",
                                session=os.path.join(tmp, "fresh%d" % i))
                    assert r.out in (data, b"lagging %d " % (i - 1) * 5000), r
                    r = cli.run("cat", "/s/f")  # the put's session again
                else:
                    r = cli.run("cat", "/s/f")
                assert r.out == data, \
                    "cat with the session of a put at version %d (mirror at %d): %r..." % (
                        version, applied, r.out[:40])
            finally:
                if release is not None:
                    release.join()
                relay.release()
        m.wait_caught_up(p)
        p.stop()
        m.stop()
    finally:
        relay.close()


def test_import_file_bucket(tmp):
    """import from a file:// bucket alias: keys below the prefix become
    files pointing at the objects; a re-run updates, removes and creates."""
    p, m = cluster(tmp)
    bucket = os.path.join(tmp, "bucket")
    objs = {
        "pfx/a.txt": b"alpha",
        "pfx/sub/b.bin": random.Random(1).randbytes(70000),
        "pfx/sub/deeper/c": b"",
        "pfx/sub/deeper/d": b"delta" * 100,
        "pfx2/not-imported": b"other prefix",
        "outside": b"no prefix",
    }
    for k, v in objs.items():
        os.makedirs(os.path.dirname(os.path.join(bucket, k)), exist_ok=True)
        with open(os.path.join(bucket, k), "wb") as f:
            f.write(v)
    cli = mp.Cli(tmp, p, m, options=["buckets.local.url=file://" + bucket])
    st = cli.json("import", "local/pfx", "/imp")
    want = {k[4:]: v for k, v in objs.items() if k.startswith("pfx/")}
    assert st["source"] == "local/pfx" and st["dest"] == "/imp", st
    assert (st["listed"], st["created"], st["updated"], st["unchanged"], st["removed"],
            st["skipped"]) == (4, 4, 0, 0, 0, 0), st
    assert st["bytes"] == sum(len(v) for v in want.values()), st
    for rel, v in want.items():
        n = cli.json("stat", "/imp/" + rel)["nodes"][0]
        assert n["type"] == "file" and n["size"] == len(v), n
        if v:
            e = n["extents"]
            assert len(e) == 1 and e[0]["bucket"] == "local" and e[0]["key"] == "pfx/" + rel, e
        assert cli.run("cat", "/imp/" + rel).out == v, rel
    one_line(cli.run("stat", "/imp/not-imported", expect=1), "no such")
    # Change one, delete one, add one.
    with open(os.path.join(bucket, "pfx/a.txt"), "wb") as f:
        f.write(b"alpha, changed")
    os.unlink(os.path.join(bucket, "pfx/sub/deeper/d"))
    with open(os.path.join(bucket, "pfx/new"), "wb") as f:
        f.write(b"brand new")
    st2 = cli.json("import", "local/pfx", "/imp")
    assert cli.run("cat", "/imp/a.txt").out == b"alpha, changed"
    assert cli.run("cat", "/imp/new").out == b"brand new"
    one_line(cli.run("stat", "/imp/sub/deeper/d", expect=1), "no such")
    # The empty object grows: its file must follow.
    with open(os.path.join(bucket, "pfx/sub/deeper/c"), "wb") as f:
        f.write(b"no longer empty")
    st3 = cli.json("import", "local/pfx", "/imp")
    got3 = cli.run("cat", "/imp/sub/deeper/c").out
    stats = lambda st: (st["listed"], st["created"], st["updated"], st["unchanged"],  # noqa
                        st["removed"], st["skipped"])
    # (listed, created, updated, unchanged, removed, skipped)
    problems = []
    if stats(st2) != (4, 1, 1, 2, 1, 0):
        problems.append("re-run after one change, one delete, one add: %r" % st2)
    if stats(st3) != (4, 0, 1, 3, 0, 0):
        problems.append("re-run after the empty object grew: %r" % st3)
    if got3 != b"no longer empty":
        problems.append("after the empty object grew, the file holds %r" % got3)
    assert not problems, "; ".join(problems)
    p.stop()
    m.stop()


def test_bad_input(tmp):
    p, m = cluster(tmp)
    cli = mp.Cli(tmp, p, m)
    cli.run("mkdir", "/dir")
    cli.run("put", "-", "/dir/file", input=b"x")
    local = os.path.join(tmp, "local")
    with open(local, "wb") as f:
        f.write(b"local bytes")

    # Remote paths: relative, a '..' component, a 300-byte name. A path
    # the CLI can see is bad is a usage error; the library's own check
    # reports EINVAL, which mp reports as a failed operation (1): either
    # is accepted for the last two, never 0.
    for args in (("ls", "relative"), ("put", local, "dir/x"), ("get", "dir/file", local),
                 ("cat", "x"), ("mkdir", "a/b"), ("rm", "dir"), ("mv", "/dir", "x"),
                 ("import", "ext", "imp")):
        one_line(cli.run(*args, expect=2), "absolute")
    long_name = "n" * 300
    for args in (("mkdir", "/dir/../x"), ("put", local, "/dir/../x"), ("cat", "/dir/../file"),
                 ("ln", "-s", "t", "/dir/../l")):
        r = cli.run(*args, expect=None)
        assert r.rc in (1, 2), r
        one_line(r, "'..'")
    for args in (("mkdir", "/dir/" + long_name), ("put", local, "/dir/" + long_name),
                 ("stat", "/" + long_name), ("put", "-", "/" + long_name)):
        r = cli.run(*args, expect=None)
        assert r.rc in (1, 2), r
        one_line(r, "nnnnnnnnnn", "name")
    assert "dir" in cli.run("ls", "/").text  # nothing was made
    assert cli.run("ls", "/dir").text == "file\n"

    # Unknown bucket alias in import.
    one_line(cli.run("import", "nosuch/prefix", "/imp", expect=1), "nosuch")
    one_line(cli.run("import", "s3://bucket/x", "/imp", expect=2), "alias")
    one_line(cli.run("stat", "/imp", expect=1), "no such")  # nothing was made

    # An unreachable primary (a closed port), with no mirror and with one.
    closed = "127.0.0.1:%d" % mp.free_port()
    for servers in ([], ["--mirror", m.address]):
        r = cli.run("--primary", closed, *servers, "mkdir", "/nowhere", expect=1, servers=False)
        one_line(r, closed)
    one_line(cli.run("--primary", closed, "ls", "/", expect=1, servers=False), closed)
    one_line(cli.run("--primary", closed, "put", local, "/x", expect=1, servers=False), closed)

    # Broken configuration files, through -c and through MP_CONFIG.
    configs = {
        "bad-yaml": ("primary: [127.0.0.1:1\nmirror: \"unterminated\n", []),
        "unknown-key": ("primary: %s\nbogus_option: 1\n" % p.address, ["bogus_option"]),
        "bad-duration": ("timeout: 5 parsecs\n", ["timeout", "parsecs"]),
        "bad-consistency": ("consistency: sometimes\n", ["consistency", "sometimes"]),
        "bad-bucket": ("buckets:\n  ext:\n    colour: blue\n", ["colour"]),
    }
    for name, (text, words) in configs.items():
        path = os.path.join(tmp, name + ".yaml")
        with open(path, "w") as f:
            f.write(text)
        one_line(cli.run("-c", path, "ls", "/", expect=2, servers=False), path, *words)
        one_line(cli.run("ls", "/", expect=2, servers=False, env={"MP_CONFIG": path}),
                 path, *words)
    missing = os.path.join(tmp, "no-such.yaml")
    one_line(cli.run("-c", missing, "ls", "/", expect=2, servers=False), missing)
    # Bad -o values and flags.
    one_line(cli.run("ls", "/", expect=2, options=["timeout=soon"]), "timeout")
    one_line(cli.run("ls", "/", expect=2, options=["no_such_option=1"]), "no_such_option")
    one_line(cli.run("-o", "novalue", "ls", "/", expect=2), "novalue")
    one_line(cli.run("--consistency", "sometimes", "ls", "/", expect=2), "sometimes")

    # Missing operands, unknown commands and options.
    for args, words in ((("put",), ["missing"]), (("put", local), ["missing", "REMOTE"]),
                        (("get",), ["missing"]), (("get", "/dir/file"), ["missing", "LOCAL"]),
                        (("cat",), ["missing"]), (("mv", "/a"), ["missing"]),
                        (("ln", "-s", "t"), ["missing"]), (("import", "ext"), ["missing"]),
                        (("stat",), ["missing"]), (("mkdir",), ["missing"]),
                        (("rm",), ["missing"]), (("mv", "/a", "/b", "/c"), ["extra"]),
                        (("frobnicate",), ["frobnicate"]), (("--frob", "ls"), ["--frob"]),
                        (("ls", "--frob"), ["--frob"]), (("ls", "-z"), ["-z"]),
                        (("mkdir", "-m"), ["-m"]), (("mkdir", "-m", "999", "/x"), ["999"]),
                        (("status", "extra"), ["extra"]), ((), ["COMMAND"])):
        one_line(cli.run(*args, expect=2), *words)
    r = cli.run("-c", expect=2, raw=True)
    one_line(r, "-c")

    # Operations that fail on what they find.
    one_line(cli.run("get", "/dir", os.path.join(tmp, "out"), expect=1), "/dir", "directory")
    assert not os.path.exists(os.path.join(tmp, "out"))
    one_line(cli.run("put", os.path.join(tmp, "no-such-file"), "/dir/x", expect=1),
             "no-such-file", "no such file")
    one_line(cli.run("put", tmp, "/dir/x", expect=1), "directory")
    one_line(cli.run("cat", "/dir", expect=1), "/dir", "directory")
    one_line(cli.run("cat", "/dir/missing", expect=1), "/dir/missing", "no such")
    one_line(cli.run("get", "/dir/missing", local, expect=1), "/dir/missing", "no such")
    with open(local, "rb") as f:
        assert f.read() == b"local bytes", "a failed get touched the local file"
    one_line(cli.run("mkdir", "/dir/file/sub", expect=1), "/dir/file/sub")
    one_line(cli.run("get", "/dir/file", "/nonexistent-dir/x", expect=1), "nonexistent-dir")
    assert cli.run("ls", "/dir").text == "file\n"
    p.stop()
    m.stop()


if __name__ == "__main__":
    mp.main(globals())
