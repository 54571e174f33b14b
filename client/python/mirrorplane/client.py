"""A libmirrorplane handle with Python types and exceptions.

Every failed call raises the OSError subclass of its errno
(FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError,
NotADirectoryError, ...) with the library's one-line message, and the path
it was about as filename. A Client may be used by several threads, not
by a forked child (open one there; MirrorplaneFileSystem does so itself)."""

import ctypes
import os
import threading

from . import _lib

_lib_lock = threading.Lock()
_lib_handle = []


def library():
    """The loaded libmirrorplane (loaded on first use)."""
    with _lib_lock:
        if not _lib_handle:
            _lib_handle.append(_lib.load())
        return _lib_handle[0]


def _raise(rc, err, path=None):
    code = -rc if rc < 0 else (err.code and -err.code) or 5
    msg = err.message.decode("utf-8", "replace") or os.strerror(code)
    raise OSError(code, msg, path)


def _b(s):
    return os.fsencode(s)


TYPES = {_lib.TYPE_DIR: "dir", _lib.TYPE_FILE: "file", _lib.TYPE_SYMLINK: "symlink"}


def _node_dict(n, path):
    d = {
        "path": path,
        "name": os.fsdecode(n.name or b""),
        "ino": n.ino,
        "parent": n.parent,
        "type": TYPES.get(n.type, "unknown"),
        "mode": n.mode,
        "uid": n.uid,
        "gid": n.gid,
        "size": n.size,
        "mtime_ns": n.mtime_ns,
        "ctime_ns": n.ctime_ns,
    }
    if n.type == _lib.TYPE_SYMLINK:
        d["target"] = os.fsdecode(n.target or b"")
    return d


