#!/usr/bin/python3
"""Helper of bench/run-replication-bench (stdlib + python3-msgpack).

    replication_bench.py gen DIR --large N --large-mib M --small N --small-kib K
        writes DIR/large/fNNNN (N files of M MiB) and DIR/small/dNN/fNNNNN
        (N files of K KiB, 1,000 a directory), random bytes
    replication_bench.py wait ADMIN RULE COUNT [--timeout S]
        polls the mirror's /status (every 0.1 s, 1% of the time waited later, at most 1 s) until RULE has COUNT verified
        objects and none pending; prints seconds waited and the rule's line
    replication_bench.py lag --mp MP --mp-args JSON --mirror PORT --admin ADMIN
                         --rule RULE --rate R --seconds S --mib M --out FILE
        writes R files/s of M MiB for S seconds with `mp put - /lag/fNNNNN`
        (one process a file, started on a fixed schedule); a poller asks the
        mirror RESOLVE of each file being written every 2 ms until its reply
        names a verified replica for every extent. lag = that moment - the
        file's ctime (the primary's clock when it applied the write, just
        before commit and reply), and also - the moment `mp put` returned.
    replication_bench.py table RESULTS.json
        prints the table
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))


def cmd_gen(a):
    big = os.urandom(1 << 20)
    os.makedirs(os.path.join(a.dir, "large"), exist_ok=True)
    for i in range(a.large):
        with open(os.path.join(a.dir, "large", "f%04d" % i), "wb") as f:
            for _ in range(a.large_mib):
                # Distinct bytes per MiB so no two objects are alike.
                f.write(os.urandom(16) + big[16:])
    size = a.small_kib * 1024
    pool = os.urandom(size + 4096)
    for i in range(a.small):
        d = os.path.join(a.dir, "small", "d%02d" % (i // 1000))
        if i % 1000 == 0:
            os.makedirs(d, exist_ok=True)
        off = i % 4096
        with open(os.path.join(d, "f%05d" % i), "wb") as f:
            f.write(os.urandom(16) + pool[off + 16:off + size])
    return 0


def rule_status(admin, rule):
    with urllib.request.urlopen("http://%s/status" % admin, timeout=10) as r:
        st = json.load(r)
    for x in (st.get("replication") or {}).get("rules", []):
        if x.get("rule") == rule:
            return x
    return None


def cmd_wait(a):
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < a.timeout:
        x = rule_status(a.admin, a.rule)
        if x is not None:
            last = x
            if x["verified_objects"] >= a.count and x["pending_objects"] == 0:
                print("%.3f %s" % (time.monotonic() - t0, json.dumps(x)))
                return 0
        # /status counts the replication table under the lock the copiers
        # need (about 20 ms at 20,000 rows): poll rarely, at most 1% late.
        time.sleep(max(0.1, min(1.0, (time.monotonic() - t0) / 100)))
    print("timeout after %.0f s: %s" % (a.timeout, json.dumps(last)), file=sys.stderr)
    return 1


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def cmd_lag(a):
    import mp  # tests/integration/mp.py: the wire client
    mp_argv = [a.mp] + json.loads(a.mp_args)
    n = int(round(a.rate * a.seconds))
    size = int(a.mib * (1 << 20))
    pool = os.urandom(size)
    started = []    # paths whose `mp put` began, in order
    acked = {}      # path -> time.time() when `mp put` returned
    verified = {}   # path -> (time.time() when RESOLVE named replicas, ctime ns)
    errors = []
    lock = threading.Lock()
    done = threading.Event()
    client = mp.Client(a.mirror, hello=True, role="mirror")

    def poller():
        # Every file whose put began is polled (not only acknowledged ones),
        # so a late wake-up of a writer thread does not delay the poll.
        while True:
            with lock:
                todo = [p for p in started if p not in verified]
                finished = done.is_set()
            if finished and not todo:
                break
            for p in todo:
                t, b = client.call(mp.RESOLVE, {"path": p})
                now = time.time()
                if t == mp.REPLY:
                    reps = b.get("replicas")
                    if reps and all(r is not None for r in reps):
                        with lock:
                            verified[p] = (now, b["node"][mp.N_CTIME])
            if finished and time.monotonic() - t_end > a.drain:
                break
            time.sleep(0.002)

    def writer(i, at):
        path = "/lag/f%05d" % i
        data = os.urandom(16) + pool[16:]
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with lock:
            started.append(path)
        p = subprocess.run(mp_argv + ["put", "-", path], input=data,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t = time.time()
        if p.returncode != 0:
            with lock:
                errors.append("%s: %s" % (path, p.stderr.decode(errors="replace").strip()))
            return
        with lock:
            acked[path] = t

    t0 = time.monotonic() + 0.5
    t_end = None
    w0 = time.time() + 0.5
    pt = threading.Thread(target=poller, daemon=True)
    pt.start()
    ws = []
    for i in range(n):
        w = threading.Thread(target=writer, args=(i, t0 + i / a.rate), daemon=True)
        w.start()
        ws.append(w)
    for w in ws:
        w.join()
    t_end = time.monotonic()
    done.set()
    pt.join()
    client.close()
    # Two clocks for "the write was acknowledged": the primary's ctime of
    # the file (its clock when it applied the CREATE, just before the commit
    # and the reply: an upper bound of the lag by the commit's few ms) and
    # the moment `mp put` returned to the writer thread (a lower bound: the
    # process's exit and the thread's wake-up come after the ack, and on a
    # loaded machine can take long). Same host, same CLOCK_REALTIME.
    samples = []
    for p in sorted(acked):
        if p in verified:
            tv, ctime = verified[p]
            samples.append({"path": p, "at_s": acked[p] - w0,
                            "from_commit_ms": (tv - ctime / 1e9) * 1000,
                            "from_return_ms": (tv - acked[p]) * 1000})
    lc = [x["from_commit_ms"] for x in samples]
    lr = [x["from_return_ms"] for x in samples]
    put_span = max(acked.values()) - min(acked.values()) if acked else 0

    def stats(xs):
        return {"p50_ms": percentile(xs, 50), "p90_ms": percentile(xs, 90),
                "p99_ms": percentile(xs, 99),
                "max_ms": max(xs) if xs else float("nan"),
                "min_ms": min(xs) if xs else float("nan")}

    res = {"files": n, "acked": len(acked), "verified": len(samples), "errors": errors[:5],
           "mib": a.mib, "rate": a.rate, "seconds": a.seconds,
           "achieved_rate": (len(acked) - 1) / put_span if put_span > 0 else 0,
           "from_commit": stats(lc), "from_return": stats(lr),
           "status": rule_status(a.admin, a.rule), "samples": samples}
    with open(a.out, "w") as f:
        json.dump(res, f)
    slow = sorted(samples, key=lambda x: -x["from_commit_ms"])[:5]
    print("lag: %d written, %d verified, from the primary's commit p50 %.1f ms p99 %.1f ms; "
          "slowest at %s s" % (len(acked), len(samples), res["from_commit"]["p50_ms"],
                               res["from_commit"]["p99_ms"],
                               ", ".join("%.1f (%.0f ms)" % (x["at_s"], x["from_commit_ms"])
                                         for x in slow)), file=sys.stderr)
    return 0 if len(samples) == n else 1


def cmd_table(a):
    with open(a.results) as f:
        r = json.load(f)
    P = print
    P()
    P("mirrorplane replication benchmark: origin s3rver -> site s3rver, beside rclone copy")
    P("  %s" % r["setup"])
    P("  rclone: %s" % r["rclone_cmd"])
    P("  MB = 10^6 bytes; seconds are wall time; load average before: %s, after: %s" % (
        r["load"], r.get("load_after", "?")))
    P()
    P("%-22s %9s %9s   %9s %9s   %6s  %s" % ("case", "mp s", "mp MB/s", "rclone s",
                                              "rclone MB/s", "ratio", "target"))
    for c in r["cases"]:
        mb = c["bytes"] / 1e6
        mps = mb / c["mp_s"] if c.get("mp_s") else float("nan")
        rcs = mb / c["rclone_s"] if c.get("rclone_s") else float("nan")
        ratio = mps / rcs if rcs == rcs and rcs > 0 else float("nan")
        P("%-22s %9.1f %9.1f   %9.1f %11.1f   %5.2fx  >= 1.5x %s" % (
            c["name"], c["mp_s"], mps, c["rclone_s"], rcs, ratio,
            "met" if ratio >= 1.5 else "MISSED"))
    P()
    P("CPU seconds while each copy ran (user+sys; 2 cores shared with other work):")
    P("%-22s %-34s %-34s" % ("case", "mirrorplane: mp-mirror/s3 origin/s3 site",
                               "rclone: rclone/s3 origin/s3 site"))
    for c in r["cases"]:
        P("%-22s %-34s %-34s" % (c["name"], " / ".join("%.1f" % x for x in c["mp_cpu"]),
                                 " / ".join("%.1f" % x for x in c["rclone_cpu"])))
    lag = r.get("lag")
    if lag:
        P()
        P("replication lag, %.0f files/s of %g MiB for %.0f s (write acknowledged by the primary "
          "-> copy verified in the site bucket, seen by RESOLVE at the mirror):" % (
              lag["rate"], lag["mib"], lag["seconds"]))
        P("  files %d (written %d, verified %d, achieved %.1f files/s)" % (
            lag["files"], lag["acked"], lag["verified"], lag["achieved_rate"]))
        for key, label in (("from_commit", "from the primary's commit (ctime)"),
                           ("from_return", "from `mp put` returning")):
            x = lag[key]
            P("  %-34s p50 %6.0f ms  p99 %6.0f ms  (p90 %.0f, max %.0f, min %.0f)" % (
                label, x["p50_ms"], x["p99_ms"], x["p90_ms"], x["max_ms"], x["min_ms"]))
        if lag["errors"]:
            P("  errors: %s" % "; ".join(lag["errors"]))
    for note in r.get("notes", []):
        P("  note: %s" % note)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("--large", type=int, default=16)
    g.add_argument("--large-mib", type=int, default=128)
    g.add_argument("--small", type=int, default=20000)
    g.add_argument("--small-kib", type=int, default=100)
    w = sub.add_parser("wait")
    w.add_argument("admin")
    w.add_argument("rule")
    w.add_argument("count", type=int)
    w.add_argument("--timeout", type=float, default=1800)
    lg = sub.add_parser("lag")
    lg.add_argument("--mp", required=True)
    lg.add_argument("--mp-args", required=True)
    lg.add_argument("--mirror", type=int, required=True)
    lg.add_argument("--admin", required=True)
    lg.add_argument("--rule", required=True)
    lg.add_argument("--rate", type=float, default=10)
    lg.add_argument("--seconds", type=float, default=30)
    lg.add_argument("--mib", type=float, default=1)
    lg.add_argument("--drain", type=float, default=60)
    lg.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("results")
    a = ap.parse_args()
    return {"gen": cmd_gen, "wait": cmd_wait, "lag": cmd_lag, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
