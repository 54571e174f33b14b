"""Harness of the integration tests of mp-primary and mp-mirror (stdlib +
python3-msgpack).

Three parts:

* Client: one connection speaking the wire protocol of docs/PROTOCOL.md
  (frames of a 4-byte big-endian length and msgpack [type, id, body]), plain
  or TLS, with a convenience method per request and raw access to the socket.
* Primary / Mirror: start a real mp-primary (its own data directory or a
  store URL) or mp-mirror (a site replica of an upstream) on free 127.0.0.1
  ports, capture the output in a log file, stop with SIGTERM and insist on
  exit code 0 (a leak under ASan fails the test).
* A port of the namespace digest (common/namespace/namespace.c: namespace_record_hash)
  so tests recompute digests from nodes and compare them with the daemon's.

Tests are scripts whose test_* functions run through main(globals()): each
gets a fresh temporary directory; a failure prints the traceback and the log
of every daemon the test started, and the script exits non-zero.
"""

import atexit
import errno
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

# ---------------------------------------------------------------- protocol

HELLO, HELLO_OK, ERROR, REPLY = 1, 2, 3, 4
VERSION, LOOKUP, GETATTR, RESOLVE, READDIR = 10, 11, 12, 13, 14
MKDIR, CREATE, SYMLINK, RENAME, UNLINK, RMDIR, SETATTR, BATCH = 20, 21, 22, 23, 24, 25, 26, 27
SUBSCRIBE, CHANGES, HEARTBEAT, ACK = 30, 31, 32, 33
SNAPSHOT_BEGIN, SNAPSHOT_CHUNK, SNAPSHOT_END = 34, 35, 36
PUT, DROP = 1, 2
DIR, FILE, SYMLNK = 1, 2, 3
ROOT = 1

# node array fields
N_INO, N_PARENT, N_NAME, N_TYPE, N_MODE, N_UID, N_GID, N_SIZE, N_MTIME, N_CTIME, N_EXTRA = range(11)

DEFAULT_TIMEOUT = float(os.environ.get("MP_TEST_TIMEOUT", "30"))


class MPError(Exception):
    """An ERROR reply: code ("ENOENT"), errno, message, version."""

    def __init__(self, body):
        self.body = body
        self.code = body.get("code")
        self.errno = body.get("errno")
        self.message = body.get("message", "")
        self.version = body.get("version")
        super().__init__("%s: %s" % (self.code, self.message))


class ConnectionClosed(Exception):
    pass


