"""fsspec file system for mirrorplane: mp:///path URLs.

    import fsspec
    fs = fsspec.filesystem("mp", config="site.yaml")
    fs.ls("/datasets")
    with fsspec.open("mp:///datasets/x.parquet", "rb", config="site.yaml") as f: ...

Storage options are Client's: config, primary, mirror, token, consistency,
options. Reads go through the library's read path (cache group, site bucket,
origin) with the file's read-ahead cache; files opened for writing are
staged in a local temporary file and uploaded and committed on close."""

import os
import tempfile

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from .client import Client

_TYPES = {"dir": "directory", "file": "file", "symlink": "link"}


class MirrorplaneFileSystem(AbstractFileSystem):
    protocol = ("mp",)
    root_marker = "/"

    def __init__(self, config=None, primary=None, mirror=None, token=None, consistency=None,
                 options=None, client=None, **kwargs):
        super().__init__(**kwargs)
        self._client_args = dict(config=config, primary=primary, mirror=mirror, token=token,
                                 consistency=consistency, options=options)
        self._given_client = client is not None
        self._client = client or Client(**self._client_args)

    @property
    def client(self):
        """The Client; in a forked child (a DataLoader worker) a new one,
        opened there on first use, unless one was given to __init__."""
        c = self._client
        if c._pid != os.getpid() and not self._given_client:
            c = self._client = Client(**self._client_args)
        return c

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        for proto in ("mp://", "mp::"):
            if path.startswith(proto):
                path = path[len(proto):]
        path = "/" + path.lstrip("/")
        return path.rstrip("/") or "/"

    def unstrip_protocol(self, name):
        return "mp://" + self._strip_protocol(name)

    @staticmethod
    def _info(node):
        out = {
            "name": node["path"] if node["path"] != "" else "/",
            "size": node["size"] if node["type"] == "file" else 0,
            "type": _TYPES[node["type"]],
            "mode": node["mode"],
            "uid": node["uid"],
            "gid": node["gid"],
            "ino": node["ino"],
            "mtime": node["mtime_ns"] / 1e9,
            "created": node["ctime_ns"] / 1e9,
            "islink": node["type"] == "symlink",
        }
        if "target" in node:
            out["destination"] = node["target"]
        return out

    def info(self, path, **kwargs):
        path = self._strip_protocol(path)
        return self._info(self.client.stat(path))

    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path)
        node = self.client.stat(path)
        if node["type"] != "dir":
            entries = [self._info(node)]
        else:
            entries = [self._info(n) for n in self.client.ls(path)]
            for e in entries:
                e["name"] = e["name"].replace("//", "/")
        return entries if detail else [e["name"] for e in entries]

    def exists(self, path, **kwargs):
        try:
            self.info(path)
            return True
        except FileNotFoundError:
            return False

    def cat_file(self, path, start=None, end=None, **kwargs):
        path = self._strip_protocol(path)
        if start is None and end is None:
            return self.client.read(path)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = self.info(path)["size"]
            if start is not None and start < 0:
                start = max(0, size + start)
            if end is not None and end < 0:
                end = max(0, size + end)
        start = start or 0
        if end is not None and end <= start:
            return b""
        return self.client.read(path, start, None if end is None else end - start)

    def pipe_file(self, path, value, **kwargs):
        self.client.put_bytes(value, self._strip_protocol(path))

    def put_file(self, lpath, rpath, callback=None, **kwargs):
        rpath = self._strip_protocol(rpath)
        if os.path.isdir(lpath):
            self.makedirs(rpath, exist_ok=True)
            return
        self.client.put(lpath, rpath)
        if callback is not None:
            size = os.path.getsize(lpath)
            callback.set_size(size)
            callback.relative_update(size)

    def get_file(self, rpath, lpath, callback=None, **kwargs):
        rpath = self._strip_protocol(rpath)
        if self.isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        self.client.get(rpath, lpath)

    def mkdir(self, path, create_parents=True, **kwargs):
        self.client.mkdir(self._strip_protocol(path), parents=create_parents)

    def makedirs(self, path, exist_ok=False):
        path = self._strip_protocol(path)
        if not exist_ok and self.exists(path):
            raise FileExistsError(17, "File exists", path)
        self.client.mkdir(path, parents=True)

    def rmdir(self, path):
        path = self._strip_protocol(path)
        if self.info(path)["type"] != "directory":
            raise NotADirectoryError(20, "Not a directory", path)
        self.client.rm(path)

    def rm_file(self, path):
        path = self._strip_protocol(path)
        if self.info(path)["type"] == "directory":
            raise IsADirectoryError(21, "Is a directory", path)
        self.client.rm(path)

    def _rm(self, path):
        self.client.rm(self._strip_protocol(path))

    def rm(self, path, recursive=False, maxdepth=None):
        paths = path if isinstance(path, list) else [path]
        for p in paths:
            self.client.rm(self._strip_protocol(p), recursive=recursive)
        self.invalidate_cache()

    def mv(self, path1, path2, recursive=False, maxdepth=None, **kwargs):
        self.client.rename(self._strip_protocol(path1), self._strip_protocol(path2))

    def created(self, path):
        import datetime
        return datetime.datetime.fromtimestamp(self.info(path)["created"],
                                               tz=datetime.timezone.utc)

    def modified(self, path):
        import datetime
        return datetime.datetime.fromtimestamp(self.info(path)["mtime"],
                                               tz=datetime.timezone.utc)

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None,
              **kwargs):
        if mode not in ("rb", "wb", "xb"):
            raise NotImplementedError("mp:// files open as rb, wb or xb, not %r" % mode)
        path = self._strip_protocol(path)
        if mode == "xb" and self.exists(path):
            raise FileExistsError(17, "File exists", path)
        return MirrorplaneFile(self, path, mode="rb" if mode == "rb" else "wb",
                               block_size=block_size or self.blocksize,
                               autocommit=autocommit, cache_options=cache_options, **kwargs)


