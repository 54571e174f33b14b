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
* a `list:` pipeline: its paths from a file in the namespace, read
  through the cache group, put in force again when the file changes;
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


LIST_PIPELINE = """version: 1
warmup:
  - name: listed
    list: /lists/warm.txt
    sites: [a]
    trigger: on-change
"""


def test_list_pipeline(tmp):
    """A pipeline whose paths come from a file in the namespace: the site
    reads the list through its cache group and warms what it names (and
    only that); a file added under a listed path is warmed on change; a
    new list is put in force and warmed; a list with a bad line is refused
    with the line's number and the paths in force stay."""
    p, m, caches, cli = warm_site(tmp, 2)
    for d, n in (("a", 3), ("b", 2)):
        for i in range(n):
            put_random(tmp, cli, "/ds/%s/f%d" % (d, i), 1 * MiB + i, seed=40 + i)
    put_random(tmp, cli, "/ds/c/one", 4 * MiB + 9, seed=50)
    lst = os.path.join(tmp, "warm.txt")
    with open(lst, "w") as f:
        f.write("# what site a serves\n/ds/a/**\n\n  /ds/c/one  \n/ds/a/**\n")
    cli.run("mkdir", "-p", "/lists")
    cli.run("put", lst, "/lists/warm.txt")
    cli.run("policy", "apply", policy_file(tmp, LIST_PIPELINE))
    m.wait_log("warmup listed: list /lists/warm.txt in force: 3 paths", timeout=30)
    cli.run("warmup", "wait", "/ds/a", "/ds/c", "--timeout", "60s")
    assert check(cli, "/ds/b")["blocks_cached"] == 0, "warmed what the list does not name"
    # on-change: a new file under a listed path; one elsewhere stays cold.
    put_random(tmp, cli, "/ds/a/new", 2 * MiB, seed=60)
    put_random(tmp, cli, "/ds/b/new", 2 * MiB, seed=61)
    cli.run("warmup", "wait", "/ds/a/new", "--timeout", "60s")
    assert check(cli, "/ds/b")["blocks_cached"] == 0
    # A new list: its paths are warmed.
    with open(lst, "w") as f:
        f.write("/ds/b/*\n")
    cli.run("put", lst, "/lists/warm.txt")
    m.wait_log("warmup listed: list /lists/warm.txt in force: 1 paths", timeout=30)
    cli.run("warmup", "wait", "/ds/b", "--timeout", "60s")
    # A wrong list: refused with its line; /ds/b/* stays in force.
    with open(lst, "w") as f:
        f.write("/ds/b/*\n# fine\nrelative/path\n")
    cli.run("put", lst, "/lists/warm.txt")
    m.wait_log("warmup listed: list /lists/warm.txt:3: 'relative/path' is not an absolute path",
               timeout=30)
    put_random(tmp, cli, "/ds/b/later", 1 * MiB, seed=62)
    cli.run("warmup", "wait", "/ds/b/later", "--timeout", "60s")
    st = runs(cli, "listed")
    assert st and all(x["state"] == "done" for x in st), st
    assert {x["trigger"] for x in st} >= {"list", "on-change"}, st
    stop_all(caches, m, p)


