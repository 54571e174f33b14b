#!/usr/bin/python3
"""The Python package (client/python/mirrorplane) against a real primary and
mirror: Client calls and their exceptions, and fsspec's contract for the
mp:// file system (ls, info, cat_file ranges, open rb with read-ahead and wb
with upload on close, put/get, rm, mkdir, fsspec.open URLs), and README's
PyTorch Dataset in a DataLoader over mp:// and over `mp mount` (skipped
without python3-torch; the mount half without MP_CLI or /dev/fuse). The
library is found through MP_LIBRARY (meson sets it); needs Debian's
python3-fsspec."""

import hashlib
import os
import random
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "client", "python"))
import mp  # noqa: E402

MiB = 1 << 20


def asan_library(path):
    """Whether the library was built with AddressSanitizer."""
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    except OSError:
        return False
    return "libasan" in out


def reexec_under_asan():
    """An ASan-built library loaded into the (uninstrumented) interpreter
    needs the ASan runtime first in the process: run again with it in
    LD_PRELOAD, leaks not reported (the interpreter's own are many)."""
    lib = os.environ.get("MP_LIBRARY", "")
    if not lib or not asan_library(lib) or os.environ.get("MP_PYTHON_ASAN") == "1":
        return
    rt = subprocess.run(["cc", "-print-file-name=libasan.so"], capture_output=True,
                        text=True).stdout.strip()
    if not rt or not os.path.isabs(rt):
        print("skip: an ASan build of libmirrorplane, and no libasan.so to preload")
        sys.exit(77)
    env = dict(os.environ, MP_PYTHON_ASAN="1", LD_PRELOAD=rt)
    opts = env.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "detect_leaks=0"
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def cluster(tmp):
    p = mp.Primary(tmp)
    m = mp.Mirror(tmp, p, config={"reconnect": {"min": "50ms", "max": "300ms"}})
    return p, m