def encode_frame(type_, id_, body):
    payload = msgpack.packb([type_, id_, body], use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def decode_payload(payload):
    return msgpack.unpackb(payload, raw=False, unicode_errors="surrogateescape",
                           strict_map_key=False)


def name_bytes(name):
    """A name as the server holds it: str names come back surrogate-escaped."""
    if isinstance(name, bytes):
        return name
    return name.encode("utf-8", "surrogateescape")


class Client:
    """A connection to mp-primary or mp-mirror (role: what HELLO_OK must
    say). tls: an ssl.SSLContext or None."""

    def __init__(self, port, host="127.0.0.1", tls=None, server_hostname="localhost",
                 timeout=DEFAULT_TIMEOUT, hello=False, token=None, role="primary"):
        self.timeout = timeout
        self.role = role  # what HELLO_OK must say: "primary" or "mirror"
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname)
        self.next_id = 1
        self.buf = b""
        if hello:
            self.hello(token=token)

    # -- framing -------------------------------------------------------
    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, type_, body, id_=None):
        if id_ is None:
            id_ = self.next_id
            self.next_id += 1
        self.sock.sendall(encode_frame(type_, id_, body))
        return id_

    def _read_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionClosed("connection closed by the server (%d of %d bytes read)"
                                       % (len(self.buf), n))
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout=None):
        """The next frame as (type, id, body)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            (n,) = struct.unpack(">I", self._read_exact(4))
            payload = self._read_exact(n)
        finally:
            if timeout is not None:
                self.sock.settimeout(self.timeout)
        f = decode_payload(payload)
        assert isinstance(f, list) and len(f) == 3, "server sent a malformed frame: %r" % (f,)
        return f[0], f[1], f[2]

    def expect_closed(self, timeout=10):
        """Reads until the server closes; returns the frames it sent first."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "the server did not close the connection within %ss" % timeout
            try:
                frames.append(self.recv(timeout=left))
            except (ConnectionClosed, ConnectionResetError, BrokenPipeError):
                return frames
            except ssl.SSLError:
                return frames

    def call(self, type_, body, timeout=None):
        """Sends a request and returns (type, body) of its reply."""
        id_ = self.send(type_, body)
        t, rid, b = self.recv(timeout=timeout)
        assert rid == id_, "reply id %r does not match request id %r (type %r body %r)" % (
            rid, id_, t, b)
        return t, b

    def req(self, type_, body):
        """call() that raises MPError on ERROR and returns the REPLY body."""
        t, b = self.call(type_, body)
        if t == ERROR:
            raise MPError(b)
        assert t == REPLY, "expected REPLY, got type %r: %r" % (t, b)
        assert isinstance(b.get("version"), int), "reply without a version: %r" % (b,)
        return b

    def error(self, code, type_, body, contains=None):
        """Sends a request that must fail with code; returns the ERROR body."""
        t, b = self.call(type_, body)
        assert t == ERROR, "expected ERROR %s for %s %r, got type %r: %r" % (
            code, type_, body if len(repr(body)) < 300 else "...", t, b)
        assert b.get("code") == code, "expected %s, got %s: %s" % (code, b.get("code"),
                                                                   b.get("message"))
        assert isinstance(b.get("message"), str) and b["message"], "ERROR without a message"
        assert b.get("errno") == getattr(errno, code), "errno %r for %s (Linux: %d)" % (
            b.get("errno"), code, getattr(errno, code))
        assert isinstance(b.get("version"), int), "ERROR without version: %r" % b
        for c in ([contains] if isinstance(contains, str) else (contains or [])):
            assert c.lower() in b["message"].lower(), \
                "message %r does not mention %r" % (b["message"], c)
        return b

    # -- requests ------------------------------------------------------
    def hello(self, token=None, cluster_id=None, proto=1):
        body = {"proto": proto}
        if token is not None:
            body["token"] = token
        if cluster_id is not None:
            body["cluster_id"] = cluster_id
        t, b = self.call(HELLO, body)
        if t == ERROR:
            raise MPError(b)
        assert t == HELLO_OK, "expected HELLO_OK, got %r %r" % (t, b)
        assert b.get("role") == self.role and b.get("proto") == 1, b
        return b

    @staticmethod
    def _body(fields, **kw):
        for k, v in kw.items():
            if v is not None:
                fields[k] = v
        return fields

    def version(self):
        return self.req(VERSION, {})["version"]

    def read(self, type_, body, min_version=None, deadline_ms=None, timeout=None):
        """A read with a mirror's optional min_version and deadline_ms:
        returns the REPLY body, raises MPError on ERROR."""
        body = self._body(dict(body), min_version=min_version, deadline_ms=deadline_ms)
        t, b = self.call(type_, body, timeout=timeout)
        if t == ERROR:
            raise MPError(b)
        assert t == REPLY, "expected REPLY, got type %r: %r" % (t, b)
        assert isinstance(b.get("version"), int), "reply without a version: %r" % (b,)
        return b

    def lookup(self, parent, name):
        return self.req(LOOKUP, {"parent": parent, "name": name})["node"]

    def getattr(self, ino):
        return self.req(GETATTR, {"ino": ino})["node"]

    def resolve(self, path):
        return self.req(RESOLVE, {"path": path})["node"]

    def readdir(self, ino=None, path=None, cursor=None, limit=None):
        if isinstance(cursor, str):
            cursor = name_bytes(cursor)  # a "next" may hold any bytes
        return self.req(READDIR, self._body({}, ino=ino, path=path, cursor=cursor, limit=limit))

    def readdir_all(self, path, limit=None):
        out, cursor = [], None
        while True:
            r = self.readdir(path=path, cursor=cursor, limit=limit)
            out.extend(r["entries"])
            if r["next"] is None:
                return out
            cursor = r["next"]

    def mkdir(self, path, mode=None, uid=None, gid=None, parents=None):
        return self.req(MKDIR, self._body({"path": path}, mode=mode, uid=uid, gid=gid,
                                          parents=parents))

    def create(self, path, size=None, mode=None, uid=None, gid=None, mtime=None, layout=None):
        return self.req(CREATE, self._body({"path": path}, size=size, mode=mode, uid=uid,
                                           gid=gid, mtime=mtime, layout=layout))

    def symlink(self, path, target, uid=None, gid=None):
        return self.req(SYMLINK, self._body({"path": path, "target": target}, uid=uid, gid=gid))

    def rename(self, src, dst):
        return self.req(RENAME, {"from": src, "to": dst})

    def unlink(self, path):
        return self.req(UNLINK, {"path": path})

    def rmdir(self, path):
        return self.req(RMDIR, {"path": path})

    def setattr(self, path, mode=None, uid=None, gid=None, size=None, mtime=None):
        return self.req(SETATTR, self._body({"path": path}, mode=mode, uid=uid, gid=gid,
                                            size=size, mtime=mtime))

    def batch(self, ops):
        """ops: list of (type, body)."""
        return self.req(BATCH, {"ops": [[t, b] for t, b in ops]})


