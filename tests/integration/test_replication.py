#!/usr/bin/python3
"""Policies and replication against real daemons: a policy applied at the
primary reaches every site (a cascaded one too) at one version and an
invalid one changes nothing; each site's mirror copies the files under its
replicate rules to its own bucket (file:// here; test_replication_s3.py
does it against s3rvers), verifies them, resumes after kill -9, holds its
bandwidth, replaces a replica changed behind its back, keeps superseded
replicas for the rule's keep and then deletes them; reads at a site use a
copy only once it is verified and read the origin before."""

import hashlib
import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402

MiB = 1 << 20
POLICY_GET, POLICY_APPLY = 15, 28
FAST = {"reconnect": {"min": "50ms", "max": "300ms"}}


def write_random(path, size, seed):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 4 * MiB)
            f.write(rng.randbytes(n))
            left -= n
    with open(path, "rb") as f:
        return f.read()


def site_config(tmp, name, bucket_dir):
    """A site configuration in the client's form naming the site bucket."""
    os.makedirs(bucket_dir, exist_ok=True)
    path = os.path.join(tmp, name + "-site.yaml")
    with open(path, "w") as f:
        f.write("buckets:\n  site-copy:\n    url: file://%s\n" % bucket_dir)
    return path


def repl_mirror(tmp, upstream, name, bucket_dir, **repl):
    cfg = dict(FAST)
    r = {"site_config": site_config(tmp, name, bucket_dir), "sweep_interval": "500ms"}
    r.update(repl)
    cfg["replication"] = r
    return mp.Mirror(tmp, upstream, site=name, name="mirror-" + name, config=cfg)


def policy_file(tmp, text, name="policy.yaml"):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def rule(name="data", paths='["/data/**"]', sites="[a]", **kw):
    lines = ["  - name: %s" % name, "    paths: %s" % paths, "    sites: %s" % sites,
             "    data: replicate", "    bucket: site-copy"]
    lines += ["    %s: %s" % (k, v) for k, v in kw.items()]
    return "\n".join(lines) + "\n"


def policy(*rules):
    return "version: 1\nreplication:\n" + "".join(rules)


def repl_status(m):
    """{rule: status} from the mirror's /status."""
    st = m.status()["replication"]
    return {r["rule"]: r for r in (st or {}).get("rules", [])}


def wait_replicated(m, rule_name, objects, timeout=120):
    return m.wait_state(
        lambda st: any(r["rule"] == rule_name and r["verified_objects"] >= objects and
                       r["pending_objects"] == 0
                       for r in (st["replication"] or {}).get("rules", [])),
        timeout=timeout, what="%d objects of rule %s verified" % (objects, rule_name))


def layout_of(cli, path):
    node = cli.json("stat", path)["nodes"][0]
    return [(e["bucket"], e["key"], e["etag"]) for e in node.get("extents", [])]


def replica_path(bucket_dir, ext):
    return os.path.join(bucket_dir, ext[0], ext[1])


def replicas_at(m, path):
    c = m.client()
    try:
        return c.read(mp.RESOLVE, {"path": path}).get("replicas")
    finally:
        c.close()


def get_policy(d):
    c = d.client()
    try:
        return c.read(POLICY_GET, {})
    finally:
        c.close()


# ---------------------------------------------------------------- policies

