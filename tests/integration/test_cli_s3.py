#!/usr/bin/python3
"""The mp CLI with object storage on a real S3-compatible server (s3rver):
round trips through a primary whose origin is s3://mp-test/..., imports of
an existing bucket prefix (2,300 objects, several listing pages), retries on
injected 503 SlowDown answers, and failures (a store that always answers
503, wrong credentials, an endpoint nobody listens on, unknown aliases).

The server is the one tests/lib/s3server.py run started (MP_TEST_S3_ENDPOINT)
or, when the script runs alone, one it starts itself; without node and npm
every test is skipped. s3rver checks the access key (S3RVER) but not SigV4
signatures, and cannot store a key holding "//" (its file store folds it):
such a key is added to a listing by a proxy instead (S3Proxy), which also
injects the 503s and watches requests in flight."""

import hashlib
import http.client
import http.server
import os
import random
import sys
import threading
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from test_cli import (MiB, BIG, MULTIPART, check_layout, cluster, one_line,  # noqa: E402
                      overwrite, roundtrip, roundtrips, tree_roundtrip)

import s3server  # noqa: E402 (tests/lib, put on the path by mp)

CREDS = ["access_key=S3RVER", "secret_key=S3RVER"]
_server = []


def s3_endpoint():
    """http://127.0.0.1:PORT of the s3rver, started on first use."""
    env = os.environ.get("MP_TEST_S3_ENDPOINT")
    if env:
        return env.rstrip("/")
    if not _server:
        srv = s3server.S3Server(log=sys.stdout)
        try:
            srv.start()
        except s3server.S3ServerError as e:
            if "not found" in str(e):
                raise mp.Skip("no s3rver: %s" % e)
            raise
        _server.append(srv)
        import atexit
        atexit.register(srv.stop)
    return _server[0].endpoint


def endpoint_port(endpoint):
    return urllib.parse.urlsplit(endpoint).port