class Client:
    """A handle on a mirrorplane cluster.

    config: a site YAML file (None: $MP_CONFIG, if set). primary, mirror:
    "HOST:PORT" or lists of them (replacing the configured lists).
    consistency: "session", "strong" or "eventual". options: other
    configuration options by name (see mirrorplane.h), e.g.
    {"buckets.origin.endpoint": "http://127.0.0.1:9000"}."""

    def __init__(self, config=None, primary=None, mirror=None, token=None, consistency=None,
                 options=None):
        self._lib = lib = library()
        # The handle's connections and threads belong to this process: a
        # forked child (a DataLoader worker) must open its own.
        self._pid = os.getpid()
        err = _lib.Error()
        cfg = ctypes.c_void_p()
        rc = lib.mp_config_new(ctypes.byref(cfg), ctypes.byref(err))
        if rc < 0:
            _raise(rc, err)
        self._c = ctypes.c_void_p()
        try:
            rc = lib.mp_config_load(cfg, _b(config) if config is not None else None,
                                    ctypes.byref(err))
            if rc < 0:
                _raise(rc, err, config)
            settings = []
            for name, v in (("primary", primary), ("mirror", mirror)):
                if v is not None:
                    settings.append((name, v if isinstance(v, str) else ",".join(v)))
            if token is not None:
                settings.append(("token", token))
            if consistency is not None:
                settings.append(("consistency", consistency))
            settings += list((options or {}).items())
            for name, v in settings:
                rc = lib.mp_config_set(cfg, _b(name), _b(str(v)), ctypes.byref(err))
                if rc < 0:
                    _raise(rc, err)
            rc = lib.mp_client_open(cfg, ctypes.byref(self._c), ctypes.byref(err))
            if rc < 0:
                self._c = ctypes.c_void_p()
                _raise(rc, err)
        finally:
            lib.mp_config_free(cfg)

    def close(self):
        """Closes the handle (writes its session file, if any). Idempotent;
        no call may be running. In a forked child the handle is only
        forgotten: its sockets and threads are the parent's."""
        if self._c:
            if os.getpid() == self._pid:
                self._lib.mp_client_close(self._c)
            self._c = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _handle(self):
        if not self._c:
            raise ValueError("the mirrorplane client is closed")
        if os.getpid() != self._pid:
            raise RuntimeError("this mirrorplane Client was opened in process %d, before a "
                               "fork: open a new one in process %d" % (self._pid, os.getpid()))
        return self._c

    def _call(self, consistency):
        if consistency is None:
            return None
        call = _lib.Call()
        call.consistency = _lib.CONSISTENCY[consistency]
        return ctypes.byref(call)

    # ---- metadata ----

    def stat(self, path, consistency=None):
        """The node at path (symlinks not followed) as a dict: path, name,
        ino, parent, type ("dir", "file", "symlink"), mode, uid, gid, size,
        mtime_ns, ctime_ns, and target for symlinks."""
        n = _lib.Node()
        err = _lib.Error()
        rc = self._lib.mp_stat(self._handle(), _b(path), self._call(consistency), ctypes.byref(n),
                               ctypes.byref(err))
        try:
            if rc < 0:
                _raise(rc, err, path)
            return _node_dict(n, path)
        finally:
            self._lib.mp_node_clear(ctypes.byref(n))

    def ls(self, path, consistency=None):
        """The entries of the directory at path, in name order, as stat's
        dicts (path: path joined with the name)."""
        out = []
        failure = []
        base = path.rstrip("/")

        def cb(arg, node):
            try:
                n = node.contents
                out.append(_node_dict(n, base + "/" + os.fsdecode(n.name)))
                return 0
            except BaseException as e:  # never unwind through C
                failure.append(e)
                return -5

        err = _lib.Error()
        fn = _lib.LIST_CB(cb)
        rc = self._lib.mp_list(self._handle(), _b(path), self._call(consistency), fn, None,
                               ctypes.byref(err))
        if failure:
            raise failure[0]
        if rc < 0:
            _raise(rc, err, path)
        return out

    def mkdir(self, path, mode=0o755, parents=False):
        err = _lib.Error()
        rc = self._lib.mp_mkdir(self._handle(), _b(path), mode, parents, None, ctypes.byref(err))
        if rc < 0:
            _raise(rc, err, path)

    def rm(self, path, recursive=False):
        """Removes a file, a symlink or an empty directory (recursive: a
        whole tree)."""
        err = _lib.Error()
        rc = self._lib.mp_remove(self._handle(), _b(path), recursive, None, ctypes.byref(err))
        if rc < 0:
            _raise(rc, err, path)

    def rename(self, src, dst):
        err = _lib.Error()
        rc = self._lib.mp_rename(self._handle(), _b(src), _b(dst), None, ctypes.byref(err))
        if rc < 0:
            _raise(rc, err, src)

    def symlink(self, target, path):
        err = _lib.Error()
        rc = self._lib.mp_symlink(self._handle(), _b(target), _b(path), None, ctypes.byref(err))
        if rc < 0:
            _raise(rc, err, path)

    # ---- data ----

    def read(self, path, offset=0, length=None, consistency=None):
        """Bytes [offset, offset + length) of the file (length None: to the
        end; the range is cut at the end of the file)."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("negative offset or length")
        if length == 0:
            return b""
        chunks = []
        failure = []

        def sink(arg, data, n):
            try:
                chunks.append(ctypes.string_at(data, n))
                return 0
            except BaseException as e:
                failure.append(e)
                return -5

        err = _lib.Error()
        fn = _lib.SINK_CB(sink)
        rc = self._lib.mp_read(self._handle(), _b(path), offset, length or 0, fn, None, None,
                               self._call(consistency), ctypes.byref(err))
        if failure:
            raise failure[0]
        if rc == -34:  # ERANGE: offset past the end, as a file read would
            return b""
        if rc < 0:
            _raise(rc, err, path)
        return b"".join(chunks)

    def put(self, local, remote):
        """Uploads a local file and commits it at remote (which may name an
        existing directory)."""
        err = _lib.Error()
        rc = self._lib.mp_put_file(self._handle(), _b(local), _b(remote), None, None,
                                   ctypes.byref(err))
        if rc < 0:
            _raise(rc, err, remote)

    def put_bytes(self, data, remote):
        data = bytes(data)
        err = _lib.Error()
        rc = self._lib.mp_put_buffer(self._handle(), data, len(data), _b(remote), None, None,
                                     ctypes.byref(err))
        if rc < 0:
            _raise(rc, err, remote)

    def get(self, remote, local):
        """Downloads a file to local (through a temporary file)."""
        err = _lib.Error()
        rc = self._lib.mp_get_file(self._handle(), _b(remote), _b(local), None, None,
                                   ctypes.byref(err))
        if rc < 0:
            _raise(rc, err, remote)

    def versions(self):
        """{"primary": N, "mirror": N, "mirror_address": str, "cluster_id": str}"""
        v = _lib.Versions()
        err = _lib.Error()
        rc = self._lib.mp_version(self._handle(), ctypes.byref(v), ctypes.byref(err))
        if rc < 0:
            _raise(rc, err)
        return {"primary": v.primary, "mirror": v.mirror,
                "mirror_address": v.mirror_address.decode(), "cluster_id": v.cluster_id.decode()}