class MirrorplaneFile(AbstractBufferedFile):
    """Reads fetch ranges with read-ahead (fsspec's "readahead" cache of
    block_size); writes go to a local temporary file, uploaded and
    committed at close."""

    DEFAULT_BLOCK_SIZE = 4 * 2 ** 20

    def __init__(self, fs, path, mode="rb", block_size=DEFAULT_BLOCK_SIZE, autocommit=True,
                 cache_type="readahead", cache_options=None, **kwargs):
        if mode == "rb":
            info = fs.info(path)
            if info["type"] == "directory":
                raise IsADirectoryError(21, "Is a directory", path)
            kwargs.setdefault("size", info["size"])
        else:
            try:
                if fs.info(path)["type"] == "directory":
                    raise IsADirectoryError(21, "Is a directory", path)
            except FileNotFoundError:
                pass
        self._staging = None
        super().__init__(fs, path, mode=mode, block_size=block_size, autocommit=autocommit,
                         cache_type=cache_type, cache_options=cache_options, **kwargs)

    def _fetch_range(self, start, end):
        return self.fs.client.read(self.path, start, end - start)

    def _initiate_upload(self):
        self._staging = tempfile.NamedTemporaryFile(prefix="mp-fsspec-", delete=False)

    def _upload_chunk(self, final=False):
        if self._staging is None:
            self._initiate_upload()
        self.buffer.seek(0)
        self._staging.write(self.buffer.read())
        if final:
            self._staging.close()
            try:
                if self.autocommit:
                    self.fs.client.put(self._staging.name, self.path)
            finally:
                os.unlink(self._staging.name)
                self._staging = None
        return True

    def discard(self):
        if self._staging is not None:
            self._staging.close()
            os.unlink(self._staging.name)
            self._staging = None