def expect(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc:
        return
    except Exception as e:
        raise AssertionError("%s%r raised %r, expected %s" % (fn.__name__, args, e,
                                                              exc.__name__))
    raise AssertionError("%s%r succeeded, expected %s" % (fn.__name__, args, exc.__name__))


def test_client(tmp):
    import mirrorplane
    p, m = cluster(tmp)
    c = mirrorplane.Client(primary=p.address, mirror=m.address,
                           options={"session_file": "-"})
    data = random.Random(1).randbytes(9 * MiB + 11)
    c.mkdir("/d")
    c.put_bytes(data, "/d/blob")
    st = c.stat("/d/blob")
    assert st["type"] == "file" and st["size"] == len(data), st
    assert c.read("/d/blob") == data
    assert c.read("/d/blob", 5, 10) == data[5:15]
    assert c.read("/d/blob", 0, 4 * MiB) == data[:4 * MiB]
    assert c.read("/d/blob", len(data) - 3) == data[-3:]
    assert c.read("/d/blob", len(data) + 10, 5) == b""
    local = os.path.join(tmp, "local")
    with open(local, "wb") as f:
        f.write(b"from disk")
    c.put(local, "/d/f")
    c.get("/d/f", os.path.join(tmp, "back"))
    with open(os.path.join(tmp, "back"), "rb") as f:
        assert f.read() == b"from disk"
    assert [e["name"] for e in c.ls("/d")] == ["blob", "f"]
    c.symlink("f", "/d/link")
    assert c.stat("/d/link")["target"] == "f"
    c.rename("/d/f", "/d/g")
    expect(FileNotFoundError, c.stat, "/d/f")
    expect(FileNotFoundError, c.read, "/d/missing")
    expect(FileExistsError, c.mkdir, "/d")
    expect(IsADirectoryError, c.read, "/d")
    expect(NotADirectoryError, c.ls, "/d/g")
    expect(OSError, c.rm, "/d")  # not empty
    try:
        c.rm("/d")
    except OSError as e:
        assert e.errno == 39 and e.filename == "/d" and "/d" in str(e), e
    c.rm("/d", recursive=True)
    expect(FileNotFoundError, c.ls, "/d")
    c.close()
    c.close()
    expect(ValueError, c.stat, "/")
    p.stop()
    m.stop()


def test_fsspec(tmp):
    import fsspec
    import mirrorplane  # noqa: F401 (registers mp://)
    from mirrorplane.fs import MirrorplaneFileSystem
    p, m = cluster(tmp)
    so = {"primary": p.address, "mirror": m.address, "options": {"session_file": "-"}}
    fs = fsspec.filesystem("mp", **so)
    assert isinstance(fs, MirrorplaneFileSystem)
    data = random.Random(2).randbytes(6 * MiB + 5)

    fs.mkdir("/ds/sub")
    with fs.open("/ds/a.bin", "wb") as f:
        f.write(data[:100])
        f.write(data[100:])
    assert fs.info("/ds/a.bin")["size"] == len(data)
    assert fs.info("mp:///ds/a.bin")["type"] == "file"
    assert fs.info("/ds")["type"] == "directory"
    assert fs.ls("/ds", detail=False) == ["/ds/a.bin", "/ds/sub"]
    details = fs.ls("mp:///ds")
    assert [d["type"] for d in details] == ["file", "directory"], details
    assert fs.ls("/ds/a.bin", detail=False) == ["/ds/a.bin"]
    assert fs.cat_file("/ds/a.bin") == data
    assert fs.cat_file("/ds/a.bin", start=10, end=20) == data[10:20]
    assert fs.cat_file("/ds/a.bin", start=-5) == data[-5:]
    assert fs.cat_file("/ds/a.bin", start=len(data) - 2, end=len(data) + 100) == data[-2:]
    assert fs.cat("/ds/a.bin") == data
    assert fs.exists("/ds/a.bin") and not fs.exists("/ds/nope")
    assert fs.isdir("/ds") and fs.isfile("/ds/a.bin")
    assert fs.size("/ds/a.bin") == len(data)
    assert sorted(fs.find("/ds")) == ["/ds/a.bin"]

    # Reads: seek and read, sequential with read-ahead.
    with fs.open("/ds/a.bin", "rb", block_size=MiB) as f:
        assert f.read(3) == data[:3]
        f.seek(2 * MiB + 7)
        assert f.read(MiB) == data[2 * MiB + 7:3 * MiB + 7]
        f.seek(0)
        assert f.read() == data
    with fsspec.open("mp:///ds/a.bin", "rb", **so) as f:
        assert f.read(10) == data[:10]
    with fsspec.open("mp:///ds/text.txt", "wt", **so) as f:
        f.write("hello\n")
    with fsspec.open("mp:///ds/text.txt", "rt", **so) as f:
        assert f.read() == "hello\n"

    # put/get, pipe, mv, rm.
    local = os.path.join(tmp, "up.bin")
    with open(local, "wb") as f:
        f.write(data[:1000])
    fs.put_file(local, "/ds/sub/up.bin")
    fs.get_file("/ds/sub/up.bin", os.path.join(tmp, "down.bin"))
    with open(os.path.join(tmp, "down.bin"), "rb") as f:
        assert f.read() == data[:1000]
    fs.put(local, "/ds/sub/up2.bin")
    fs.get("/ds/sub/up2.bin", os.path.join(tmp, "down2.bin"))
    assert os.path.getsize(os.path.join(tmp, "down2.bin")) == 1000
    fs.pipe_file("/ds/piped", b"piped bytes")
    assert fs.cat_file("/ds/piped") == b"piped bytes"
    fs.mv("/ds/piped", "/ds/moved")
    assert fs.cat_file("/ds/moved") == b"piped bytes"
    fs.rm("/ds/moved")
    assert not fs.exists("/ds/moved")

    # Exceptions.
    expect(FileNotFoundError, fs.info, "/ds/nope")
    expect(FileNotFoundError, fs.ls, "/nope")
    expect(FileNotFoundError, fs.cat_file, "/ds/nope")
    expect(FileNotFoundError, fs.open, "/ds/nope", "rb")
    expect(IsADirectoryError, fs.open, "/ds", "rb")
    expect(IsADirectoryError, fs.cat_file, "/ds")
    expect(FileExistsError, fs.makedirs, "/ds")
    fs.makedirs("/ds", exist_ok=True)
    expect(FileExistsError, fs.open, "/ds/a.bin", "xb")
    expect(NotImplementedError, fs.open, "/ds/a.bin", "ab")
    expect(OSError, fs.rm, "/ds")  # not empty
    expect(FileNotFoundError, fs.rm, "/ds/nope")
    fs.rm("/ds", recursive=True)
    assert not fs.exists("/ds")
    assert fs.ls("/", detail=False) == []
    fs.client.close()
    p.stop()
    m.stop()


# README.md ("Mounting a site and reading from Python") shows this Dataset
# verbatim: the test checks it is there and runs it.
README_DATASET = '''\
import fsspec
import torch
from torch.utils.data import DataLoader, Dataset


class Files(Dataset):
    """One sample per file, read whole: paths under an `mp mount`, or mp://
    URLs (fsspec keeps one handle per process: each DataLoader worker, a
    fork, opens its own)."""

    def __init__(self, urls, **storage_options):
        self.urls, self.storage_options = urls, storage_options

    def __len__(self):
        return len(self.urls)

    def __getitem__(self, i):
        with fsspec.open(self.urls[i], "rb", **self.storage_options) as f:
            return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
'''


def test_torch_dataloader(tmp):
    """The README's Dataset in a torch DataLoader (2 forked workers,
    shuffled) over mp:// URLs listed in the parent, and over the same files
    through `mp mount` when MP_CLI and /dev/fuse are there: every sample's
    bytes, each once. A Client used after a fork refuses with a clear error
    instead of sharing the parent's connections."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise mp.Skip("no PyTorch (Debian: python3-torch; deploy/install-deps.sh --bench)")
    import fsspec
    import mirrorplane
    with open(os.path.join(HERE, "..", "..", "README.md")) as f:
        assert README_DATASET in f.read(), "README.md no longer shows the Dataset this test runs"
    ns = {}
    exec(README_DATASET, ns)
    Files, DataLoader = ns["Files"], ns["DataLoader"]

    p, m = cluster(tmp)
    so = {"primary": p.address, "mirror": m.address, "options": {"session_file": "-"}}
    fs = fsspec.filesystem("mp", **so)
    rng = random.Random(3)
    want = {}
    for i in range(40):
        data = rng.randbytes(8192)
        fs.pipe_file("/samples/s%02d.bin" % i, data)
        want[hashlib.sha256(data).hexdigest()] = i
    m.wait_caught_up(p)

    def epoch(ds):
        seen = []
        for batch in DataLoader(ds, batch_size=8, shuffle=True, num_workers=2):
            assert tuple(batch.shape) == (8, 8192), batch.shape
            seen += [hashlib.sha256(row.numpy().tobytes()).hexdigest() for row in batch]
        assert sorted(seen) == sorted(want), "%d samples, %d distinct, %d known" % (
            len(seen), len(set(seen)), len(set(seen) & set(want)))

    # Listed in the parent, whose handle the forked workers must not use.
    urls = ["mp://" + u for u in fs.glob("/samples/*.bin")]
    assert len(urls) == 40, urls
    epoch(Files(urls, **so))
    epoch(Files(urls, **so))  # the parent's handle still works after the forks
    assert fs.cat_file("/samples/s00.bin") == fs.cat_file(urls[0])

    # A Client inherited through a fork refuses; the fs opens its own.
    c = mirrorplane.Client(**so)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                c.stat("/")
            except RuntimeError as e:
                if "fork" in str(e) and fs.info("/samples")["type"] == "directory":
                    code = 0
        finally:
            os.write(w, b"x")
            os._exit(code)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child's checks failed"
    assert c.stat("/samples")["type"] == "dir"
    c.close()

    cli = os.environ.get("MP_CLI")
    if cli and os.path.exists("/dev/fuse"):
        from test_mount import Mount
        mnt = Mount(tmp, mp.Cli(tmp, p, m), options="ro")
        try:
            d = mnt.p("/samples")
            epoch(Files([os.path.join(d, n) for n in sorted(os.listdir(d))]))
        finally:
            mnt.stop()
    else:
        print("(the mount half left out: no MP_CLI or no /dev/fuse)")
    fs.client.close()
    p.stop()
    m.stop()


if __name__ == "__main__":
    reexec_under_asan()
    if os.environ.get("MP_PYTHON_ASAN") == "1":
        print("ASan build of libmirrorplane: running with LD_PRELOAD=%s (leaks not checked)"
              % os.environ.get("LD_PRELOAD"))
    try:
        import fsspec  # noqa: F401
    except ImportError:
        print("skip: no fsspec (Debian: python3-fsspec)")
        sys.exit(77)
    mp.main(globals())
