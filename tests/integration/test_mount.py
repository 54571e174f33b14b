#!/usr/bin/python3
"""mp mount (FUSE) against a real primary and mirror: file bytes read
through the mount (sequential and random), a directory of 10,000 entries,
reads straddling readahead windows and readers in parallel, an open file
that keeps its version when replaced or removed, a file written through
the mount seen by `mp cat` at another handle after
close (close-to-open), errno of failed namespace changes, a read-only
mount, a reader that sees no I/O error while the mirror is killed and
restarted, a file replaced at the primary seen at once, and unmounting by
SIGTERM, a read-only token. Skipped (77) without /dev/fuse or fusermount3."""

import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from mp import CREATE  # noqa: E402

MiB = 1 << 20
MIRROR_CONFIG = {"reconnect": {"min": "50ms", "max": "300ms"}}


def mounted(path):
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path for line in f)


class Mount:
    """mp mount -f in a subprocess; stop() unmounts with SIGTERM."""

    def __init__(self, tmp, cli, name="mnt", options=None, args=()):
        self.path = os.path.realpath(os.path.join(tmp, name))
        os.makedirs(self.path, exist_ok=True)
        self.log_path = os.path.join(tmp, name + ".log")
        argv = ["mount", "-f"]
        if options:
            argv += ["-o", options]
        argv = cli.argv(argv + list(args) + [self.path])
        env = dict(os.environ)
        env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     cwd=tmp)
        _mounts.append(self)
        mp.wait_until(lambda: mounted(self.path) or self.proc.poll() is not None,
                      timeout=30, what="the mount")
        assert self.proc.poll() is None, "mp mount exited: %s" % self.text()
        # The session is ready once the root answers.
        mp.wait_until(lambda: os.stat(self.path), timeout=10, what="the root")

    def p(self, rel):
        return os.path.join(self.path, rel.lstrip("/"))

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("mp mount ignored SIGTERM")
            assert rc == 0, "mp mount exited %d after SIGTERM: %s" % (rc, self.text())
        self.log.close()
        assert not mounted(self.path), "%s still mounted after SIGTERM" % self.path
        text = self.text()
        for marker in ("runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer"):
            assert marker not in text, "sanitizer report from mp mount:\n" + text[-6000:]


_mounts = []


def _cleanup_mounts():
    for m in _mounts:
        if m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait()
        if mounted(m.path):
            subprocess.run(["fusermount3", "-u", "-z", m.path], capture_output=True)


def cluster(tmp):
    p = mp.Primary(tmp)
    m = mp.Mirror(tmp, p, config=MIRROR_CONFIG)
    return p, m


def expect_errno(code, fn, *args):
    try:
        fn(*args)
    except OSError as e:
        assert e.errno == code, "%s%r: %s, expected %s" % (fn.__name__, args, e,
                                                            errno.errorcode[code])
        return
    raise AssertionError("%s%r succeeded, expected %s" % (fn.__name__, args,
                                                          errno.errorcode[code]))


def put_files(tmp, cli, sizes, seed=1):
    """Uploads files of sizes as /data/fN; returns {name: bytes}."""
    rng = random.Random(seed)
    src = os.path.join(tmp, "src")
    os.makedirs(src, exist_ok=True)
    files = {}
    for i, size in enumerate(sizes):
        data = rng.randbytes(size)
        name = "f%d" % i
        with open(os.path.join(src, name), "wb") as f:
            f.write(data)
        files[name] = data
    cli.run("mkdir", "-p", "/data")
    cli.run("put", *[os.path.join(src, n) for n in sorted(files)], "/data")
    return files


# ---------------------------------------------------------------- tests