class Subscriber:
    """A mirror in Python: SUBSCRIBE, then CHANGES applied to a
    NamespaceModel with each record's digest checked, snapshots loaded and
    checked against SNAPSHOT_BEGIN's digest and count, ACKs on request.

    model: the state at `from` when resuming (a NamespaceModel), else a new
    one. records: every change record received, by version."""

    def __init__(self, port, model=None, token=None, tls=None, **kw):
        self.c = Client(port, tls=tls, **kw)  # role="mirror" to subscribe to a mirror
        self.c.hello(token=token)
        self.model = model or NamespaceModel()
        self.records = {}
        self.snapshots = []  # (begin body, end body, node count)
        self.heartbeats = []  # (monotonic time, body)
        self.reply = None
        self._snap = None

    def close(self):
        self.c.close()

    def subscribe(self, from_=None, digest=None, site=None):
        """Returns the REPLY body; raises MPError on ERROR."""
        if from_ is None:
            from_ = self.model.version
        body = {"from": from_}
        if digest is not None:
            body["digest"] = digest
        if site is not None:
            body["site"] = site
        t, b = self.c.call(SUBSCRIBE, body)
        if t == ERROR:
            raise MPError(b)
        assert t == REPLY, (t, b)
        assert b["from"] == from_ and isinstance(b["snapshot"], bool), b
        self.reply = b
        return b

    def handle(self, t, id_, b):
        assert id_ == 0, "stream message type %d with id %r" % (t, id_)
        if t == CHANGES:
            assert self._snap is None, "CHANGES inside a snapshot"
            recs = b["versions"]
            assert recs, "empty CHANGES"
            for rec in recs:
                self.model.apply_record(rec)
                self.records[rec[0]] = rec
        elif t == HEARTBEAT:
            assert isinstance(b["version"], int) and isinstance(b["time"], int), b
            self.heartbeats.append((time.monotonic(), b))
        elif t == SNAPSHOT_BEGIN:
            assert self._snap is None, "SNAPSHOT_BEGIN twice"
            for k in ("version", "digest", "count", "next_ino", "cluster_id"):
                assert k in b, "SNAPSHOT_BEGIN lacks %s: %r" % (k, b)
            self._snap = (b, [])
        elif t == SNAPSHOT_CHUNK:
            assert self._snap is not None, "SNAPSHOT_CHUNK outside a snapshot"
            self._snap[1].extend(b["nodes"])
        elif t == SNAPSHOT_END:
            begin, nodes = self._snap
            self._snap = None
            assert b["version"] == begin["version"], (begin, b)
            assert b["count"] == begin["count"] == len(nodes), (
                "snapshot count: begin %d, end %d, nodes %d" % (begin["count"], b["count"],
                                                                len(nodes)))
            self.model.reset(nodes, begin["version"])
            assert self.model.digest() == begin["digest"], (
                "snapshot digest %s, nodes hash to %s" % (begin["digest"].hex(),
                                                          self.model.digest().hex()))
            self.model.check_tree()
            assert max(self.model.nodes) < begin["next_ino"], "next_ino below an inode"
            self.snapshots.append((begin, b, len(nodes)))
        elif t == ERROR:
            raise MPError(b)
        else:
            raise AssertionError("unexpected stream message %d: %r" % (t, b))
        return t

    def pump(self, until=None, timeout=30, ack=True):
        """Reads stream messages until the model reaches version until (None:
        until a read times out after `timeout`), acking after each CHANGES.
        Returns the model's version."""
        deadline = time.monotonic() + timeout
        while until is None or self.model.version < until or self._snap is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                if until is None:
                    return self.model.version
                raise AssertionError("stream stopped at version %d, waiting for %d" % (
                    self.model.version, until))
            try:
                t, id_, b = self.c.recv(timeout=left)
            except socket.timeout:
                continue
            t = self.handle(t, id_, b)
            if ack and t in (CHANGES, SNAPSHOT_END):
                self.ack()
        return self.model.version

    def ack(self, version=None):
        self.c.send(ACK, {"version": self.model.version if version is None else version},
                    id_=0)


def tls_client_context(ca_file, cert=None, key=None):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


# ---------------------------------------------------------------- digest

MASK = (1 << 64) - 1
_M = 0xC6A4A7935BD1E995
SEED_A = 0x6D69727230706C61
SEED_B = 0x6E65646967657374


def murmur64a(data, seed):
    """MurmurHash64A as common/base/hash.c (little-endian blocks)."""
    n = len(data)
    h = (seed ^ ((n * _M) & MASK)) & MASK
    nblocks = n // 8
    for (k,) in struct.iter_unpack("<Q", data[:nblocks * 8]):
        k = (k * _M) & MASK
        k ^= k >> 47
        k = (k * _M) & MASK
        h ^= k
        h = (h * _M) & MASK
    tail = data[nblocks * 8:]
    if tail:
        for i, b in enumerate(tail):
            h ^= b << (8 * i)
        h = (h * _M) & MASK
    h ^= h >> 47
    h = (h * _M) & MASK
    h ^= h >> 47
    return h


def mix64(x):
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK
    x ^= x >> 31
    return x


def node_hash(node):
    """namespace_record_hash of a wire node; returns (a, b)."""
    name = name_bytes(node[N_NAME])
    extra = node[N_EXTRA] or b""
    if isinstance(extra, str):
        extra = name_bytes(extra)
    head = struct.pack("<QQQQQIIIBBI", node[N_INO], node[N_PARENT], node[N_SIZE],
                       node[N_MTIME] & MASK, node[N_CTIME] & MASK, node[N_MODE], node[N_UID],
                       node[N_GID], node[N_TYPE], len(name), len(extra))
    a = murmur64a(head, SEED_A)
    b = murmur64a(head, SEED_B)
    a = murmur64a(name, a)
    b = murmur64a(name, b)
    if extra:
        a = murmur64a(extra, a)
        b = murmur64a(extra, b)
    return mix64(a), mix64(b ^ 0x9E3779B97F4A7C15)


def digest_bytes(sums):
    return struct.pack(">QQ", sums[0] & MASK, sums[1] & MASK)


def digest_of(nodes):
    """The 16-byte digest of an iterable of wire nodes."""
    a = b = 0
    for n in nodes:
        x, y = node_hash(n)
        a = (a + x) & MASK
        b = (b + y) & MASK
    return digest_bytes((a, b))


EMPTY_ROOT = [ROOT, 0, "", DIR, 0o755, 0, 0, 0, 0, 0, None]