def test_symlink_switch(tmp):
    """A pipeline on /serve/current/** where "current" is a link switched to
    each release: switching it warms the new release at once, and with
    evict_previous the old release's blocks go; `mp warmup wait` on the
    link waits for what it points at."""
    p, m, caches, cli = warm_site(tmp, 2)
    cli.run("policy", "apply", policy_file(tmp, ON_CHANGE.replace(
        "/models/m/**", "/serve/current/**")))
    r1 = {"/serve/r1/w%d" % i: put_random(tmp, cli, "/serve/r1/w%d" % i, 5 * MiB, seed=20 + i)
          for i in range(2)}
    cli.run("ln", "-s", "r1", "/serve/current")
    cli.run("warmup", "wait", "/serve/current", "--timeout", "30s")
    old = [b for path in r1 for b in blocks_of(cli, path)]
    mp.wait_until(lambda: held(caches) == len(old), timeout=30, what="r1 warm")
    r2 = {"/serve/r2/w%d" % i: put_random(tmp, cli, "/serve/r2/w%d" % i, 5 * MiB, seed=30 + i)
          for i in range(2)}
    assert check(cli, "/serve/current")["blocks_cached"] == len(old)
    cli.run("rm", "/serve/current")
    cli.run("ln", "-s", "/serve/r2", "/serve/current")
    cli.run("warmup", "wait", "/serve/current", "--timeout", "30s")
    new = [b for path in r2 for b in blocks_of(cli, path)]
    mp.wait_until(lambda: held(caches) == len(new), timeout=30,
                  what="only r2's blocks in the group (%d)" % held(caches))
    c0 = Counters(caches)
    for path, want in sorted(r2.items()):
        cat_ok(cli, path, want, 5 * MiB)  # (mp cat does not follow links inside paths)
    d = Counters(caches) - c0
    assert d["misses"] == 0 and d["hits"] == len(new), d
    assert check(cli, "/serve/r1")["blocks_cached"] == 0
    stop_all(caches, m, p)


def test_schedule_fires(tmp):
    """A per-minute schedule fires through the cron path with the mirror's
    clock shortened 60 times (warmup.clock_scale): a run per firing warms
    the files under the paths; a run still going is not doubled."""
    p, m, caches, cli = warm_site(tmp, 2, mirror_config={"warmup": {"clock_scale": 60}})
    want = put_random(tmp, cli, "/sched/a.bin", 6 * MiB, seed=3)
    cli.run("policy", "apply", policy_file(tmp, """version: 1
warmup:
  - name: every-minute
    paths: ["/sched/**"]
    sites: [a]
    trigger: schedule
    schedule: "* * * * *"
  - name: at-apply
    paths: ["/sched/**"]
    sites: ["*"]
    trigger: once
"""))
    m.wait_log("warmup every-minute: schedule '* * * * *' fires", timeout=30)
    mp.wait_until(lambda: any(x["state"] == "done" for x in runs(cli, "every-minute")),
                  timeout=30, what="a scheduled run done")
    st = runs(cli, "every-minute")
    assert all(x["trigger"] == "schedule" for x in st), st
    cli.run("warmup", "wait", "/sched", "--timeout", "10s")
    c0 = Counters(caches)
    cat_ok(cli, "/sched/a.bin", want, 6 * MiB)
    d = Counters(caches) - c0
    assert d["misses"] == 0 and d["hits"] == 2, d
    # It keeps firing: a minute of schedule is a second here.
    n = len(st)
    mp.wait_until(lambda: len(runs(cli, "every-minute")) >= n + 2, timeout=30,
                  what="two more scheduled runs")
    r = cli.run("warmup", "status")
    assert "every-minute" in r.text and "schedule" in r.text, r
    # once: one run when the policy came, none again after a restart.
    once = runs(cli, "at-apply")
    assert len(once) == 1 and once[0]["trigger"] == "once" and once[0]["state"] == "done", once
    m.restart()
    time.sleep(1.5)
    assert [x["run"] for x in runs(cli, "at-apply")] == [once[0]["run"]], runs(cli, "at-apply")
    stop_all(caches, m, p)


SLOW = ["cache.fetch_rate=4MiB", "cache.fetch_concurrency=2"]