def test_read_list_write(tmp):
    p, m = cluster(tmp)
    cli = mp.Cli(tmp, p, m)
    files = put_files(tmp, cli, [0, 1, 4096, 3 * MiB + 17, 9 * MiB + 5])
    m.wait_caught_up(p)
    mnt = Mount(tmp, cli)

    # Whole files, sequentially, and random ranges.
    assert sorted(os.listdir(mnt.p("/data"))) == sorted(files)
    for name, data in files.items():
        with open(mnt.p("/data/" + name), "rb") as f:
            got = f.read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), name
        assert os.stat(mnt.p("/data/" + name)).st_size == len(data)
    big = files["f4"]
    rng = random.Random(2)
    with open(mnt.p("/data/f4"), "rb", buffering=0) as f:
        for _ in range(50):
            off = rng.randrange(len(big))
            n = rng.choice([1, 4096, 65536])
            f.seek(off)
            assert f.read(n) == big[off:off + n], "random read at %d" % off

    # A directory of 10,000 entries (many READDIR pages), listed the same
    # twice.
    c = p.client()
    c.mkdir("/big")
    names = ["n%05d" % i for i in range(10000)]
    for i in range(0, len(names), 1000):
        c.batch([(CREATE, {"path": "/big/" + n, "size": 0}) for n in names[i:i + 1000]])
    c.close()
    m.wait_caught_up(p)
    first = os.listdir(mnt.p("/big"))
    assert sorted(first) == names
    assert os.listdir(mnt.p("/big")) == first, "two listings differ"
    with os.scandir(mnt.p("/big")) as it:
        assert sum(1 for e in it if e.is_file(follow_symlinks=False)) == 10000

    # Written through the mount, read by another handle after close.
    data = random.Random(3).randbytes(5 * MiB + 3)
    with open(mnt.p("/data/written"), "wb") as f:
        f.write(data[:MiB])
        f.write(data[MiB:])
    other = mp.Cli(tmp, p, m, session=os.path.join(tmp, "other-session"))
    got = other.run("--consistency", "strong", "cat", "/data/written").out
    assert got == data, "mp cat after close: %d bytes, %d wanted" % (len(got), len(data))
    with open(mnt.p("/data/written"), "rb") as f:
        assert f.read() == data
    # A created file has the mode it was created with (less the umask),
    # and keeps it when written again.
    old_umask = os.umask(0o022)
    try:
        fd = os.open(mnt.p("/data/modes"), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o670)
    finally:
        os.umask(old_umask)
    os.write(fd, b"mode")
    os.close(fd)
    assert os.stat(mnt.p("/data/modes")).st_mode & 0o7777 == 0o650
    with open(mnt.p("/data/modes"), "ab") as f:
        f.write(b" kept")
    st = other.json("--consistency", "strong", "stat", "/data/modes")
    st = st["nodes"][0]
    assert st["mode"] == "0650", st
    assert other.run("--consistency", "strong", "cat", "/data/modes").out == b"mode kept"
    # Overwrite, append, truncate.
    with open(mnt.p("/data/written"), "wb") as f:
        f.write(b"short")
    assert other.run("--consistency", "strong", "cat", "/data/written").out == b"short"
    with open(mnt.p("/data/written"), "ab") as f:
        f.write(b"+more")
    assert other.run("--consistency", "strong", "cat", "/data/written").out == b"short+more"
    os.truncate(mnt.p("/data/written"), 3)
    assert other.run("--consistency", "strong", "cat", "/data/written").out == b"sho"
    with open(mnt.p("/data/written"), "rb") as f:
        assert f.read() == b"sho"

    # Namespace changes and their errno.
    os.mkdir(mnt.p("/d"))
    expect_errno(errno.EEXIST, os.mkdir, mnt.p("/d"))
    with open(mnt.p("/d/x"), "wb") as f:
        f.write(b"x")
    expect_errno(errno.ENOTEMPTY, os.rmdir, mnt.p("/d"))
    expect_errno(errno.ENOENT, os.rmdir, mnt.p("/nope"))
    expect_errno(errno.ENOENT, os.unlink, mnt.p("/nope"))
    expect_errno(errno.ENOENT, os.rename, mnt.p("/nope"), mnt.p("/nope2"))
    expect_errno(errno.EISDIR, os.unlink, mnt.p("/d"))
    expect_errno(errno.ENOTDIR, os.rmdir, mnt.p("/d/x"))
    expect_errno(errno.ENOENT, open, mnt.p("/nope/x"), "rb")
    expect_errno(errno.ENOTDIR, os.listdir, mnt.p("/d/x"))
    expect_errno(errno.EISDIR, open, mnt.p("/d"), "wb")
    os.rename(mnt.p("/d/x"), mnt.p("/d/y"))
    assert os.listdir(mnt.p("/d")) == ["y"]
    os.rename(mnt.p("/d"), mnt.p("/e"))
    with open(mnt.p("/e/y"), "rb") as f:
        assert f.read() == b"x"
    os.symlink("y", mnt.p("/e/link"))
    assert os.readlink(mnt.p("/e/link")) == "y"
    with open(mnt.p("/e/link"), "rb") as f:
        assert f.read() == b"x"
    os.unlink(mnt.p("/e/link"))
    os.unlink(mnt.p("/e/y"))
    os.rmdir(mnt.p("/e"))
    assert not os.path.exists(mnt.p("/e"))
    assert other.run("ls", "/").text.split() == ["big", "data"]
    expect_errno(errno.EOPNOTSUPP, os.chmod, mnt.p("/data/f1"), 0o600)
    expect_errno(errno.EOPNOTSUPP, os.utime, mnt.p("/data/f1"), (1, 1))
    os.utime(mnt.p("/data/f1"))  # touch: "now"
    subprocess.run(["touch", mnt.p("/data/touched")], check=True)
    assert os.stat(mnt.p("/data/touched")).st_size == 0
    assert other.run("--consistency", "strong", "cat", "/data/touched").out == b""
    os.mkdir(mnt.p("/sub"))
    expect_errno(errno.EINVAL, os.rename, mnt.p("/sub"), mnt.p("/sub/inner"))
    os.rmdir(mnt.p("/sub"))

    mnt.stop()
    # Read-only: every change is EROFS, reads work.
    ro = Mount(tmp, cli, name="ro", options="ro")
    with open(ro.p("/data/f2"), "rb") as f:
        assert f.read() == files["f2"]
    expect_errno(errno.EROFS, os.mkdir, ro.p("/x"))
    expect_errno(errno.EROFS, open, ro.p("/data/new"), "wb")
    expect_errno(errno.EROFS, open, ro.p("/data/f2"), "r+b")
    expect_errno(errno.EROFS, os.unlink, ro.p("/data/f2"))
    expect_errno(errno.EROFS, os.rename, ro.p("/data/f2"), ro.p("/data/f9"))
    ro.stop()
    p.stop()
    m.stop()