def test_policy_reaches_every_site(tmp):
    """Applied at the primary, the policy is at two sites and at a site
    cascaded behind one of them, at the version the apply returned, with
    the same bytes. An invalid one is refused with FILE:LINE:COL and no
    site sees a new version; plan changes nothing."""
    p = mp.Primary(tmp)
    ma = mp.Mirror(tmp, p, site="a", name="mirror-a", config=FAST)
    mb = mp.Mirror(tmp, p, site="b", name="mirror-b", config=FAST)
    mc = mp.Mirror(tmp, ma, site="c", name="mirror-c", config=FAST)
    cli = mp.Cli(tmp, p, ma)
    good = policy_file(tmp, policy(rule(sites="[a, b, c]"), rule(
        name="models", paths='["/models/**"]', sites='["*"]', keep="1h")))
    r = cli.run("policy", "apply", good)
    v = int(re.search(r"at version (\d+)", r.text).group(1))
    with open(good, "rb") as f:
        doc = f.read()
    for m in (ma, mb, mc):
        m.wait_state(lambda st: st["applied_version"] >= v, what="version %d" % v)
        got = get_policy(m)
        assert got["doc"] == doc, (m.name, got)
        m.wait_log("policy of version %d in force: 2 replication rules" % v)
    ctimes = {get_policy(d)["ctime"] for d in (p, ma, mb, mc)}
    assert len(ctimes) == 1, ctimes
    shown = mp.Cli(tmp, p, mc).json("policy", "show")
    assert shown["policy"]["replication"][1]["name"] == "models", shown
    assert shown["served_by"].startswith("mirror"), shown

    # Invalid: every error with its position, nothing anywhere changes.
    bad = policy_file(tmp, "version: 1\nreplication:\n  - name: x\n    paths: [\"data\"]\n"
                      "    sites: [a]\n    data: replicat\n", name="bad.yaml")
    before = p.status()["version"]
    r = cli.run("policy", "apply", bad, expect=1)
    assert re.search(r"bad\.yaml:4:\d+: .*paths", r.err), r.err
    assert re.search(r"bad\.yaml:6:\d+: .*data", r.err), r.err
    # Names the sites do not have are errors when the sites are given.
    r = cli.run("policy", "apply", "--sites", "a,b", "--buckets", "site-copy", good, expect=1)
    assert re.search(r"policy\.yaml:\d+:\d+: .*'c'", r.err), r.err
    # The primary refuses it too (a client that skips the local check).
    c = p.client()
    e = c.error("EINVAL", POLICY_APPLY, {"file": "bad.yaml", "doc": open(bad, "rb").read()},
                contains=["bad.yaml:6:"])
    assert e["version"] == before, e
    c.close()
    # plan: what would change, and nothing does.
    plan = cli.json("policy", "plan", good)
    assert all(i["change"] == "same" for i in plan["items"]), plan
    assert p.status()["version"] == before
    for m in (ma, mb, mc):
        assert get_policy(m)["doc"] == doc
    # Records are not files: no path, listing or inode reaches them.
    c = ma.client()
    c.error("ENOENT", mp.LOOKUP, {"parent": 0, "name": "policy"})
    names = [e[2] for e in c.readdir(path="/")["entries"]]
    assert "policy" not in names, names
    c.close()
    # Every site reports upstream: the primary sees the whole tree, the
    # hub the site behind it, and mp status shows it.
    mp.wait_until(lambda: {x["site"] for x in p.status()["sites"]} == {"a", "b", "c"},
                  timeout=20, what="the primary hears of sites a, b and c")
    sites = {x["site"]: x for x in p.status()["sites"]}
    assert sites["c"]["upstream"] == "127.0.0.1:%d" % ma.port, sites["c"]
    assert sites["a"]["upstream"] == "127.0.0.1:%d" % p.port, sites["a"]
    assert sites["c"]["version"] >= v and sites["c"]["state"] == "live", sites["c"]
    assert [x["site"] for x in ma.status()["sites"]] == ["c"], ma.status()["sites"]
    st = cli.json("status")
    assert {x["site"] for x in st["sites"]} == {"a", "b", "c"}, st["sites"]
    assert "SITES" in cli.run("status").text
    for d in (mc, mb, ma, p):
        d.stop()


def test_restricted_token_cannot_apply(tmp):
    """A token limited to a subtree may write there but not govern every
    site: POLICY_APPLY is refused with EACCES and nothing changes."""
    secret = os.path.join(tmp, "secret")
    with open(secret, "w") as f:
        f.write("s" * 48)
    os.chmod(secret, 0o600)
    p = mp.Primary(tmp, config={"secret_file": secret})
    rc, out, err = mp.run_primary(["token", "create", "--client", "trainer", "--subtree",
                                   "/data", "--read-write", "--secret-file", secret])
    assert rc == 0, err
    token = out.strip()
    c = p.client(token=token)
    c.error("EACCES", POLICY_APPLY, {"doc": b"version: 1\n"}, contains="policies")
    c.close()
    p.stop()


# ---------------------------------------------------------------- replication