class NamespaceModel:
    """A mirror's view: inode -> node, with the running digest updated per
    mutation the way common/namespace/namespace.c does it."""

    def __init__(self, empty_root=True):
        """The state at version 0: only the root (mode 0755, times 0)."""
        self.nodes = {}
        self.sums = [0, 0]
        self.version = 0
        if empty_root:
            self.put(list(EMPTY_ROOT))

    def copy(self):
        m = NamespaceModel(empty_root=False)
        m.nodes = dict(self.nodes)
        m.sums = list(self.sums)
        m.version = self.version
        return m

    def _add(self, node, sign):
        x, y = node_hash(node)
        self.sums[0] = (self.sums[0] + sign * x) & MASK
        self.sums[1] = (self.sums[1] + sign * y) & MASK

    def put(self, node):
        old = self.nodes.get(node[N_INO])
        if old is not None:
            self._add(old, -1)
        self.nodes[node[N_INO]] = node
        self._add(node, 1)

    def drop(self, ino):
        old = self.nodes.pop(ino)
        self._add(old, -1)

    def reset(self, nodes, version):
        self.nodes = {}
        self.sums = [0, 0]
        for n in nodes:
            assert n[N_INO] not in self.nodes, "inode %d twice in a snapshot" % n[N_INO]
            self.put(n)
        self.version = version

    def digest(self):
        return digest_bytes(self.sums)

    def apply_record(self, rec):
        """Applies a change record [version, time, digest, mutations]; checks
        that it is the next version, that each inode appears once, and that
        the digest afterwards is the record's."""
        assert isinstance(rec, list) and len(rec) == 4, "bad change record %r" % (rec,)
        version, t, digest, muts = rec
        assert version == self.version + 1, "record of version %d after version %d" % (
            version, self.version)
        assert isinstance(t, int) and t > 0, "record time %r" % (t,)
        assert isinstance(digest, bytes) and len(digest) == 16, "record digest %r" % (digest,)
        seen = set()
        for m in muts:
            op, arg = m
            ino = arg[N_INO] if op == PUT else arg
            assert ino not in seen, "inode %d twice in version %d" % (ino, version)
            seen.add(ino)
            if op == PUT:
                assert len(arg) == 11, "node with %d fields" % len(arg)
                self.put(arg)
            elif op == DROP:
                assert ino in self.nodes, "version %d drops unknown inode %d" % (version, ino)
                self.drop(ino)
            else:
                raise AssertionError("unknown mutation op %r in version %d" % (op, version))
        self.version = version
        assert self.digest() == digest, (
            "digest after version %d is %s, the record says %s" %
            (version, self.digest().hex(), digest.hex()))

    def check_tree(self):
        """Every node's parent is a directory present, names unique per
        directory, the root present."""
        assert ROOT in self.nodes, "no root"
        names = set()
        for ino, n in self.nodes.items():
            if ino == ROOT:
                assert n[N_PARENT] == 0
                continue
            p = self.nodes.get(n[N_PARENT])
            assert p is not None, "inode %d has missing parent %d" % (ino, n[N_PARENT])
            assert p[N_TYPE] == DIR, "inode %d's parent %d is not a directory" % (ino, p[N_INO])
            key = (n[N_PARENT], name_bytes(n[N_NAME]))
            assert key not in names, "name %r twice in directory %d" % (key[1], key[0])
            names.add(key)

    def path_of(self, ino):
        parts = []
        while ino != ROOT:
            n = self.nodes[ino]
            parts.append(name_bytes(n[N_NAME]))
            ino = n[N_PARENT]
        return b"/" + b"/".join(reversed(parts))


# ---------------------------------------------------------------- daemons

def primary_binary():
    return os.environ.get("MP_PRIMARY") or os.path.join(REPO, "build", "primary", "mp-primary")


def storecheck_binary():
    return os.environ.get("MP_STORECHECK") or os.path.join(REPO, "build", "tests", "tools",
                                                           "storecheck")


def tool_binary(env_name, program):
    """A test tool of tests/tools: $env_name (set by meson), else the one in
    the default build directory."""
    return os.environ.get(env_name) or os.path.join(REPO, "build", "tests", "tools", program)


def session_check_binary():
    return tool_binary("MP_SESSION_CHECK", "mp-session-check")


def fallback_reader_binary():
    return tool_binary("MP_FALLBACK_READER", "mp-fallback-reader")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _yaml_scalar(v):
    if v is None:
        return "~"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Raw):
        return v.text
    s = str(v)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Raw:
    """A YAML scalar written as is (for bad values)."""

    def __init__(self, text):
        self.text = text


def to_yaml(d, indent=0):
    lines = []
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append("%s%s:" % (" " * indent, k))
            lines.append(to_yaml(v, indent + 2))
        else:
            lines.append("%s%s: %s" % (" " * indent, k, _yaml_scalar(v)))
    return "\n".join(lines)


_all_daemons = []
_test_daemons = []


class StartError(AssertionError):
    pass