def test_readahead_and_open_versions(tmp):
    """Sequential reads of a file many readahead windows long, with read
    sizes that straddle windows, readers of one descriptor in parallel,
    random ranges from several threads; an open file removed at the primary
    reads on to its end; a file replaced there is new at the next open."""
    p, m = cluster(tmp)
    cli = mp.Cli(tmp, p, m)
    files = put_files(tmp, cli, [41 * MiB + 7, 6 * MiB + 1, 100 * 1024])
    m.wait_caught_up(p)
    mnt = Mount(tmp, cli)
    big = files["f0"]
    for chunk in (MiB, 300 * 1024 + 1, 4 * MiB + 3):
        with open(mnt.p("/data/f0"), "rb", buffering=0) as f:
            parts = []
            while True:
                b = f.read(chunk)
                if not b:
                    break
                parts.append(b)
        got = b"".join(parts)
        assert len(got) == len(big) and got == big, "sequential read, %d-byte reads" % chunk

    errors = []

    def halves(fd, lo, hi):
        try:
            off = lo
            while off < hi:
                n = min(512 * 1024, hi - off)
                b = os.pread(fd, n, off)
                if b != big[off:off + n]:
                    errors.append("pread at %d: wrong bytes" % off)
                    return
                off += n
        except OSError as e:
            errors.append("pread: %s" % e)

    fd = os.open(mnt.p("/data/f0"), os.O_RDONLY)
    half = len(big) // 2
    ts = [threading.Thread(target=halves, args=(fd, 0, half)),
          threading.Thread(target=halves, args=(fd, half, len(big)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    os.close(fd)

    def scattered(seed):
        rng = random.Random(seed)
        try:
            with open(mnt.p("/data/f0"), "rb", buffering=0) as f:
                for _ in range(40):
                    off = rng.randrange(len(big))
                    n = rng.choice([1, 4096, 131072, 5 * MiB])
                    f.seek(off)
                    if f.read(n) != big[off:off + n]:
                        errors.append("random read at %d+%d: wrong bytes" % (off, n))
                        return
        except OSError as e:
            errors.append("random read: %s" % e)

    ts = [threading.Thread(target=scattered, args=(s,)) for s in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors

    # Open, then remove f2 at the primary: the open file reads on to its
    # end (as an unlinked open file on a local disk); replace f1 there: the
    # next open sees the new version.
    f2 = open(mnt.p("/data/f2"), "rb", buffering=0)
    head = f2.read(1000)
    assert head == files["f2"][:1000]
    new = random.Random(9).randbytes(2 * MiB + 9)
    src = os.path.join(tmp, "new-f1")
    with open(src, "wb") as f:
        f.write(new)
    with open(mnt.p("/data/f1"), "rb") as f:
        assert f.read() == files["f1"]
    other = mp.Cli(tmp, p, m, session=os.path.join(tmp, "other-session"))
    other.run("put", src, "/data/f1")
    other.run("rm", "/data/f2")
    m.wait_caught_up(p)
    assert head + f2.read() == files["f2"], "a removed open file could not be read to its end"
    f2.close()
    # Unlinked through the mount itself while open: read on to the end.
    with open(mnt.p("/data/f0"), "rb", buffering=0) as f:
        head = f.read(3 * MiB)
        os.unlink(mnt.p("/data/f0"))
        expect_errno(errno.ENOENT, os.stat, mnt.p("/data/f0"))
        assert head + f.read() == big, "a file unlinked while open could not be read"
    # The next open sees the new version (the invalidation poll or the
    # attribute timeout, whichever comes first).

    def reads_new():
        with open(mnt.p("/data/f1"), "rb") as f:
            return f.read() == new

    mp.wait_until(reads_new, timeout=10, what="the replaced file at the next open")
    expect_errno(errno.ENOENT, os.stat, mnt.p("/data/f2"))
    mnt.stop()


def test_two_sites(tmp):
    """Two mounts at two sites' mirrors: a file closed at one is seen at
    once by an open at the other (strong consistency there), and a file
    replaced afterwards is seen at the other although its kernel may cache
    attributes for 60 s: the mount invalidates what the mirror's new
    version changed."""
    p = mp.Primary(tmp)
    m1 = mp.Mirror(tmp, p, config=MIRROR_CONFIG)
    m2 = mp.Mirror(tmp, p, site="b", name="mirror-b", config=MIRROR_CONFIG)
    a = Mount(tmp, mp.Cli(tmp, p, m1), name="a")
    b = Mount(tmp, mp.Cli(tmp, p, m2, session=os.path.join(tmp, "session-b")), name="b",
              options="entry_timeout=60,attr_timeout=60", args=())
    data = random.Random(4).randbytes(MiB + 1)
    for i in range(5):
        with open(a.p("/f%d" % i), "wb") as f:
            f.write(data[i:])
    b_strong = Mount(tmp, mp.Cli(tmp, p, m2, session=os.path.join(tmp, "session-c"),
                                 options=["consistency=strong"]), name="c")
    for i in range(5):
        with open(b_strong.p("/f%d" % i), "rb") as f:
            assert f.read() == data[i:], "f%d at the other site" % i
    m2.wait_caught_up(p)
    with open(b.p("/f0"), "rb") as f:
        assert f.read() == data
    assert os.stat(b.p("/f0")).st_size == len(data)
    with open(a.p("/f0"), "wb") as f:
        f.write(b"replaced at site a")
    t0 = time.monotonic()
    mp.wait_until(lambda: os.stat(b.p("/f0")).st_size == 18, timeout=10,
                  what="the replaced file's new size at site b")
    with open(b.p("/f0"), "rb") as f:
        assert f.read() == b"replaced at site a"
    print("replacement seen at the other site after %.2f s" % (time.monotonic() - t0))
    os.unlink(a.p("/f1"))
    mp.wait_until(lambda: not os.path.exists(b.p("/f1")), timeout=10,
                  what="the removed file gone at site b")
    for x in (a, b, b_strong):
        x.stop()
    p.stop()
    m1.stop()
    m2.stop()


def test_read_only_token(tmp):
    """Through a read-only token every change is EROFS; reads work."""
    secret = os.path.join(tmp, "secret")
    with open(secret, "wb") as f:
        f.write(b"0123456789abcdef0123456789abcdef\n")
    os.chmod(secret, 0o600)
    p = mp.Primary(tmp, config={"secret_file": secret})

    def token(*args):
        rc, out, err = mp.run_primary(["token", "create"] + list(args) + ["-c", p.config_path])
        assert rc == 0, err
        return out.strip()

    rw = mp.Cli(tmp, p, None, options=["token=" + token("--client", "admin", "--read-write")])
    rw.run("mkdir", "/d")
    rw.run("put", "-", "/d/f", input=b"bytes")
    ro = Mount(tmp, mp.Cli(tmp, p, None, options=["token=" + token("--client", "reader",
                                                                   "--read-only")]))
    with open(ro.p("/d/f"), "rb") as f:
        assert f.read() == b"bytes"
    expect_errno(errno.EROFS, os.mkdir, ro.p("/d/x"))
    expect_errno(errno.EROFS, os.unlink, ro.p("/d/f"))
    expect_errno(errno.EROFS, os.rename, ro.p("/d/f"), ro.p("/d/g"))
    expect_errno(errno.EROFS, os.symlink, "f", ro.p("/d/l"))

    def write():
        with open(ro.p("/d/f"), "wb") as f:
            f.write(b"new")
    expect_errno(errno.EROFS, write)
    assert rw.run("cat", "/d/f").out == b"bytes"
    ro.stop()
    p.stop()


def test_mirror_killed_under_reader(tmp):
    """A reader looping over files while the mirror is killed and restarted
    sees every byte and no I/O error: the library falls back to the
    primary."""
    p, m = cluster(tmp)
    cli = mp.Cli(tmp, p, m, options=["timeout=500ms", "connect_timeout=300ms",
                                     "probe_interval=200ms"])
    files = put_files(tmp, cli, [64 * 1024 + i for i in range(20)], seed=7)
    m.wait_caught_up(p)
    mnt = Mount(tmp, cli, options="entry_timeout=0,attr_timeout=0")
    stop = threading.Event()
    errors, reads = [], [0]

    def reader():
        while not stop.is_set():
            for name, data in files.items():
                try:
                    with open(mnt.p("/data/" + name), "rb") as f:
                        got = f.read()
                    if got != data:
                        errors.append("%s: wrong bytes" % name)
                    reads[0] += 1
                except OSError as e:
                    errors.append("%s: %s" % (name, e))

    t = threading.Thread(target=reader)
    t.start()
    try:
        time.sleep(1)
        m.kill9()
        before = reads[0]
        time.sleep(3)
        assert reads[0] > before, "the reader stalled while the mirror was down"
        m.start()
        time.sleep(1.5)
    finally:
        stop.set()
        t.join(60)
    assert not errors, "%d errors while the mirror was killed: %s" % (len(errors), errors[:5])
    assert reads[0] > 40, reads[0]
    mnt.stop()
    p.stop()
    m.stop()


def test_daemon_and_sigterm(tmp):
    """Without -f, mp mount goes into the background with a log file;
    fusermount3 -u unmounts it and the daemon exits."""
    if shutil.which("fusermount3") is None:
        raise mp.Skip("no fusermount3")
    p, m = cluster(tmp)
    cli = mp.Cli(tmp, p, m)
    cli.run("put", "-", "/hello", input=b"hello")
    path = os.path.realpath(os.path.join(tmp, "bg"))
    os.makedirs(path)
    log = os.path.join(tmp, "bg.log")
    cli.run("mount", "-o", "log=" + log, path)
    try:
        assert mounted(path)
        with open(os.path.join(path, "hello"), "rb") as f:
            assert f.read() == b"hello"
    finally:
        subprocess.run(["fusermount3", "-u", path], check=True)
    import re
    pid = int(re.search(r"\(pid (\d+)\)", open(log).read()).group(1))
    mp.wait_until(lambda: not os.path.exists("/proc/%d" % pid), timeout=20,
                  what="the daemon's exit")
    assert "unmounting" in open(log).read()
    assert not mounted(path)
    text = open(log).read()
    for marker in ("runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer"):
        assert marker not in text, "sanitizer report from the mount daemon:\n" + text[-6000:]
    # A bad mountpoint or usage fails in the foreground.
    r = cli.run("mount", "-f", os.path.join(tmp, "missing-dir"), expect=1)
    assert "missing-dir" in r.err, r
    cli.run("mount", "-o", "bogus", path, expect=2)
    p.stop()
    m.stop()


if __name__ == "__main__":
    if not os.path.exists("/dev/fuse"):
        print("skip: no /dev/fuse")
        sys.exit(77)
    import atexit
    atexit.register(_cleanup_mounts)
    mp.main(globals())