def test_replicate_overwrite_remove_keep(tmp):
    """Files of 1 B, 5 MiB and 20 MiB (a multipart copy) under the rule
    are copied and hash like their sources; a file outside is not. An
    overwrite and a removal leave the old replicas for the rule's keep,
    then they are deleted; the new content is copied."""
    p = mp.Primary(tmp)
    bucket = os.path.join(tmp, "site-a-bucket")
    m = repl_mirror(tmp, p, "a", bucket)
    cli = mp.Cli(tmp, p, m)
    files = {"/data/one": 1, "/data/five": 5 * MiB, "/data/sub/twenty": 20 * MiB,
             "/other/x": MiB}
    content = {}
    for i, (path, size) in enumerate(files.items()):
        local = os.path.join(tmp, "src%d" % i)
        content[path] = write_random(local, size, seed=i)
        cli.run("put", local, path)
    empty = os.path.join(tmp, "empty")
    open(empty, "wb").close()
    cli.run("put", empty, "/data/empty")
    cli.run("policy", "apply", policy_file(tmp, policy(rule(keep="3s", verify="sha256"))))
    wait_replicated(m, "data", 3)
    for path in ("/data/one", "/data/five", "/data/sub/twenty"):
        (ext,) = layout_of(cli, path)
        with open(replica_path(bucket, ext), "rb") as f:
            assert hashlib.sha256(f.read()).digest() == \
                hashlib.sha256(content[path]).digest(), path
        assert replicas_at(m, path) == ["site-copy"], path
    (other,) = layout_of(cli, "/other/x")
    assert not os.path.exists(replica_path(bucket, other))
    assert replicas_at(m, "/other/x") is None

    (old_five,) = layout_of(cli, "/data/five")
    (old_one,) = layout_of(cli, "/data/one")
    local = os.path.join(tmp, "five2")
    new_five = write_random(local, 5 * MiB, seed=99)
    cli.run("put", local, "/data/five")
    cli.run("rm", "/data/one")
    t_over = time.monotonic()  # the replicas are superseded after this
    (ext,) = layout_of(cli, "/data/five")
    # Kept for the rule's keep (3 s) at least ...
    if time.monotonic() - t_over < 2.5:
        assert os.path.exists(replica_path(bucket, old_five))
        assert os.path.exists(replica_path(bucket, old_one))
    m.wait_state(lambda st: (repl_status(m)["data"]["verified_objects"],
                             repl_status(m)["data"]["pending_objects"]) == (2, 0),
                 what="the new content copied, the old superseded")
    with open(replica_path(bucket, ext), "rb") as f:
        assert f.read() == new_five
    # ... then deleted, not before.
    mp.wait_until(lambda: not os.path.exists(replica_path(bucket, old_five)) and
                  not os.path.exists(replica_path(bucket, old_one)), timeout=30,
                  what="superseded replicas deleted after keep")
    assert time.monotonic() - t_over >= 3.0, "deleted before keep"
    # The metric follows the deletion by a moment.
    mp.wait_until(lambda: m.metrics()["mp_mirror_replication_deleted_total"] == 2, timeout=10,
                  what="two deletions counted")
    st = cli.json("policy", "status")
    (r,) = st["rules"]
    assert r["site"] == "a" and r["verified_objects"] == 2 and r["pending_objects"] == 0, st
    assert "data" in cli.run("policy", "status").text
    m.stop()
    p.stop()


def test_site_breaker(tmp):
    """Removing most of what a site replicates does not empty its bucket:
    the site's breaker holds the deletions (status, metric), nothing goes,
    until mp gc --confirm-sites lets them go once."""
    p = mp.Primary(tmp)
    bucket = os.path.join(tmp, "site-bucket")
    m = repl_mirror(tmp, p, "a", bucket)
    cli = mp.Cli(tmp, p, m)
    src = os.path.join(tmp, "tree")
    for i in range(20):
        os.makedirs(os.path.join(src, "old" if i < 15 else "new"), exist_ok=True)
        write_random(os.path.join(src, "old" if i < 15 else "new", "f%02d" % i), 1000,
                     seed=300 + i)
    cli.run("put", "-r", src, "/data/t")
    cli.run("policy", "apply", policy_file(tmp, policy(rule(keep="0s"))))
    wait_replicated(m, "data", 20)
    exts = [layout_of(cli, "/data/t/%s/f%02d" % ("old" if i < 15 else "new", i))[0]
            for i in range(20)]
    # One version removes 15 of the site's 20 replicas.
    cli.run("rm", "-r", "/data/t/old")
    m.wait_state(lambda st: st["replication"]["gc_held"] == 15, timeout=30,
                 what="the breaker holding 15 deletions")
    assert m.metrics()["mp_mirror_replication_gc_held"] == 15
    m.wait_log("nothing is deleted until an operator confirms")
    time.sleep(1.5)
    assert all(os.path.exists(replica_path(bucket, e)) for e in exts), "deleted while held"
    r = cli.run("gc", "--confirm-sites")
    assert "may now delete" in r.text, r.text
    mp.wait_until(lambda: not any(os.path.exists(replica_path(bucket, e)) for e in exts[:15]),
                  timeout=30, what="the held deletions done after the confirmation")
    assert all(os.path.exists(replica_path(bucket, e)) for e in exts[15:])
    m.wait_state(lambda st: st["replication"]["gc_held"] == 0, what="the breaker released")
    m.stop()
    p.stop()