def test_kill_node_mid_run(tmp):
    """kill -9 one of three nodes while a run is filling: the run completes
    on the other two (the dead node's share moves to the next owners) and
    every block is cached where readers look."""
    p, m, caches, cli = warm_site(tmp, 3, cache_options=SLOW)
    size = 64 * MiB
    want = put_random(tmp, cli, "/big.bin", size, seed=5)
    run = cli.json("warmup", "--background", "/big.bin")
    assert run["state"] in ("queued", "running"), run
    seen = []
    mp.wait_until(lambda: seen.append(runs(cli)[0]) or seen[-1]["blocks_done"] >= 2,
                  timeout=30, what="the run under way")
    caches[0].kill9()
    assert seen[-1]["state"] == "running" and seen[-1]["blocks_done"] < 16, seen[-1]
    mp.wait_until(lambda: runs(cli)[0]["state"] in ("done", "failed"), timeout=90,
                  what="the run over")
    st = runs(cli)[0]
    assert st["state"] == "done" and st["blocks_done"] == 16 and st["files_done"] == 1, st
    r = cli.run("warmup", "wait", "/big.bin", "--timeout", "20s")
    assert "every block" in r.text, r
    live = caches[1:]
    assert held(live) >= 16 - 0, [c.status()["blocks"] for c in live]
    c0 = Counters(live)
    cat_ok(cli, "/big.bin", want, size)
    d = Counters(live) - c0
    assert d["misses"] == 0 and d["bucket"] == 0, d
    stop_all(live, m, p)


def test_restart_mirror_mid_run(tmp):
    """kill -9 the mirror while a run is filling, then SIGTERM it while the
    run goes on: after each start the run resumes from warmup.db, and it
    completes with no block fetched twice (the nodes' bucket bytes add up
    to the file once)."""
    p, m, caches, cli = warm_site(tmp, 2, cache_options=SLOW)
    size = 64 * MiB
    put_random(tmp, cli, "/big.bin", size, seed=6)
    run = cli.json("warmup", "--background", "/big.bin")
    seen = []
    mp.wait_until(lambda: seen.append(runs(cli)[0]) or seen[-1]["blocks_done"] >= 4,
                  timeout=30, what="the run under way")
    m.kill9()
    assert seen[-1]["state"] == "running" and seen[-1]["blocks_done"] < 16, seen[-1]
    m.start()
    m.wait_log("warmup adhoc: run %d at version" % run["run"], timeout=30)
    assert "resumes" in m.log_since_start(), m.log_since_start()[-2000:]
    # SIGTERM while it runs again: the mirror exits at once (the batches in
    # flight are not waited for) and the next start resumes once more.
    t0 = time.monotonic()
    m.stop()
    assert time.monotonic() - t0 < 10, "the mirror took %.1f s to stop" % (time.monotonic() - t0)
    m.start()
    mp.wait_until(lambda: runs(cli)[0]["state"] in ("done", "failed"), timeout=90,
                  what="the resumed run over")
    st = runs(cli)[0]
    assert st["run"] == run["run"] and st["state"] == "done", st
    cli.run("warmup", "wait", "/big.bin", "--timeout", "20s")
    c = Counters(caches)
    fetched = sum(x["bucket"] for x in c.per)
    assert fetched == size and sum(x["fills"] for x in c.per) == 16, \
        "blocks fetched again after the restart: %r" % c.per
    stop_all(caches, m, p)


def test_deadline_and_invalid_pipeline(tmp):
    """A run that cannot be warm by its deadline is failed, with the number
    of blocks missing; an invalid pipeline is refused with FILE:LINE:COL and
    the policy in force does not change."""
    p, m, caches, cli = warm_site(tmp, 1, cache_options=["cache.fetch_rate=4MiB",
                                                         "cache.fetch_concurrency=1"])
    put_random(tmp, cli, "/slow/x.bin", 40 * MiB, seed=7)
    good = policy_file(tmp, """version: 1
warmup:
  - name: hurry
    paths: ["/slow/**"]
    sites: ["*"]
    trigger: on-change
    deadline: 2s
""")
    cli.run("policy", "apply", good)
    r = cli.run("warmup", "run", "hurry", expect=1)
    assert "failed" in r.err and "deadline passed" in r.err and "blocks missing" in r.err, r
    st = runs(cli, "hurry")[0]
    assert st["state"] == "failed" and st["blocks_done"] < st["blocks"], st
    assert m.metrics().get('mp_mirror_warmup_state{pipeline="hurry"}') == 3
    before = cli.json("policy", "show")
    bad = policy_file(tmp, """version: 1
warmup:
  - name: broken
    paths: ["/slow/**"]
    sites: ["*"]
    trigger: sometimes
""", name="bad.yaml")
    r = cli.run("policy", "apply", bad, expect=1)
    assert "bad.yaml:6:" in r.err and "trigger" in r.err, r
    assert cli.json("policy", "show") == before
    r = cli.run("warmup", "run", "broken", expect=1)
    assert "no warmup pipeline 'broken'" in r.err, r
    stop_all(caches, m, p)