def s3_request(endpoint, method, path, body=b"", headers=None, timeout=30):
    """One unsigned request to the s3rver: (status, headers, body)."""
    c = http.client.HTTPConnection("127.0.0.1", endpoint_port(endpoint), timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def make_bucket(endpoint, name):
    status, _, body = s3_request(endpoint, "PUT", "/" + name)
    assert status in (200, 409), "creating bucket %s: %d %r" % (name, status, body)


def put_objects(endpoint, bucket, objects, threads=8):
    """PUTs {key: bytes} into bucket over a few keep-alive connections."""
    items = list(objects.items())
    errors = []

    def work(part):
        c = http.client.HTTPConnection("127.0.0.1", endpoint_port(endpoint), timeout=60)
        try:
            for k, v in part:
                c.request("PUT", "/%s/%s" % (bucket, urllib.parse.quote(k)), body=v)
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    errors.append((k, r.status))
        except OSError as e:
            errors.append(e)
        finally:
            c.close()

    ts = [threading.Thread(target=work, args=(items[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, "PUT into s3rver failed: %r" % errors[:5]


class S3Backend:
    """An origin s3://BUCKET/PREFIX on the s3rver."""

    name = "s3"

    def __init__(self, endpoint, bucket, prefix):
        self.endpoint, self.bucket, self.prefix = endpoint, bucket, prefix
        self.primary_config = {"origin": "s3://%s/%s" % (bucket, prefix)}
        self.options = ["buckets.origin.endpoint=" + endpoint] + [
            "buckets.origin." + c for c in CREDS]

    def watch(self):
        """A proxy in front of the store (see roundtrip)."""
        return S3Proxy(self.endpoint)

    def object_size(self, key):
        status, h, _ = s3_request(self.endpoint, "HEAD",
                                  "/%s/%s/%s" % (self.bucket, self.prefix, key))
        if status == 404:
            return None
        assert status == 200, "HEAD %s: %d" % (key, status)
        return int(h["content-length"])


# ---------------------------------------------------------------- proxy

HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade", "expect"}
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")


class S3Proxy:
    """An HTTP proxy in front of the s3rver. Object PUTs and GETs (a path
    /BUCKET/KEY) are counted per request (method, path with query, Range):
    the first fail_first of each, or all of them with always=True, get a 503
    SlowDown, then one goes through, and so on (a client that retries well
    sends each request three times); the rest are forwarded as they are
    (Host included, so the signature still matches). inject: extra (key, size, etag) entries added to
    the last page of every ListObjectsV2 answer. Records each request in log
    as (method, path, range, status) and the most object requests of each
    method in flight at once."""

    def __init__(self, endpoint, fail_first=0, always=False, inject=()):
        self.upstream = endpoint_port(endpoint)
        self.fail_first, self.always, self.inject = fail_first, always, list(inject)
        self.lock = threading.Lock()
        self.counts = {}
        self.log = []
        self.inflight = {}
        self.max_inflight = {}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @staticmethod
    def is_object(path):
        parts = urllib.parse.urlsplit(path).path.lstrip("/").split("/", 1)
        return len(parts) == 2 and parts[1] != ""

    def part_puts(self):
        """How many multipart parts were stored."""
        with self.lock:
            return len({path for m, path, rng, status in self.log
                        if m == "PUT" and "partNumber=" in path and status == 200})

    def object_requests(self, method):
        """{(method, path, range): [statuses]} of the object requests seen."""
        out = {}
        with self.lock:
            for m, path, rng, status in self.log:
                if m == method and self.is_object(path):
                    out.setdefault((m, path, rng), []).append(status)
        return out

    def _handle(self, h):
        method, path = h.command, h.path
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        rng = h.headers.get("Range")
        obj = method in ("PUT", "GET") and self.is_object(path)
        with self.lock:
            ident = (method, path, rng)
            self.counts[ident] = self.counts.get(ident, 0) + 1
            # The same request again later (a new mp run) fails again first.
            fail = obj and (self.always or (self.counts[ident] - 1) % (self.fail_first + 1) <
                            self.fail_first)
        if fail:
            with self.lock:
                self.log.append((method, path, rng, 503))
            h.send_response(503)
            h.send_header("Content-Type", "application/xml")
            h.send_header("Content-Length", str(len(SLOWDOWN)))
            h.end_headers()
            h.wfile.write(SLOWDOWN)
            return
        if obj:
            with self.lock:
                k = self.inflight[method] = self.inflight.get(method, 0) + 1
                self.max_inflight[method] = max(self.max_inflight.get(method, 0), k)
        try:
            up = getattr(h, "upstream_conn", None)
            if up is None:
                up = h.upstream_conn = http.client.HTTPConnection("127.0.0.1", self.upstream,
                                                                  timeout=120)
            up.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in h.headers.items():
                if k.lower() not in HOP_HEADERS:
                    up.putheader(k, v)
            up.endheaders(body if body else None)
            r = up.getresponse()
            data = r.read()
            headers = r.getheaders()
            status = r.status
        finally:
            if obj:
                with self.lock:
                    self.inflight[method] -= 1
        if (method == "GET" and "list-type=2" in path and self.inject and
                b"<IsTruncated>false</IsTruncated>" in data):
            extra = b"".join(
                b"<Contents><Key>%s</Key><LastModified>2024-01-01T00:00:00.000Z"
                b"</LastModified><ETag>&quot;%s&quot;</ETag><Size>%d</Size>"
                b"<StorageClass>STANDARD</StorageClass></Contents>" % (
                    k.encode(), etag.encode(), size) for k, size, etag in self.inject)
            data = data.replace(b"</ListBucketResult>", extra + b"</ListBucketResult>")
        with self.lock:
            self.log.append((method, path, rng, status))
        h.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP_HEADERS | {"content-length", "date", "server"}:
                h.send_header(k, v)
        if method == "HEAD":
            h.send_header("Content-Length", dict((k.lower(), v) for k, v in headers).get(
                "content-length", "0"))
            h.end_headers()
        else:
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)


# ---------------------------------------------------------------- tests

def s3_cluster(tmp, prefix):
    endpoint = s3_endpoint()
    make_bucket(endpoint, "mp-test")
    backend = S3Backend(endpoint, "mp-test", prefix)
    p, m = cluster(tmp, backend.primary_config)
    return endpoint, backend, p, m


def test_roundtrip_s3_origin(tmp):
    endpoint, backend, p, m = s3_cluster(tmp, "data")
    cli = mp.Cli(tmp, p, m, options=backend.options)
    roundtrips(tmp, cli, backend, big=False)
    # The big one through a proxy that sees the parts go in parallel.
    with S3Proxy(endpoint) as proxy:
        roundtrip(tmp, cli, backend, "/rt/big", BIG, seed=101,
                  options=["buckets.origin.endpoint=" + proxy.endpoint] + MULTIPART)
        gets = proxy.object_requests("GET")
        assert proxy.part_puts() == BIG // (8 * MiB) + 1, \
            "%d parts: %r" % (proxy.part_puts(), list(proxy.object_requests("PUT")))
        assert proxy.max_inflight.get("PUT", 0) >= 2, \
            "the parts were uploaded one at a time (%r)" % proxy.max_inflight
        assert proxy.max_inflight.get("GET", 0) >= 2, \
            "the ranges were fetched one at a time (%r)" % proxy.max_inflight
        # get, then cat: 14 ranges each.
        assert len(gets) == 14 and all(st == [206, 206] for st in gets.values()), gets
    # By default a large file becomes objects of 64 MiB sent side by side as
    # single PUTs (no multipart assembly at the store).
    with S3Proxy(endpoint) as proxy:
        roundtrip(tmp, cli, backend, "/rt/big-objects", BIG, seed=102,
                  options=["buckets.origin.endpoint=" + proxy.endpoint])
        assert proxy.part_puts() == 0, proxy.part_puts()
        assert len(proxy.object_requests("PUT")) == 2, list(proxy.object_requests("PUT"))
        assert proxy.max_inflight.get("PUT", 0) >= 2, \
            "the objects were uploaded one at a time (%r)" % proxy.max_inflight
    overwrite(tmp, cli, backend)
    tree_roundtrip(tmp, cli, backend)
    p.stop()
    m.stop()


def flat_bytes(i, changed=False):
    rng = random.Random(i * 7 + (1 if changed else 0))
    return rng.randbytes(1 + (i * 37) % 300 + (11 if changed else 0))


def test_import_s3(tmp):
    """2,300 objects under ext-data/set1/ (2,200 in one directory, nested
    ones, a directory marker, plus a "//" key the proxy adds to listings)
    become files below /imported; a re-run after one change, one deletion
    and one addition updates 1, removes 1, creates 1."""
    endpoint = s3_endpoint()
    make_bucket(endpoint, "ext-data")
    objects = {"set1/flat/f%04d" % i: flat_bytes(i) for i in range(2200)}
    for i in range(50):
        objects["set1/a/b/c/deep%02d" % i] = b"deep %d\n" % i * (i + 1)
        objects["set1/n%02d/x" % i] = b"nested %d" % i
    valid = dict(objects)
    objects["set1/dir/"] = b"a directory marker"  # ends with '/': skipped
    objects["set10/not-this"] = b"prefix set10/, not set1/"
    objects["other/not-this"] = b"outside the prefix"
    put_objects(endpoint, "ext-data", objects)
    dbl = ("set1/dbl//slash", 5, hashlib.md5(b"dbl//").hexdigest())
    p, m = cluster(tmp)
    with S3Proxy(endpoint, inject=[dbl]) as proxy:
        cli = mp.Cli(tmp, p, m, options=["buckets.ext.url=s3://ext-data",
                                         "buckets.ext.endpoint=" + proxy.endpoint] +
                     ["buckets.ext." + c for c in CREDS])

        def stats(st):
            return (st["listed"], st["created"], st["updated"], st["unchanged"], st["removed"],
                    st["skipped"])

        st = cli.json("import", "ext/set1", "/imported")
        lists = [x for x in proxy.log if x[0] == "GET" and "list-type=2" in x[1]]
        assert len(lists) >= 3, "2,302 keys listed in %d requests" % len(lists)
        assert st["source"] == "ext/set1" and st["dest"] == "/imported", st
        # (listed, created, updated, unchanged, removed, skipped)
        assert stats(st) == (2302, 2300, 0, 0, 0, 2), st
        assert st["bytes"] == sum(len(v) for k, v in objects.items()
                                  if k.startswith("set1/")) + dbl[1], st
        assert isinstance(st["version"], int) and st["version"] > 0, st

        ls = cli.json("ls", "/imported/flat")["listings"][0]["entries"]
        assert [e["name"] for e in ls] == ["f%04d" % i for i in range(2200)], \
            "ls /imported/flat: %d entries" % len(ls)
        bad = [(e["name"], e["size"]) for e in ls
               if e["type"] != "file" or e["size"] != len(objects["set1/flat/" + e["name"]])]
        assert not bad, "files of the wrong type or size: %r" % bad[:10]
        top = {e["name"]: e["type"]
               for e in cli.json("ls", "/imported")["listings"][0]["entries"]}
        assert top == dict([("a", "dir"), ("flat", "dir")] +
                           [("n%02d" % i, "dir") for i in range(50)]), \
            "unexpected entries: %r" % sorted(set(top) - {"a", "flat"})[:10]
        node = cli.json("stat", "/imported/a/b/c/deep07")["nodes"][0]
        e = node["extents"]
        assert node["size"] == len(valid["set1/a/b/c/deep07"]) and len(e) == 1, node
        assert e[0]["bucket"] == "ext" and e[0]["key"] == "set1/a/b/c/deep07", e
        assert e[0]["etag"] == hashlib.md5(valid["set1/a/b/c/deep07"]).hexdigest(), e
        for k in ("set1/flat/f0000", "set1/flat/f2199", "set1/a/b/c/deep49", "set1/n07/x"):
            assert cli.run("cat", "/imported/" + k[5:]).out == valid[k], k
        out = os.path.join(tmp, "deep")
        cli.run("get", "-r", "/imported/a", out)
        for i in range(50):
            with open(os.path.join(out, "b", "c", "deep%02d" % i), "rb") as f:
                assert f.read() == valid["set1/a/b/c/deep%02d" % i], i

        # Change one object, delete one, add one.
        put_objects(endpoint, "ext-data", {"set1/flat/f0005": flat_bytes(5, changed=True),
                                           "set1/new/added": b"added later"})
        status, _, _ = s3_request(endpoint, "DELETE", "/ext-data/set1/flat/f0006")
        assert status == 204, status
        st = cli.json("import", "ext/set1", "/imported")
        assert stats(st) == (2302, 1, 1, 2298, 1, 2), st
        assert cli.run("cat", "/imported/flat/f0005").out == flat_bytes(5, changed=True)
        assert cli.run("cat", "/imported/new/added").out == b"added later"
        one_line(cli.run("stat", "/imported/flat/f0006", expect=1), "no such")
        # Nothing changed: nothing to do (a trailing '/' names the same prefix).
        st = cli.json("import", "ext/set1/", "/imported/")
        assert stats(st) == (2302, 0, 0, 2300, 0, 2), st
    p.stop()
    m.stop()


def test_retries_on_503(tmp):
    """Every object PUT and GET answered 503 SlowDown twice before the
    proxy lets it through: put, get and cat succeed, and each request was
    sent exactly three times."""
    endpoint, backend, p, m = s3_cluster(tmp, "retry")
    with S3Proxy(endpoint, fail_first=2) as proxy:
        cli = mp.Cli(tmp, p, m, options=backend.options +
                     ["buckets.origin.endpoint=" + proxy.endpoint])
        roundtrip(tmp, cli, backend, "/r/single", 1 * MiB, seed=1)
        roundtrip(tmp, cli, backend, "/r/multi", 12 * MiB, seed=2,
                  options=["part_size=5MiB"] + MULTIPART)
        assert proxy.part_puts() == 3, proxy.part_puts()
        puts = proxy.object_requests("PUT")
        gets = proxy.object_requests("GET")
        assert len(puts) == 1 + 3, "expected 1 PUT and 3 parts: %r" % list(puts)
        # get, then cat: the same ranges twice.
        assert len(gets) == 1 + 3 and all(len(x) == 6 for x in gets.values()), \
            "expected the ranges of both files, each fetched twice: %r" % gets
        for ident, statuses in list(puts.items()) + list(gets.items()):
            ok = len(statuses) % 3 == 0 and all(
                statuses[i:i + 2] == [503, 503] and statuses[i + 2] in (200, 206)
                for i in range(0, len(statuses), 3))
            assert ok, "%s %s (range %s): answers %r" % (ident + (statuses,))
    p.stop()
    m.stop()


def test_always_503(tmp):
    """A store that answers 503 to every object request: put and get fail
    with exit status 1 and one line naming the bucket, the key and 503."""
    endpoint, backend, p, m = s3_cluster(tmp, "always")
    cli = mp.Cli(tmp, p, m, options=backend.options)
    local = os.path.join(tmp, "f")
    with open(local, "wb") as f:
        f.write(b"x" * 100000)
    cli.run("put", local, "/ok")  # straight to the store
    key = check_layout(cli.json("stat", "/ok")["nodes"][0], 100000, backend)
    with S3Proxy(endpoint, always=True) as proxy:
        opt = ["buckets.origin.endpoint=" + proxy.endpoint]
        line = one_line(cli.run("put", local, "/bad", expect=1, options=opt),
                        "mp-test/always/mp/", "503")
        puts = proxy.object_requests("PUT")
        assert len(puts) == 1 and len(list(puts.values())[0]) == 4, \
            "expected one PUT tried 4 times: %r" % puts
        (_, path, _), = puts
        assert path.split("/")[-1] in line, "the error does not name the key: %r" % line
        one_line(cli.run("stat", "/bad", expect=1), "no such")
        out = os.path.join(tmp, "out")
        one_line(cli.run("get", "/ok", out, expect=1, options=opt), key, "503")
        assert not os.path.exists(out) and [n for n in os.listdir(tmp)
                                             if n.startswith(".out")] == []
        one_line(cli.run("cat", "/ok", expect=1, options=opt), key, "503")
        # A multipart upload whose parts always fail.
        big = os.path.join(tmp, "big")
        with open(big, "wb") as f:
            f.write(b"y" * (9 * MiB))
        one_line(cli.run("put", big, "/bad-big", expect=1, options=opt), "mp-test", "503")
        one_line(cli.run("stat", "/bad-big", expect=1), "no such")
    assert cli.run("cat", "/ok").out == b"x" * 100000
    p.stop()
    m.stop()


def test_s3_failures(tmp):
    """Wrong credentials, an endpoint nobody listens on, an unknown alias, a
    bucket that does not exist: exit status 1, one line naming it."""
    endpoint, backend, p, m = s3_cluster(tmp, "fail")
    cli = mp.Cli(tmp, p, m, options=backend.options)
    local = os.path.join(tmp, "f")
    with open(local, "wb") as f:
        f.write(b"z" * 1000)
    cli.run("put", local, "/ok")
    key = check_layout(cli.json("stat", "/ok")["nodes"][0], 1000, backend)

    # s3rver refuses access keys it does not know (it does not check
    # SigV4 signatures, so a wrong secret alone would pass).
    wrong = ["buckets.origin.access_key=WRONG", "buckets.origin.secret_key=WRONG"]
    one_line(cli.run("put", local, "/x", expect=1, options=wrong), "mp-test/fail/mp/", "403",
             "InvalidAccessKeyId")
    one_line(cli.run("cat", "/ok", expect=1, options=wrong), key, "403")
    one_line(cli.run("get", "/ok", os.path.join(tmp, "o"), expect=1, options=wrong), key, "403")
    # An endpoint where nothing listens.
    closed = ["buckets.origin.endpoint=http://127.0.0.1:%d" % mp.free_port()]
    one_line(cli.run("put", local, "/x", expect=1, options=closed), "mp-test/fail/mp/",
             "connect")
    one_line(cli.run("cat", "/ok", expect=1, options=closed), key, "connect")
    one_line(cli.run("stat", "/x", expect=1), "no such")
    # Imports: an unknown alias, a bucket that does not exist.
    one_line(cli.run("import", "nosuch/p", "/imp", expect=1), "nosuch")
    r = cli.run("import", "gone/p", "/imp", expect=1,
                options=["buckets.gone.url=s3://no-such-bucket",
                         "buckets.gone.endpoint=" + endpoint] +
                ["buckets.gone." + c for c in CREDS])
    one_line(r, "no-such-bucket")
    r = cli.run("import", "gone/p", "/imp", expect=1,
                options=["buckets.gone.url=s3://ext-data",
                         "buckets.gone.endpoint=http://127.0.0.1:%d" % mp.free_port()] +
                ["buckets.gone." + c for c in CREDS])
    one_line(r, "ext-data", "connect")
    assert cli.run("cat", "/ok").out == b"z" * 1000
    p.stop()
    m.stop()


if __name__ == "__main__":
    mp.main(globals())