def test_kill9_resumes(tmp):
    """kill -9 of the mirror while it copies: it resumes from its table,
    every object ends verified, and none is copied more than twice (once
    before the kill at most, once after)."""
    p = mp.Primary(tmp)
    bucket = os.path.join(tmp, "site-bucket")
    m = repl_mirror(tmp, p, "a", bucket)
    cli = mp.Cli(tmp, p, m)
    n = 24
    src = os.path.join(tmp, "tree")
    os.makedirs(src)
    for i in range(n):
        write_random(os.path.join(src, "f%02d" % i), MiB, seed=100 + i)
    cli.run("put", "-r", src, "/data/tree")
    cli.run("policy", "apply", policy_file(tmp, policy(
        rule(concurrency=2, bandwidth="3MiB"))))
    m.wait_state(lambda st: 4 <= repl_status(m).get("data", {}).get("verified_objects", 0),
                 what="a few objects copied")
    before = repl_status(m)["data"]["verified_objects"]
    assert before < n, "all copied before the kill: slow the rule down"
    m.kill9()
    m.start()
    wait_replicated(m, "data", n, timeout=120)
    after = m.metrics()
    copied_after = sum(v for k, v in after.items()
                       if k.startswith("mp_mirror_replication_copied_bytes_total"))
    assert copied_after <= (n - before) * MiB, (copied_after, n, before)
    for i in range(n):
        (ext,) = layout_of(cli, "/data/tree/f%02d" % i)
        with open(replica_path(bucket, ext), "rb") as f:
            assert hashlib.md5(f.read()).hexdigest() == ext[2]
    m.stop()
    p.stop()


def test_bandwidth_held(tmp):
    """A rule's bandwidth (2 MiB/s) holds within 10% over 20 s."""
    p = mp.Primary(tmp)
    bucket = os.path.join(tmp, "site-bucket")
    m = repl_mirror(tmp, p, "a", bucket)
    cli = mp.Cli(tmp, p, m)
    src = os.path.join(tmp, "tree")
    os.makedirs(src)
    for i in range(60):
        write_random(os.path.join(src, "f%02d" % i), 1 * MiB, seed=200 + i)
    cli.run("put", "-r", src, "/data/bw")
    cli.run("policy", "apply", policy_file(tmp, policy(rule(concurrency=4, bandwidth="2MiB"))))

    def copied():
        return sum(v for k, v in m.metrics().items()
                   if k.startswith("mp_mirror_replication_copied_bytes_total"))
    mp.wait_until(lambda: copied() >= 2 * MiB, timeout=30, what="copying under way")
    t0, c0 = time.monotonic(), copied()
    time.sleep(20)
    t1, c1 = time.monotonic(), copied()
    rate = (c1 - c0) / (t1 - t0)
    print("bandwidth 2 MiB/s: %.3f MiB/s over %.1f s" % (rate / MiB, t1 - t0))
    assert 0.9 * 2 * MiB <= rate <= 1.1 * 2 * MiB, rate / MiB
    m.stop()
    p.stop()