CACHE_WARM, CACHE_EVICT, CACHE_HAS = 43, 44, 45
WARMUP_START, WARMUP_STATUS = 50, 51


def test_malformed_warm_frames(tmp):
    """CACHE_WARM/HAS/EVICT and WARMUP_START with bad bodies: an ERROR
    naming what was wrong, and the node and the mirror serve on."""
    p, m, caches, cli = warm_site(tmp, 1)
    put_random(tmp, cli, "/x.bin", 5 * MiB, seed=9)
    e = blocks_of(cli, "/x.bin")[0]

    def blk(**kw):
        b = {"bucket": e[0], "key": e[1], "etag": e[2], "size": 5 * MiB, "offset": 0,
             "length": BLOCK}
        b.update(kw)
        return b
    with caches[0].client() as c:
        c.error("EINVAL", CACHE_WARM, {}, contains="blocks")
        c.error("EINVAL", CACHE_WARM, {"blocks": "x"}, contains="blocks")
        c.error("EINVAL", CACHE_HAS, {"blocks": [blk(length=100)]}, contains="whole block")
        c.error("EINVAL", CACHE_EVICT, {"blocks": [blk(offset=7, length=BLOCK - 7)]},
                contains="blocks[0]")
        c.error("EINVAL", CACHE_WARM, {"blocks": [blk(bucket="no/slash")]}, contains="bucket")
        c.error("E2BIG", CACHE_WARM, {"blocks": [blk()] * 257}, contains="at most 256")
        assert c.req(CACHE_HAS, {"blocks": [blk()]})["results"] == [-2]
        assert c.req(CACHE_WARM, {"blocks": [blk()]})["results"] == [1]
        assert c.req(CACHE_WARM, {"blocks": [blk()]})["results"] == [0]
        assert c.req(CACHE_HAS, {"blocks": [blk()]})["results"] == [0]
        assert c.req(CACHE_EVICT, {"blocks": [blk()]})["results"] == [0]
        assert c.req(CACHE_HAS, {"blocks": [blk()]})["results"] == [-2]
    assert caches[0].metric("mp_cache_warm_blocks_total", result="filled") == 1
    assert caches[0].metric("mp_cache_warm_evicted_blocks_total") == 1
    with mp.Client(m.port, role="mirror", hello=True) as c:
        c.error("EINVAL", WARMUP_START, {}, contains="paths")
        c.error("EINVAL", WARMUP_START, {"paths": ["relative"]}, contains="paths[0]")
        c.error("EINVAL", WARMUP_START, {"paths": ["/x.bin"], "pipeline": "p"})
        c.error("EINVAL", WARMUP_START, {"paths": ["/a/**.bin"]}, contains="paths[0]")
        c.error("ENOENT", WARMUP_START, {"pipeline": "nosuch"}, contains="nosuch")
        c.error("EINVAL", WARMUP_STATUS, {"run": "one"}, contains="run")
        assert c.req(WARMUP_STATUS, {})["runs"] == []
    assert caches[0].running() and m.running()
    cli.run("warmup", "/x.bin")
    stop_all(caches, m, p)


if __name__ == "__main__":
    mp.main(globals())