class Daemon:
    """What mp-primary and mp-mirror launchers share: a process on free
    127.0.0.1 ports with its output in a log file, an admin HTTP port,
    SIGTERM that must end in exit 0 with no sanitizer report, kill -9.

    Subclasses set `program` and provide argv() and ready()."""

    program = "daemon"

    def _setup(self, tmpdir, name, config, extra_args, env, ports):
        self.tmpdir = tmpdir
        self.name = name
        self.extra_args = list(extra_args)
        self.env = dict(os.environ)
        # UBSan only reports by default: make it fail like ASan does.
        self.env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        if env:
            self.env.update(env)
        self.port, self.admin_port = ports or (free_port(), free_port())
        self.config_path = os.path.join(tmpdir, name + ".yaml") if config is not None else None
        if config is not None:
            self.write_config(config)
        self.log_path = os.path.join(tmpdir, name + ".log")
        self.proc = None
        self.starts = 0
        _all_daemons.append(self)
        _test_daemons.append(self)

    # -- configuration -------------------------------------------------
    def write_config(self, config):
        text = config if isinstance(config, str) else to_yaml(config) + "\n"
        if self.config_path is None:
            self.config_path = os.path.join(self.tmpdir, self.name + ".yaml")
        with open(self.config_path, "w") as f:
            f.write(text)

    # -- life cycle ----------------------------------------------------
    def spawn(self):
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(("==== start %d: %s\n" % (self.starts, " ".join(self.argv()))).encode())
        log.flush()
        self.log_offset = log.tell()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, env=self.env, cwd=self.tmpdir)
        log.close()
        return self.proc

    def start(self, timeout=60):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        for attempt in range(3):
            self.spawn()
            try:
                self.wait_ready(timeout)
                return self
            except StartError:
                text = self.log_since_start()
                if attempt < 2 and "in use" in text.lower():
                    self.port, self.admin_port = free_port(), free_port()
                    continue
                raise

    def ready(self):
        """Whether the admin port says the daemon is up (OSError: not yet)."""
        raise NotImplementedError

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise StartError("%s exited with %d during start-up:\n%s" %
                                 (self.program, rc, self.log_since_start()[-3000:]))
            try:
                if self.ready():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill9()
                raise StartError("%s did not answer %s within %ss:\n%s" %
                                 (self.program, self.ready_path, timeout,
                                  self.log_since_start()[-3000:]))
            time.sleep(0.05)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        assert self.running(), "%s is not running" % self.program
        os.kill(self.proc.pid, sig)

    def stop(self, timeout=60, expect_code=0):
        """SIGTERM; waits for the exit and checks its code and the log for
        sanitizer reports."""
        if not self.running():
            rc = self.proc.returncode if self.proc else None
            raise AssertionError("%s (%s) was not running at stop (exit code %r):\n%s" % (
                self.program, self.name, rc, self.log_since_start()[-3000:]))
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError("%s did not exit within %ss of SIGTERM" % (self.program,
                                                                            timeout))
        self.check_log_clean()
        if expect_code is not None:
            assert rc == expect_code, (
                "%s exited with %d after SIGTERM (expected %d):\n%s" %
                (self.program, rc, expect_code, self.log_since_start()[-4000:]))
        return rc

    def kill9(self):
        if self.running():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self, timeout=60):
        self.stop()
        return self.start(timeout)

    def check_log_clean(self):
        text = self.log_since_start()
        for marker in ("runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                       "WARNING: ThreadSanitizer"):
            assert marker not in text, "sanitizer report in the log of %s:\n%s" % (
                self.name, text[-6000:])

    # -- logs ----------------------------------------------------------
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self):
        """The log's length now, for wait_log(since=...)."""
        return len(self.log())

    def log_since_start(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode("utf-8", "replace")
        except (OSError, AttributeError):
            return ""

    def wait_log(self, text, timeout=10, since=0):
        """Waits until the log (from byte offset since) contains text."""
        deadline = time.monotonic() + timeout
        while True:
            full = self.log()
            if text in full[since:]:
                return full
            assert time.monotonic() < deadline, "log of %s lacks %r after %ss:\n%s" % (
                self.name, text, timeout, full[-3000:])
            time.sleep(0.05)

    # -- admin ---------------------------------------------------------
    def http(self, method, path, timeout=10, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        finally:
            c.close()

    def status(self):
        code, body = self.http("GET", "/status")
        assert code == 200, "/status answered %d: %s" % (code, body)
        return json.loads(body)

    def metrics(self):
        """/metrics as {'name{labels}': value}."""
        code, body = self.http("GET", "/metrics")
        assert code == 200, "/metrics answered %d: %s" % (code, body)
        out = {}
        for line in body.splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
        return out

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.pid)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port


class Primary(Daemon):
    """A running mp-primary.

    store: None (SQLite in its own data directory) or a store URL.
    config: None or a dict written as the YAML file given with -c.
    extra_args: more command-line arguments.
    Listen and admin addresses are free ports on 127.0.0.1, given on the
    command line (which beats the file)."""

    program = "mp-primary"
    ready_path = "/healthz"

    def __init__(self, tmpdir, store=None, config=None, extra_args=(), name="primary",
                 data_dir=None, start=True, env=None, ports=None):
        self.store = store
        self.data_dir = data_dir or os.path.join(tmpdir, name + "-data")
        self._setup(tmpdir, name, config, extra_args, env, ports)
        if start:
            self.start()

    @property
    def store_url(self):
        return self.store or "sqlite:%s/meta.db" % self.data_dir

    def argv(self):
        a = [primary_binary()]
        if self.config_path is not None:
            a += ["-c", self.config_path]
        a += ["--listen", "127.0.0.1:%d" % self.port, "--admin", "127.0.0.1:%d" % self.admin_port]
        if self.store is not None:
            a += ["--store", self.store]
        else:
            a += ["--data-dir", self.data_dir]
        return a + self.extra_args

    def ready(self):
        code, body = self.http("GET", "/healthz", timeout=2)
        return code == 200

    def kill9(self):
        """SIGKILL, then (PostgreSQL) wait until the server has ended the
        dead daemon's sessions: a COMMIT it sent just before dying may still
        land, and a check of the store must see the state it leaves."""
        if self.running():
            ports = None
            if self.store is not None and self.store.startswith("postgres"):
                ports = _tcp_client_ports(self.proc.pid, _url_port(self.store))
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            if ports:
                wait_pg_sessions_gone(self.store, ports)

    # -- clients -------------------------------------------------------
    def client(self, hello=True, token=None, **kw):
        return Client(self.port, hello=hello, token=token, **kw)

    def storecheck(self):
        return storecheck(self.store_url)


def version_and_digest(d):
    """(version, hex digest) from the /status of a Primary or a Mirror."""
    st = d.status()
    return (st["applied_version"] if st.get("role") == "mirror" else st["version"]), st["digest"]


def mirror_binary():
    return os.environ.get("MP_MIRROR") or os.path.join(REPO, "build", "mirror", "mp-mirror")


def upstream_address(u):
    """HOST:PORT of a Primary or Mirror, or a string as given."""
    return u.address if isinstance(u, Daemon) else str(u)


class Mirror(Daemon):
    """A running mp-mirror.

    upstream: a Primary, a Mirror, a "HOST:PORT" string, or a list of them
    (failover order); read at each start, so it may be changed between
    starts. config: None or a dict written as the YAML file given with -c.
    Site, upstream, data directory, listen and admin addresses are given on
    the command line (which beats the file).

    Start-up waits for /status to answer: /healthz says 503 while the
    replica bootstraps, which is a state tests want to see."""

    program = "mp-mirror"
    ready_path = "/status"

    def __init__(self, tmpdir, upstream, site=None, config=None, extra_args=(), name="mirror",
                 data_dir=None, start=True, env=None, ports=None):
        self.upstream = upstream
        self.site = site or name
        self.data_dir = data_dir or os.path.join(tmpdir, name + "-data")
        self._setup(tmpdir, name, config, extra_args, env, ports)
        if start:
            self.start()

    @property
    def upstream_list(self):
        us = self.upstream if isinstance(self.upstream, (list, tuple)) else [self.upstream]
        return ",".join(upstream_address(u) for u in us)

    def argv(self):
        a = [mirror_binary()]
        if self.config_path is not None:
            a += ["-c", self.config_path]
        a += ["--site", self.site, "--upstream", self.upstream_list,
              "--data-dir", self.data_dir,
              "--listen", "127.0.0.1:%d" % self.port, "--admin", "127.0.0.1:%d" % self.admin_port]
        return a + self.extra_args

    def ready(self):
        code, body = self.http("GET", "/status", timeout=2)
        return code == 200

    def healthz(self):
        """(HTTP code, body) of /healthz."""
        return self.http("GET", "/healthz", timeout=5)

    def wait_state(self, pred, timeout=60, what="mirror state"):
        """Polls /status until pred(status) is true; returns that status. A
        failure shows the last status seen."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = self.status()
                if pred(last):
                    return last
            except (AssertionError, OSError, ValueError) as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError("%s: %s not reached within %ss; last /status: %r" % (
                    self.name, what, timeout, last))
            time.sleep(0.05)

    def wait_caught_up(self, upstream, timeout=60):
        """Waits until /status shows the version and digest of upstream (a
        Primary or Mirror, which must be idle); returns the mirror's status."""
        want_v, want_d = version_and_digest(upstream)
        return self.wait_state(
            lambda st: st["applied_version"] == want_v and st["digest"] == want_d,
            timeout=timeout, what="version %d with digest %s" % (want_v, want_d))

    # -- clients -------------------------------------------------------
    def client(self, hello=True, token=None, **kw):
        return Client(self.port, hello=hello, token=token, role="mirror", **kw)



def _cleanup():
    for p in _all_daemons:
        if p.running():
            try:
                os.kill(p.proc.pid, signal.SIGKILL)
                p.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass


atexit.register(_cleanup)


def run_primary(args, timeout=30, env=None):
    """Runs mp-primary with args to completion (for -n, token create, failed
    starts): returns (exit code, stdout, stderr)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run([primary_binary()] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout, env=e)
    return p.returncode, p.stdout, p.stderr


def run_mirror(args, timeout=30, env=None):
    """Runs mp-mirror with args to completion (-n, failed starts): returns
    (exit code, stdout, stderr)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run([mirror_binary()] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout, env=e)
    return p.returncode, p.stdout, p.stderr


def storecheck(url):
    p = subprocess.run([storecheck_binary(), url], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, "storecheck %s failed (%d): %s" % (url, p.returncode, p.stderr)
    return json.loads(p.stdout)


# ---------------------------------------------------------------- stores

STORE = os.environ.get("MP_TEST_STORE", "sqlite")
_db_counter = [0]


class Skip(Exception):
    pass


def _psql():
    try:
        import pgserver
        d = pgserver.bindir()
        if os.path.exists(os.path.join(d, "psql")):
            return os.path.join(d, "psql")
    except Exception:
        pass
    p = shutil.which("psql")
    if p is None:
        raise AssertionError("psql not found")
    return p


def psql(url, sql):
    p = subprocess.run([_psql(), url, "-v", "ON_ERROR_STOP=1", "-qAtX", "-c", sql],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, "psql %r failed: %s" % (sql, p.stderr)
    return p.stdout.strip()


def _url_port(url):
    hostport = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    return int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 5432


def _tcp_client_ports(pid, remote_port):
    """Local ports of pid's TCP connections to remote_port."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == remote_port:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def wait_pg_sessions_gone(url, ports, timeout=30):
    """Waits until no session of the server comes from one of ports."""
    q = ("SELECT count(*) FROM pg_stat_activity WHERE client_port IN (%s)" %
         ",".join(str(p) for p in sorted(ports)))
    wait_until(lambda: psql(url, q) == "0", timeout=timeout,
               what="the killed daemon's PostgreSQL sessions ending")


def fresh_store(tag="t"):
    """None for SQLite (the daemon's own data directory), or the URL of a new,
    empty PostgreSQL database when MP_TEST_STORE=postgres."""
    if STORE != "postgres":
        return None
    base = os.environ.get("MP_TEST_PG_URL")
    if not base:
        raise Skip("MP_TEST_STORE=postgres but no MP_TEST_PG_URL (PostgreSQL not available)")
    _db_counter[0] += 1
    name = "mp_%s_%d_%d" % ("".join(c for c in tag if c.isalnum())[:20], os.getpid(),
                            _db_counter[0])
    psql(base, "CREATE DATABASE %s" % name)
    return base.rsplit("/", 1)[0] + "/" + name


# ---------------------------------------------------------------- helpers

def wait_until(fn, timeout=10, interval=0.05, what="condition"):
    """Polls fn until it returns a true value (returned); fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except (AssertionError, OSError) as e:
            last = e
        assert time.monotonic() < deadline, "%s not reached within %ss (last: %r)" % (
            what, timeout, last)
        time.sleep(interval)


def all_nodes(client, path="/"):
    """Every node below and including path, walked with READDIR."""
    root = client.resolve(path)
    out = [root]
    stack = [root]
    while stack:
        d = stack.pop()
        cursor = None
        while True:
            r = client.readdir(ino=d[N_INO], cursor=cursor, limit=10000)
            for n in r["entries"]:
                out.append(n)
                if n[N_TYPE] == DIR:
                    stack.append(n)
            if r["next"] is None:
                break
            cursor = r["next"]
    return out


def layout(*extents):
    """A layout as the wire takes it: a list of [bucket, key, etag, offset, length]."""
    return [list(e) for e in extents]


def layout_bytes(lay):
    return msgpack.packb(lay, use_bin_type=True)


class Stutter:
    """Makes a daemon stutter from a background thread: SIGSTOP for a
    random pause in `pause` (seconds), SIGCONT, then run for about `period`
    seconds, until stop(), which always leaves the daemon running. pauses:
    how many stops were made."""

    def __init__(self, daemon, period=0.2, pause=(0.03, 0.08), seed=1):
        import random
        self.daemon = daemon
        self.period, self.pause = period, pause
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.pauses = 0
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        pid = self.daemon.pid
        try:
            while not self.halt.wait(self.period * self.rng.uniform(0.75, 1.25)):
                os.kill(pid, signal.SIGSTOP)
                try:
                    time.sleep(self.rng.uniform(*self.pause))
                finally:
                    os.kill(pid, signal.SIGCONT)
                self.pauses += 1
        except OSError as e:  # the daemon went away
            self.error = e

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.halt.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the stutter thread hangs"
        if self.daemon.running():
            os.kill(self.daemon.pid, signal.SIGCONT)
        assert self.error is None, "stutter: %r" % self.error
        return self.pauses


class Storm:
    """n writer threads, each on its own connection to port, looping over
    create /PREFIX/wK/fI, mkdir dI, rename fI -> dI/f, create dI/g, unlink
    dI/f, until stop() (or `seconds` passed to run()). A writer whose daemon
    goes away ends quietly; any other error is kept and raised by stop().
    versions: every acknowledged version."""

    def __init__(self, port, prefix="/storm", n=16, token=None):
        self.port, self.prefix, self.n = port, prefix, n
        c = Client(port, hello=True, token=token)
        c.mkdir(prefix, parents=True)
        c.batch([(MKDIR, {"path": "%s/w%d" % (prefix, k)}) for k in range(n)])
        c.close()
        self.token = token
        self.halt = threading.Event()
        self.errors = []
        self.versions = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                        for k in range(n)]

    def _run(self, k):
        base = "%s/w%d" % (self.prefix, k)
        mine = []
        try:
            c = Client(self.port, hello=True, token=self.token)
        except OSError as e:
            self.errors.append(e)
            return
        i = 0
        try:
            while not self.halt.is_set():
                f, d = "%s/f%d" % (base, i), "%s/d%d" % (base, i)
                mine.append(c.create(f, size=i)["version"])
                mine.append(c.mkdir(d)["version"])
                mine.append(c.rename(f, d + "/f")["version"])
                mine.append(c.create(d + "/g", size=i)["version"])
                mine.append(c.unlink(d + "/f")["version"])
                i += 1
        except (ConnectionClosed, ConnectionResetError, BrokenPipeError, TimeoutError,
                OSError):
            pass  # the daemon went away
        except MPError as e:
            if e.code != "ESHUTDOWN":  # a draining daemon refuses writes
                self.errors.append(e)
        except BaseException as e:  # any other ERROR reply or a bad frame
            self.errors.append(e)
        finally:
            c.close()
            with self.lock:
                self.versions.extend(mine)

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout=60):
        self.halt.set()
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), "a writer hangs"
        assert not self.errors, "writers failed: %r" % self.errors[:3]
        return sorted(self.versions)

    def run(self, seconds):
        """start(), sleep, stop(): returns the acknowledged versions."""
        self.start()
        time.sleep(seconds)
        return self.stop()


# ---------------------------------------------------------------- mp CLI

def cli_binary():
    return os.environ.get("MP_CLI") or os.path.join(REPO, "build", "client", "mp")


class CliResult:
    """What one run of mp did: rc, out (bytes), err (str)."""

    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    @property
    def text(self):
        return self.out.decode("utf-8", "surrogateescape")

    def json(self):
        try:
            return json.loads(self.out)
        except ValueError as e:
            raise AssertionError("mp %s printed no JSON document (%s): %r" % (
                " ".join(self.argv[1:]), e, self.out[:2000]))

    def __repr__(self):
        return "mp exited %r; stderr %r; stdout %r" % (self.rc, self.err[-2000:],
                                                      self.out[:500])


class Cli:
    """Runs the mp CLI (MP_CLI) as a subprocess with explicit servers:
    --primary and --mirror from the daemons given (a Daemon or "HOST:PORT";
    None leaves it out), -o session_file=TMPDIR/session unless the run names
    another, and `options` (NAME=VALUE strings) as -o flags. AWS_* variables
    of the environment are dropped so that only the flags configure buckets.
    Every run's stderr is checked for sanitizer reports."""

    def __init__(self, tmpdir, primary=None, mirror=None, options=(), session=None):
        self.tmpdir = tmpdir
        self.primary, self.mirror = primary, mirror
        self.options = list(options)
        self.session = session or os.path.join(tmpdir, "session")

    def argv(self, args, options=(), session=None, servers=True):
        a = [cli_binary()]
        if servers and self.primary is not None:
            a += ["--primary", upstream_address(self.primary)]
        if servers and self.mirror is not None:
            a += ["--mirror", upstream_address(self.mirror)]
        a += ["-o", "session_file=" + (session or self.session)]
        for o in list(self.options) + list(options):
            a += ["-o", o]
        return a + [str(x) for x in args]

    def run(self, *args, expect=0, input=None, options=(), session=None, servers=True,
            env=None, timeout=300, raw=False):
        """Runs mp with args (raw: exactly args after the binary, nothing
        added). expect: the exit code wanted (None: any). input: bytes for
        stdin. Returns a CliResult."""
        argv = [cli_binary()] + [str(x) for x in args] if raw else \
            self.argv(args, options, session, servers)
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("AWS_") or k == "MP_CONFIG":
                del e[k]
        e.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        if env:
            e.update(env)
        p = subprocess.run(argv, input=input if input is not None else b"",
                           capture_output=True, timeout=timeout, env=e, cwd=self.tmpdir)
        r = CliResult(argv, p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))
        for marker in ("runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer"):
            assert marker not in r.err, "sanitizer report from mp %s:\n%s" % (
                " ".join(argv[1:]), r.err[-6000:])
        if expect is not None:
            assert r.rc == expect, "mp %s: expected exit %d, %r" % (
                " ".join(argv[1:])[:600], expect, r)
        return r

    def json(self, *args, **kw):
        """mp --json ARGS: the parsed document."""
        return self.run("--json", *args, **kw).json()


