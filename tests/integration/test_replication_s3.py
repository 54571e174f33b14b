#!/usr/bin/python3
"""Replication against object storage: the origin is s3://mp-test on the
s3rver that tests/lib/s3server.py run started; a second s3rver started here
holds each site's bucket (site-a, site-b) and a bucket of external objects
(ext-data) imported under the alias "ext". Two sites replicate native files
of 1 B, 5 MiB and 101 MiB (multipart) and imported objects (an empty one
too) into their own bucket, with their own credentials, and every copy
hashes like its source. Without node and npm the test is skipped (77)."""

import hashlib
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from test_cli_s3 import make_bucket, put_objects, s3_endpoint, s3_request  # noqa: E402
from test_replication import (FAST, MiB, layout_of, policy, policy_file,  # noqa: E402
                              replicas_at, rule, wait_replicated)

import s3server  # noqa: E402 (tests/lib, put on the path by mp)


def site_yaml(tmp, name, origin_endpoint, site_endpoint):
    path = os.path.join(tmp, name + ".yaml")
    with open(path, "w") as f:
        f.write("buckets:\n"
                "  origin:\n"
                "    endpoint: %s\n"
                "    access_key: S3RVER\n"
                "    secret_key: S3RVER\n"
                "  ext:\n"
                "    url: s3://ext-data\n"
                "    endpoint: %s\n"
                "    access_key: S3RVER\n"
                "    secret_key: S3RVER\n"
                "  site-copy:\n"
                "    url: s3://site-%s\n"
                "    endpoint: %s\n"
                "    access_key: S3RVER\n"
                "    secret_key: S3RVER\n" % (origin_endpoint, site_endpoint, name,
                                             site_endpoint))
    return path


def get_object(endpoint, bucket, key):
    status, _, body = s3_request(endpoint, "GET", "/%s/%s" % (bucket, key))
    return status, body


def test_two_sites_s3(tmp):
    origin = s3_endpoint()  # mp.Skip without s3rver
    make_bucket(origin, "mp-test")
    srv = s3server.S3Server(buckets=["site-a", "site-b", "ext-data"],
                            directory=os.path.join(tmp, "s3-sites"), log=sys.stdout)
    srv.start()
    try:
        run(tmp, origin, srv.endpoint)
    finally:
        srv.stop(remove=False)


def run(tmp, origin, sites_endpoint):
    rng = random.Random(3)
    external = {"ds/empty": b"", "ds/small.bin": rng.randbytes(70000)}
    put_objects(sites_endpoint, "ext-data", external)
    p = mp.Primary(tmp, config={"origin": "s3://mp-test/repl"})
    mirrors = {}
    for name in ("a", "b"):
        cfg = dict(FAST)
        cfg["replication"] = {"site_config": site_yaml(tmp, name, origin, sites_endpoint),
                              "sweep_interval": "500ms"}
        mirrors[name] = mp.Mirror(tmp, p, site=name, name="mirror-" + name, config=cfg)
    yaml_a = os.path.join(tmp, "a.yaml")
    cli = mp.Cli(tmp, p, mirrors["a"])
    content = {}
    for path, size, seed in (("/data/one", 1, 1), ("/data/five", 5 * MiB, 2),
                             ("/data/big", 101 * MiB, 3)):
        local = os.path.join(tmp, path.replace("/", "_"))
        r = random.Random(seed)
        data = r.randbytes(size)
        with open(local, "wb") as f:
            f.write(data)
        content[path] = data
        cli.run("-c", yaml_a, "put", local, path, timeout=600)
    st = cli.json("-c", yaml_a, "import", "ext/ds", "/data/imp")
    assert st["created"] == 2, st
    content["/data/imp/empty"] = b""
    content["/data/imp/small.bin"] = external["ds/small.bin"]
    cli.run("policy", "apply", policy_file(tmp, policy(rule(sites="[a, b]", verify="sha256",
                                                            concurrency=4))))
    objects = sum(1 for path in content if layout_of(cli, path))
    for m in mirrors.values():
        wait_replicated(m, "data", objects, timeout=600)
    for name, m in mirrors.items():
        for path, want in content.items():
            node = cli.json("stat", path)["nodes"][0]
            got = b""
            for e in node.get("extents", []):
                status, body = get_object(sites_endpoint, "site-" + name,
                                          "%s/%s" % (e["bucket"], e["key"]))
                assert status == 200, (name, path, status)
                got += body[e["offset"]:e["offset"] + e["length"]]
            assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest(), \
                (name, path, len(got), len(want))
            n = len(node.get("extents", []))
            if n:
                assert replicas_at(m, path) == ["site-copy"] * n, (name, path)
    # A site reads its own copies.
    got = cli.run("-c", yaml_a, "cat", "/data/imp/small.bin").out
    assert got == content["/data/imp/small.bin"]
    for m in mirrors.values():
        m.stop()
    p.stop()


if __name__ == "__main__":
    mp.main(globals())