def test_removed_while_copying_leaves_nothing(tmp):
    """A file removed while its copy is in flight (held to 1 MiB/s): the
    sweep drops its pending row, the copy lands anyway, and the mirror
    deletes it from the site bucket rather than leave an object nothing
    tracks."""
    p = mp.Primary(tmp)
    bucket = os.path.join(tmp, "site-bucket")
    m = repl_mirror(tmp, p, "a", bucket)
    cli = mp.Cli(tmp, p, m)
    src = os.path.join(tmp, "big")
    write_random(src, 6 * MiB, seed=300)
    cli.run("put", src, "/data/big")
    ext = layout_of(cli, "/data/big")[0]
    cli.run("policy", "apply", policy_file(tmp, policy(rule(bandwidth="1MiB"))))
    m.wait_state(lambda st: (st["replication"] or {}).get("in_flight", 0) > 0,
                 timeout=30, what="the copy in flight")
    cli.run("rm", "/data/big")
    m.wait_log("was no longer wanted when its copy finished", timeout=60)
    mp.wait_until(lambda: not os.path.exists(replica_path(bucket, ext)), timeout=30,
                  what="the unwanted copy deleted from the site bucket")
    left = [os.path.join(d, f) for d, _, fs in os.walk(bucket) for f in fs]
    assert not left, "objects left in the site bucket: %r" % left
    m.stop()
    p.stop()


def test_scrub_replaces_changed_replica(tmp):
    """Bytes changed in the site bucket behind the system's back are found
    by the scrub, counted, and the replica is copied again."""
    p = mp.Primary(tmp)
    bucket = os.path.join(tmp, "site-bucket")
    m = repl_mirror(tmp, p, "a", bucket, scrub_interval="1s")
    cli = mp.Cli(tmp, p, m)
    local = os.path.join(tmp, "f")
    data = write_random(local, 3 * MiB, seed=5)
    cli.run("put", local, "/data/f")
    cli.run("policy", "apply", policy_file(tmp, policy(rule())))
    wait_replicated(m, "data", 1)
    (ext,) = layout_of(cli, "/data/f")
    path = replica_path(bucket, ext)
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"tampered")
    mp.wait_until(lambda: m.metrics().get("mp_mirror_replication_scrub_mismatches_total", 0) >= 1,
                  timeout=30, what="the scrub finds the changed replica")
    mp.wait_until(lambda: open(path, "rb").read() == data, timeout=30,
                  what="the replica copied again")
    wait_replicated(m, "data", 1)
    m.stop()
    p.stop()


def test_reads_before_and_after_replication(tmp):
    """Before its copy is verified a file is read from the origin, without
    an error; after, the site reads its own copy (the origin object can be
    gone and the read still works), and after a restart too."""
    p = mp.Primary(tmp)
    bucket = os.path.join(tmp, "site-bucket")
    m = repl_mirror(tmp, p, "a", bucket)
    site_yaml = os.path.join(tmp, "a-site.yaml")
    cli = mp.Cli(tmp, p, m, options=["consistency=session"])
    local = os.path.join(tmp, "big")
    data = write_random(local, 12 * MiB, seed=7)
    cli.run("put", local, "/data/big")
    cli.run("policy", "apply", policy_file(tmp, policy(rule(bandwidth="2MiB"))))
    # Copying takes about 6 s: read now, from the origin.
    assert replicas_at(m, "/data/big") is None
    out = cli.run("-c", site_yaml, "cat", "/data/big").out
    assert out == data
    wait_replicated(m, "data", 1, timeout=60)
    assert replicas_at(m, "/data/big") == ["site-copy"]
    (ext,) = layout_of(cli, "/data/big")
    origin_obj = os.path.join(p.data_dir, "objects", ext[1])  # the default file:// origin
    assert os.path.exists(origin_obj), origin_obj
    os.rename(origin_obj, origin_obj + ".away")
    try:
        assert cli.run("-c", site_yaml, "cat", "/data/big").out == data
        m.stop()
        m.start()
        assert replicas_at(m, "/data/big") == ["site-copy"]
        assert cli.run("-c", site_yaml, "cat", "/data/big").out == data
        # A client without the site bucket configured falls back to the
        # origin, which is gone: the error names it.
        r = cli.run("cat", "/data/big", expect=1)
        assert "objects" in r.err, r.err
    finally:
        os.rename(origin_obj + ".away", origin_obj)
    m.stop()
    p.stop()


if __name__ == "__main__":
    mp.main(globals())
