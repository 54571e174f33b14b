#!/usr/bin/python3
"""Cache groups and object storage: a primary whose origin is s3://mp-test
on the s3rver that tests/lib/s3server.py run started (MP_TEST_S3_ENDPOINT),
and a second s3rver, started here, holding a bucket "ext-data" that is
imported under an alias with its own endpoint and credentials. Two sites
(two mirrors, one mp-cache node each) share one site configuration file
(-c) with the mp CLI. Both sites read native and imported files through
their own node, which fetches from the buckets itself; after an external
object changes and is re-imported, both read the new bytes and never the
old block, which is still on their disks.

Without node and npm every test is skipped (exit 77)."""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from test_cache import (BLOCK, HRW, MIRROR_CONFIG, NO_HEDGE, Cache, Counters,  # noqa: E402
                        block_files, blocks_of, stop_all, wait_members)
from test_cli import MiB  # noqa: E402
from test_cli_s3 import make_bucket, put_objects, s3_endpoint  # noqa: E402

import s3server  # noqa: E402 (tests/lib, put on the path by mp)


def site_yaml(path, origin_endpoint, ext_endpoint):
    """The site configuration both the CLI and the nodes read. s3rver
    checks only the access key, so the alias's own secret is accepted."""
    with open(path, "w") as f:
        f.write("# one file for mp and mp-cache\n"
                "cache:\n"
                "  warming_period: 0s\n"
                "  fetch_concurrency: 4\n"
                "buckets:\n"
                "  origin:\n"
                "    endpoint: %s\n"
                "    access_key: S3RVER\n"
                "    secret_key: S3RVER\n"
                "  ext:\n"
                "    url: s3://ext-data\n"
                "    endpoint: %s\n"
                "    access_key: S3RVER\n"
                "    secret_key: ext-only-secret\n" % (origin_endpoint, ext_endpoint))
    return path


def test_imported_objects_two_sites(tmp):
    endpoint = s3_endpoint()  # mp.Skip without s3rver
    make_bucket(endpoint, "mp-test")
    ext = s3server.S3Server(buckets=["ext-data"], directory=os.path.join(tmp, "s3-ext"),
                            log=sys.stdout)
    ext.start()
    try:
        run_two_sites(tmp, endpoint, ext.endpoint)
    finally:
        ext.stop(remove=False)


