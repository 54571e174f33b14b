#!/usr/bin/python3
"""Cache groups with a cluster secret, and hedged reads.

- Grants: with a secret, mirrors sign a read grant per extent and a cache
  node refuses a block read without a valid one (missing, forged, for
  another object, expired); a token limited to /team cannot read blocks of
  /other from a node, neither directly nor through a file whose layout it
  wrote to name them (the primary refuses that layout); the owner of the
  file reads it through the cache (hits counted).
- Hedging: a frozen (SIGSTOPped) cache node costs a reader about the hedge
  delay, not the timeout, and reads stay correct; likewise a frozen mirror
  for a fresh `mp stat`."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from test_cache import MIRROR_CONFIG, Cache  # noqa: E402
from test_cli import MiB, sha  # noqa: E402

BLOCK_READ = 40


def secured(tmp):
    secret = os.path.join(tmp, "secret")
    with open(secret, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(secret, 0o600)
    p = mp.Primary(tmp, config={"secret_file": secret})

    def token(*args):
        rc, out, err = mp.run_primary(["token", "create"] + list(args) + ["-c", p.config_path])
        assert rc == 0, err
        return out.strip()

    site_tok = token("--site", "a")
    tokfile = os.path.join(tmp, "site.tok")
    with open(tokfile, "w") as f:
        f.write(site_tok)
    m = mp.Mirror(tmp, p, site="a", config=dict(MIRROR_CONFIG, secret_file=secret,
                                                token_file=tokfile))
    c = Cache(tmp, m, p, options=["token=" + site_tok, "cache.secret_file=" + secret])
    return p, m, c, token


def test_grants(tmp):
    p, m, c, token = secured(tmp)
    admin, team, other = (token("--client", "admin", "--read-write"),
                          token("--client", "team", "--subtree", "/team", "--read-write"),
                          token("--client", "other", "--subtree", "/other", "--read-write"))
    cli = {name: mp.Cli(tmp, p, m, options=["token=" + t], session=os.path.join(tmp, name))
           for name, t in (("admin", admin), ("team", team), ("other", other))}
    cli["admin"].run("mkdir", "/team", "/other")
    data = os.urandom(9 * MiB)
    src = os.path.join(tmp, "src")
    with open(src, "wb") as f:
        f.write(data)
    cli["other"].run("put", src, "/other/secret.bin")
    ext = cli["other"].json("stat", "/other/secret.bin")["nodes"][0]["extents"][0]
    assert ext["key"].startswith("u/other/"), ext

    # The owner reads through the cache: the second read is all hits.
    before = c.metric("mp_cache_hits_total")
    for _ in range(2):
        assert sha(cli["other"].run("cat", "/other/secret.bin").out) == sha(data)
    assert c.metric("mp_cache_hits_total") - before >= 3, c.metrics()
    assert c.metric("mp_cache_denied_total") == 0

    # The team token cannot name the object in a layout of its own.
    cl = mp.Client(p.port)
    cl.hello(token=team)
    cl.error("EACCES", mp.CREATE, {"path": "/team/steal", "size": len(data),
                                   "layout": [[ext["bucket"], ext["key"], ext["etag"], 0,
                                               len(data)]]},
             contains=["u/team/"])
    assert cli["team"].run("cat", "/other/secret.bin", expect=1).rc == 1

    # Nor read its blocks from the node: no grant, a forged one, one for
    # another object, an expired one.
    k = mp.Client(c.port, role="cache")
    k.hello(token=team)
    body = {"bucket": ext["bucket"], "key": ext["key"], "etag": ext["etag"],
            "size": len(data), "offset": 0, "length": 4096}
    k.error("EACCES", BLOCK_READ, body, contains="grant")
    forged = "%016x." % (int(time.time()) + 600) + "ab" * 16
    k.error("EACCES", BLOCK_READ, dict(body, grant=forged), contains="forged")
    # A real grant, for the team's own file, does not open another object.
    cli["team"].run("put", src, "/team/mine.bin")
    reader = mp.Client(m.port, role="mirror")
    reader.hello(token=team)
    mine = reader.req(mp.RESOLVE, {"path": "/team/mine.bin"})
    assert len(mine.get("grants", [])) == 1, mine
    k.error("EACCES", BLOCK_READ, dict(body, grant=mine["grants"][0]), contains="another")
    mext = mine["node"][10]
    # ...and opens the team's own object.
    lay = mp.decode_payload(mext)[0]
    own = {"bucket": lay[0], "key": lay[1], "etag": lay[2], "size": len(data), "offset": 0,
           "length": 4096, "grant": mine["grants"][0]}
    t, b = k.call(BLOCK_READ, own)
    assert t == mp.REPLY and b["data"] == data[:4096], (t, b if t != mp.REPLY else "")
    expired = "%016x." % (int(time.time()) - 10) + mine["grants"][0][17:]
    k.error("EACCES", BLOCK_READ, dict(own, grant=expired))
    assert c.metric("mp_cache_denied_total") >= 4, c.metrics()
    # The node went on serving.
    assert sha(cli["other"].run("cat", "/other/secret.bin").out) == sha(data)


def test_frozen_node_costs_the_hedge_delay(tmp):
    p = mp.Primary(tmp)
    m = mp.Mirror(tmp, p, config=MIRROR_CONFIG)
    nodes = [Cache(tmp, m, p, name="c%d" % i) for i in range(3)]
    cli = mp.Cli(tmp, p, m, options=["cache.hedge_delay=300ms"])
    data = os.urandom(24 * MiB)
    src = os.path.join(tmp, "src")
    with open(src, "wb") as f:
        f.write(data)
    cli.run("put", src, "/f.bin")
    for _ in range(2):  # warm: every block at its owner
        assert sha(cli.run("cat", "/f.bin").out) == sha(data)
    # Freeze the node holding most blocks; each new process must not pay
    # the 2 s timeout per block, only about the hedge delay, once or twice.
    victim = max(nodes, key=lambda n: n.metric("mp_cache_blocks"))
    assert victim.metric("mp_cache_blocks") > 0
    os.kill(victim.proc.pid, signal.SIGSTOP)
    try:
        times = []
        for _ in range(3):
            t0 = time.time()
            assert sha(cli.run("cat", "/f.bin").out) == sha(data)
            times.append(time.time() - t0)
        print("mp cat with a frozen node: %s s" % ", ".join("%.2f" % t for t in times))
        # Two hedges (then the node is marked down) and the reads: far
        # under one 2 s timeout per block.
        assert max(times) < 1.8, times
        # A frozen mirror: a fresh mp stat pays the hedge, not the timeout.
        os.kill(m.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.time()
            cli.run("stat", "/f.bin")
            took = time.time() - t0
            print("mp stat with a frozen mirror: %.3f s" % took)
            assert took < 1.0, took
        finally:
            os.kill(m.proc.pid, signal.SIGCONT)
    finally:
        os.kill(victim.proc.pid, signal.SIGCONT)


if __name__ == "__main__":
    mp.main(globals())