# ---------------------------------------------------------------- runner

def main(namespace):
    """Runs the test_* functions of a module in definition order (or those
    named on the command line). Each receives a fresh temporary directory."""
    # A timeout (meson sends SIGTERM) must still stop the daemons (atexit).
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(128 + signal.SIGTERM))
    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f)]
    wanted = sys.argv[1:]
    if wanted:
        tests = [(n, f) for n, f in tests if n in wanted or n[5:] in wanted]
    base = tempfile.mkdtemp(prefix="mp-it-%s-" % os.path.basename(sys.argv[0]).split(".")[0])
    failed, skipped = [], []
    t_all = time.monotonic()
    for name, fn in tests:
        tmp = os.path.join(base, name)
        os.makedirs(tmp)
        del _test_daemons[:]
        t0 = time.monotonic()
        print("---- %s [%s]" % (name, STORE), flush=True)
        try:
            fn(tmp)
            print("ok   %s (%.1f s)" % (name, time.monotonic() - t0), flush=True)
        except Skip as e:
            print("skip %s: %s" % (name, e), flush=True)
            skipped.append(name)
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                print("interrupted in %s (files kept in %s)" % (name, base), flush=True)
                raise
            failed.append(name)
            print("FAIL %s (%.1f s)" % (name, time.monotonic() - t0), flush=True)
            # On stdout, right after the FAIL line: meson's log keeps stdout
            # whole and CI shows it first.
            traceback.print_exc(file=sys.stdout)
            for p in _test_daemons:
                print("------ log of %s (%s) ------" % (p.name, p.log_path))
                text = p.log()
                print(text[-12000:] if len(text) > 12000 else text)
            sys.stdout.flush()
        finally:
            for p in _test_daemons:
                if p.running():
                    p.kill9()
    print("%d passed, %d failed, %d skipped in %.1f s [%s store]" % (
        len(tests) - len(failed) - len(skipped), len(failed), len(skipped),
        time.monotonic() - t_all, STORE))
    if failed:
        print("failed: %s (files kept in %s)" % (", ".join(failed), base))
        sys.exit(1)
    shutil.rmtree(base, ignore_errors=True)
    if skipped and len(skipped) == len(tests):
        sys.exit(77)
    sys.exit(0)