def run_two_sites(tmp, origin_endpoint, ext_endpoint):
    rng = random.Random(11)
    old = {"ds/a.bin": rng.randbytes(9 * MiB), "ds/b.bin": rng.randbytes(1 * MiB),
           "ds/c.txt": rng.randbytes(100000)}
    new = {"ds/a.bin": rng.randbytes(9 * MiB), "ds/b.bin": rng.randbytes(1 * MiB)}
    put_objects(ext_endpoint, "ext-data", old)
    yaml = site_yaml(os.path.join(tmp, "site.yaml"), origin_endpoint, ext_endpoint)

    p = mp.Primary(tmp, config={"origin": "s3://mp-test/cache-s3"})
    ma = mp.Mirror(tmp, p, name="mirror-a", site="a", config=MIRROR_CONFIG)
    mb = mp.Mirror(tmp, p, name="mirror-b", site="b", config=MIRROR_CONFIG)
    ca = Cache(tmp, ma, p, name="cache-a", config_file=yaml, warming=None)
    cb = Cache(tmp, mb, p, name="cache-b", config_file=yaml, warming=None)
    wait_members(ma, [ca])
    wait_members(mb, [cb])
    assert ca.status()["state"] == "active", "cache.warming_period from -c was not applied"
    # One session file: what site a wrote, site b reads.
    sites = [("a", mp.Cli(tmp, p, ma, options=NO_HEDGE), ca),
             ("b", mp.Cli(tmp, p, mb, options=NO_HEDGE), cb)]
    cli = sites[0][1]

    def run(c, *args, **kw):
        return c.run("-c", yaml, *args, **kw)

    native = rng.randbytes(6 * MiB + 5)
    with open(os.path.join(tmp, "native"), "wb") as f:
        f.write(native)
    run(cli, "put", os.path.join(tmp, "native"), "/native.bin")
    st = cli.json("-c", yaml, "import", "ext/ds", "/imp")
    assert (st["created"], st["updated"]) == (3, 0), st
    files = {"/native.bin": native, "/imp/a.bin": old["ds/a.bin"], "/imp/b.bin": old["ds/b.bin"],
             "/imp/c.txt": old["ds/c.txt"]}
    for path in files:
        for b in blocks_of(cli, path):
            assert b[0] == ("origin" if path == "/native.bin" else "ext"), (path, b)
    nblocks = sum(len(blocks_of(cli, x)) for x in files)
    total = sum(len(v) for v in files.values())
    assert nblocks == 2 + 3 + 1 + 1, nblocks

    def read_all(files, tag):
        for _, c, node in sites:
            for path, want in files.items():
                got = run(c, "cat", path).out
                assert got == want, "%s at site %s (%s): %d bytes, not the %d expected" % (
                    path, node.site, tag, len(got), len(want))

    # First reads: each site's node fills from the buckets itself, with the
    # alias's endpoint and credentials.
    for name, c, node in sites:
        before = Counters([ca, cb])
        for path, want in files.items():
            assert run(c, "cat", path).out == want, "%s at site %s" % (path, name)
        d = Counters([ca, cb]) - before
        me = 0 if node is ca else 1
        assert d.node(me, "misses") == nblocks and d.node(me, "bucket") == total, \
            "site %s: %r" % (name, d)
        assert d.node(1 - me, "requests") == 0, "the other site's node was asked: %r" % d
    before = Counters([ca, cb])
    read_all(files, "again")
    d = Counters([ca, cb]) - before
    assert d["hits"] == 2 * nblocks and d["misses"] == 0, "second reads: %r" % d

    # The external objects change (same sizes); until re-imported, the
    # layout names the old ETags. Then the new bytes, never the old block.
    old_etags = {x: blocks_of(cli, x)[0][2] for x in ("/imp/a.bin", "/imp/b.bin")}
    held = [n.status()["blocks"] for n in (ca, cb)]
    put_objects(ext_endpoint, "ext-data", new)
    st = cli.json("-c", yaml, "import", "ext/ds", "/imp")
    assert (st["created"], st["updated"], st["unchanged"]) == (0, 2, 1), st
    for x, e in old_etags.items():
        assert blocks_of(cli, x)[0][2] != e, "%s: the re-import kept the ETag %s" % (x, e)
    changed = dict(files, **{"/imp/a.bin": new["ds/a.bin"], "/imp/b.bin": new["ds/b.bin"]})
    before = Counters([ca, cb])
    read_all(changed, "after the re-import")
    d = Counters([ca, cb]) - before
    moved = 3 + 1
    for i, node in enumerate((ca, cb)):
        assert d.node(i, "misses") == moved and d.node(i, "bucket") == 10 * MiB, \
            "site %s after the re-import: %r" % (node.site, d)
        assert d.node(i, "hits") == nblocks - moved, d
        # The old blocks are still there: the new ETag kept them from being served.
        assert node.status()["blocks"] == held[i] + moved, (node.status(), held[i])
        if HRW.available:
            names = block_files(node)
            for x, e in old_etags.items():
                key = blocks_of(cli, x)[0][1]
                for k in range((len(files[x]) + BLOCK - 1) // BLOCK):
                    assert HRW.file_name_prefix(HRW.block_id("ext", key, e, k)) in names, \
                        "old block %d of %s is not on %s's disk" % (k, x, node.name)
    for _, c, node in sites:
        assert node.metric("mp_cache_errors_total") == 0
    stop_all([ca, cb], ma, mb, p)


if __name__ == "__main__":
    mp.main(globals())
