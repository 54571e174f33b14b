#!/usr/bin/python3
"""The fault suite: faults injected into the netns bed (deploy/netns) under a
steady load, one table line per scenario.

    tests/fault/run [--short | --soak MINUTES] [--only NAME,...] [--keep-logs DIR]

Load during every scenario:
  - a writer in the primary region (tests/fault/load.py writer, 20 CREATEs/s;
    every acknowledged write is logged with its version);
  - in every mirror region, mp-fallback-reader reading a fixed set of files
    through libmirrorplane (local mirror, falling back to the primary);
  - in every mirror region, mp-session-check runs back to back (2 threads,
    writes to the primary across the WAN, read-your-writes and monotonic
    reads at the local mirror). While a region is cut off the checker of that
    region pauses between runs (its writes cannot reach the primary; a write
    from the cut region is tried once and must fail naming the primary).

After the fault is healed the suite measures the time until every mirror
applied the primary's version at the heal, stops the load, and checks that
every acknowledged write is at the primary and at every mirror, and that
every mirror holds the primary's digest. A scenario fails on any lost write or
consistency violation; errors seen by applications are reported.
Exit status: 0 when every scenario passed, 1 otherwise, 2 for bad arguments.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "deploy", "netns"))
import bed as bedmod  # noqa: E402

PY = "/usr/bin/python3"
FILES = ",".join("/fault/r/f%d" % i for i in range(8))


def log(msg):
    print("%s fault: %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class SessionLoop(threading.Thread):
    """mp-session-check runs back to back in one region until stopped."""

    def __init__(self, bed, region, tool, seed, scenario):
        super().__init__(daemon=True)
        self.scenario = scenario
        self.bed, self.region, self.tool, self.seed = bed, region, tool, seed
        self.lock = threading.Lock()
        self.paused = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self.stopping = False
        self.totals = {"reads": 0, "writes": 0, "errors": 0, "violations": 0, "runs": 0}
        self.messages = []
        self.runs = 0

    def run(self):
        while not self.stopping:
            if self.paused.is_set():
                self.idle.set()
                time.sleep(0.05)
                continue
            self.idle.clear()
            if self.paused.is_set() or self.stopping:
                self.idle.set()
                continue
            self.runs += 1
            argv = self.bed.exec_argv(self.region, self.bed.client_env(self.region) + [
                self.tool, "--primary", self.bed.primary_addr(self.region), "--mirror",
                self.bed.mirror_addr(self.region), "--threads", "2", "--ops", "15", "--seed",
                str(self.seed + self.runs), "--dir", "/sc-%s/%s-r%d" % (self.region, self.scenario, self.runs)])
            p = subprocess.run(argv, capture_output=True, text=True)
            summary = None
            for line in reversed(p.stdout.splitlines()):
                if line.startswith("{"):
                    summary = json.loads(line)
                    break
            with self.lock:
                self.totals["runs"] += 1
                if summary is None:
                    self.totals["errors"] += 1
                    self.messages.append("exit %d: %s" % (p.returncode, p.stderr[-300:]))
                else:
                    self.totals["reads"] += summary.get("reads", 0)
                    self.totals["writes"] += summary.get("writes", 0)
                    self.totals["errors"] += summary.get("errors", 0)
                    self.totals["violations"] += summary.get("violations", 0)
                    if p.stderr.strip():
                        self.messages += p.stderr.strip().splitlines()[:5]
            self.idle.set()

    def pause(self, timeout=60):
        self.paused.set()
        self.idle.wait(timeout)

    def resume(self):
        self.paused.clear()

    def stop(self):
        self.stopping = True
        self.join(120)


class Load:
    def __init__(self, bed, name, outdir):
        self.bed, self.name, self.outdir = bed, name, outdir
        self.build = bed.build
        self.procs = {}
        self.loops = {}
        self.acklog = os.path.join(outdir, "%s.acked" % name)
        self.dir = "/fault/w-%s" % name

    def start(self):
        pri = self.bed.primary_region
        self._spawn("writer", pri, [PY, os.path.join(HERE, "load.py"), "writer", "--server",
                                    self.bed.primary_addr(pri), "--dir", self.dir, "--rate",
                                    "20", "--log", self.acklog])
        for n in self.bed.regions():
            self._spawn("reader-" + n, n, self.bed.client_env(n) + [
                os.path.join(self.build, "tests", "tools", "mp-fallback-reader"), "--primary",
                self.bed.primary_addr(n), "--mirror", self.bed.mirror_addr(n), "--files", FILES,
                "--duration-s", "3600", "--interval-ms", "20", "--timeout-ms", "1000"])
            loop = SessionLoop(self.bed, n, os.path.join(self.build, "tests", "tools",
                                                         "mp-session-check"),
                               seed=random.randrange(1 << 30), scenario=self.name)
            loop.start()
            self.loops[n] = loop

    def _spawn(self, name, region, argv):
        out = open(os.path.join(self.outdir, "%s.%s.out" % (self.name, name)), "w")
        err = open(os.path.join(self.outdir, "%s.%s.err" % (self.name, name)), "w")
        self.procs[name] = (subprocess.Popen(self.bed.exec_argv(region, argv), stdout=out,
                                             stderr=err, start_new_session=True), out, err)

    def stop(self):
        res = {"reads": 0, "writes": 0, "errors": 0, "violations": 0, "notes": []}
        for loop in self.loops.values():
            loop.stop()
        for name, (p, out, err) in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                res["notes"].append("%s did not stop on SIGTERM" % name)
            out.close()
            err.close()
            summary = None
            with open(out.name) as f:
                for line in f.read().splitlines()[::-1]:
                    if line.startswith("{"):
                        summary = json.loads(line)
                        break
            if summary is None:
                res["errors"] += 1
                res["notes"].append("%s printed no summary (exit %s)" % (name, p.returncode))
                continue
            if name == "writer":
                res["writes"] += summary["writes"]
                res["errors"] += summary["errors"]
                if summary["errors"]:
                    res["notes"].append("writer: %d errors, last: %s" % (
                        summary["errors"], (summary["last_error"] or "")[:120]))
            else:
                res["reads"] += summary.get("reads", 0)
                res["errors"] += summary.get("errors", 0)
                if summary.get("errors"):
                    res["notes"].append("%s: %d errors" % (name, summary["errors"]))
        for n, loop in self.loops.items():
            t = loop.totals
            res["reads"] += t["reads"]
            res["writes"] += t["writes"]
            res["errors"] += t["errors"]
            res["violations"] += t["violations"]
            if t["errors"] or t["violations"]:
                res["notes"].append("session-check %s: %d errors, %d violations: %s" % (
                    n, t["errors"], t["violations"], " | ".join(loop.messages[:3])[:300]))
        return res


class Scenario:
    def __init__(self, bed, outdir, short):
        self.bed, self.outdir, self.short = bed, outdir, short
        self.notes = []
        self.failures = []

    def hold(self, seconds):
        time.sleep(seconds)


def sc_partition_region(s, load, region="us"):
    secs = 10 if s.short else 30
    load.loops[region].pause()
    s.bed.partition(region)
    t0 = time.monotonic()
    time.sleep(min(3, secs))
    # A write from the cut region fails, naming the primary.
    p = subprocess.run(s.bed.exec_argv(region, [
        os.path.join(s.bed.build, "client", "mp"), "-c", s.bed.site_config(region),
        "--timeout", "2s", "mkdir", "/fault/from-%s-%d" % (region, int(time.time()))]),
        capture_output=True, text=True, timeout=60)
    msg = (p.stderr or p.stdout).strip().splitlines()[-1:] or [""]
    if p.returncode == 0:
        s.failures.append("a write from the cut region succeeded")
    elif "primary" not in msg[0].lower():
        s.failures.append("a write from the cut region failed without naming the primary: %s"
                          % msg[0])
    s.notes.append("write from cut %s: '%s'" % (region, msg[0][:100]))
    st = s.bed.mirror_status(region)
    if st is not None:
        s.notes.append("%s during the cut: upstream %s, lag %ss" % (
            region, st.get("upstream_state"), st.get("lag_seconds")))
    time.sleep(max(0, secs - (time.monotonic() - t0)))
    s.bed.heal(region)
    load.loops[region].resume()


def sc_partition_hub(s, load, hub="eu", child="ap"):
    secs = 10 if s.short else 30
    load.loops[hub].pause()
    s.bed.partition(hub)
    hub_addr = "%s:%d" % (s.bed.gateway(child), bedmod.MIRROR_PORT)
    pri_addr = s.bed.primary_addr(child)
    t0 = time.monotonic()
    failover = None
    while time.monotonic() - t0 < secs:
        st = s.bed.mirror_status(child) or {}
        if failover is None and st.get("upstream") == pri_addr and \
                st.get("upstream_state") == "streaming":
            failover = time.monotonic() - t0
        time.sleep(0.5)
    s.notes.append("%s failed over to the primary after %s" % (
        child, "%.1f s" % failover if failover is not None else "NEVER"))
    if failover is None:
        s.failures.append("%s did not fail over to the primary" % child)
    s.bed.heal(hub)
    load.loops[hub].resume()
    t1 = time.monotonic()
    back = None
    while time.monotonic() - t1 < 30:
        st = s.bed.mirror_status(child) or {}
        if st.get("upstream") == hub_addr and st.get("upstream_state") == "streaming":
            back = time.monotonic() - t1
            break
        time.sleep(0.5)
    s.notes.append("%s back on the hub after the heal: %s" % (
        child, "%.1f s" % back if back is not None else "NO (within 30 s)"))
    if back is None:
        s.failures.append("%s did not return to the hub %s after the heal" % (child, hub))


def sc_kill_primary(s, load):
    time.sleep(2)
    s.bed.kill9("primary")
    time.sleep(3)
    pri = s.bed.primary_region
    s.bed.spawn("primary", pri, s.bed.state["procs"]["primary"]["argv"],
                wait_http="http://%s:%d/healthz" % (s.bed.host(pri), bedmod.PRIMARY_ADMIN))


def sc_restart_mirror(s, load, region="eu"):
    time.sleep(2)
    r = s.bed.restart("mirror-" + region, wait_http="http://%s:%d/healthz" % (
        s.bed.host(region), bedmod.MIRROR_ADMIN))
    del r


def sc_sigstop_mirror(s, load, region="us"):
    secs = 8 if s.short else 20
    time.sleep(1)
    s.bed.send_signal("mirror-" + region, signal.SIGSTOP)
    time.sleep(secs)
    s.bed.send_signal("mirror-" + region, signal.SIGCONT)


def sc_stalls_slow(s, load, region="us"):
    secs = 12 if s.short else 60
    link = region
    s.bed.relay(link, "rate", "1mbit")
    t0 = time.monotonic()
    rng = random.Random(7)
    stalls = 0
    worst_gap = 0.0
    while time.monotonic() - t0 < secs:
        s.bed.relay(link, "stall", rng.randrange(100, 500))
        stalls += 1
        # Lag truthfulness: the mirror's own lag in versions is never below
        # what it is behind the primary's version read just before it.
        pv = s.bed.primary_version()
        st = s.bed.mirror_status(region) or {}
        if pv is not None and "applied_version" in st:
            real = pv - st["applied_version"]
            told = st.get("lag_versions", 0)
            gap = real - told
            worst_gap = max(worst_gap, gap)
        time.sleep(rng.uniform(0.3, 1.2))
    s.bed.relay(link, "rate", "0")
    s.notes.append("%d stalls of 100-500 ms on a 1 Mbit/s link; lag under-reported by at "
                   "most %d versions" % (stalls, worst_gap))


def sc_disk_full(s, load, region="eu"):
    secs = 8 if s.short else 30
    mlog = s.bed.state["procs"]["mirror-" + region]["log"]
    start_size = os.path.getsize(mlog)
    left = s.bed.fill(region)
    s.notes.append("%s disk filled (%d bytes left)" % (region, left))
    time.sleep(secs)
    with open(mlog, errors="replace") as f:
        f.seek(start_size)
        new = f.read()
    lines = [l for l in new.splitlines() if re.search(r"space|ENOSPC|disk|full", l, re.I)]
    s.notes.append("%s log: %s" % (region, lines[0][:160] if lines else "NOTHING about the disk"))
    if not lines:
        s.failures.append("the mirror logged nothing about its full disk")
    alive = s.bed.alive("mirror-" + region)
    s.notes.append("%s mirror %s while full" % (region, "kept running" if alive else "EXITED"))
    st = s.bed.mirror_status(region) or {}
    s.notes.append("%s status while full: journal_failing %s, applied %s, durable %s" % (
        region, st.get("journal_failing"), st.get("applied_version"), st.get("durable_version")))
    if st.get("journal_failing") is not True:
        s.failures.append("/status does not say the journal is failing")
    s.bed.free(region)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = s.bed.mirror_status(region) or {}
        if st.get("journal_failing") is False and st.get("durable_version", 0) >= \
                st.get("applied_version", 1) - 50:
            break
        time.sleep(0.2)
    else:
        s.failures.append("the journal did not recover within 30 s of freeing the disk")
    if not alive:
        s.failures.append("the mirror exited on a full disk")
        s.bed.spawn("mirror-" + region, region, s.bed.state["procs"]["mirror-" + region]["argv"],
                    wait_http="http://%s:%d/healthz" % (s.bed.host(region),
                                                        bedmod.MIRROR_ADMIN))


def cache_hits(bed, region, k=0):
    body = bed.http(region, "http://%s:%d/metrics" % (bed.host(region), bedmod.CACHE_ADMIN + k))
    for line in (body or b"").decode("utf-8", "replace").splitlines():
        if line.startswith("mp_cache_hits_total "):
            return float(line.split()[1])
    return None


def sc_kill_cache(s, load, region="eu"):
    """kill -9 the region's cache node under its readers (they read through
    it): no read fails (they go to the buckets meanwhile); restarted, it
    registers again, its index is rebuilt from its disk and it serves hits."""
    name = "cache-%s-0" % region
    address = "%s:%d" % (s.bed.host(region), bedmod.CACHE_PORT)
    before = cache_hits(s.bed, region)
    time.sleep(2)
    s.bed.kill9(name)
    time.sleep(4 if s.short else 15)
    s.bed.spawn(name, region, s.bed.state["procs"][name]["argv"],
                wait_http="http://%s:%d/healthz" % (s.bed.host(region), bedmod.CACHE_ADMIN))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = s.bed.mirror_status(region) or {}
        if any(c.get("address") == address and c.get("state") in ("active", "warming")
               for c in st.get("cache_group", [])):
            break
        time.sleep(0.2)
    else:
        s.failures.append("the restarted cache node is not in the group after 30 s")
    time.sleep(3)
    after = cache_hits(s.bed, region)
    s.notes.append("cache %s: %s hits before the kill; %s since its restart" % (
        region, before, after))
    if not after:
        s.failures.append("the restarted cache node served no hits (readers skip it?)")


def mp_in(bed, region, *args, timeout=120):
    """mp with the region's site configuration, run in its namespace."""
    return subprocess.run(bed.exec_argv(region, [
        os.path.join(bed.build, "client", "mp"), "-c", bed.site_config(region)] +
        [str(a) for a in args]), capture_output=True, text=True, timeout=timeout)


WARM_POLICY = """version: 1
warmup:
  - name: fault-models
    paths: ["/fault/models/**"]
    sites: [%s]
    trigger: on-change
    evict_previous: true
"""


def sc_warmup_partition(s, load, region="us", writer="eu"):
    """A new model version is committed while the region is cut off: after
    the heal its mirror catches up and warms that version in its cache group
    unattended; `mp warmup wait` there (a pod's readiness gate) returns 0."""
    secs = 6 if s.short else 20
    pol = s.bed.path("warm-policy.yaml")
    with open(pol, "w") as f:
        f.write(WARM_POLICY % region)
    p = mp_in(s.bed, writer, "policy", "apply", pol)
    if p.returncode != 0:
        s.failures.append("policy apply: %s" % p.stderr.strip()[-200:])
        return
    s.bed.wait_converged(timeout=60)
    version = "v%d" % int(time.time())
    src = s.bed.path("model-" + version)
    os.makedirs(src, exist_ok=True)
    rng = random.Random(version)
    for i in range(4):
        with open(os.path.join(src, "part-%d" % i), "wb") as f:
            f.write(rng.randbytes((1 << 20) + i))
    load.loops[region].pause()  # its writes would fail: that is partition-region's line
    s.bed.partition(region)
    p = mp_in(s.bed, writer, "put", "-r", src, "/fault/models/" + version)
    if p.returncode != 0:
        s.failures.append("put of the model at %s: %s" % (writer, p.stderr.strip()[-200:]))
    time.sleep(secs)
    s.bed.heal(region)
    load.loops[region].resume()
    t0 = time.monotonic()
    p = mp_in(s.bed, region, "warmup", "wait", "/fault/models/" + version, "--timeout", "90s",
              timeout=150)
    took = time.monotonic() - t0
    if p.returncode != 0:
        s.failures.append("warmup wait at %s after the heal: %s" % (
            region, (p.stderr or p.stdout).strip()[-300:]))
    else:
        s.notes.append("%s: the version committed during the cut warm %.1f s after the heal" % (
            region, took))
    shutil.rmtree(src, ignore_errors=True)


SCENARIOS = [
    ("partition-region", "partition us (30 s; short 10 s)", sc_partition_region),
    ("partition-hub", "partition hub eu (ap fails over)", sc_partition_hub),
    ("kill-primary", "kill -9 primary, restart 3 s later", sc_kill_primary),
    ("restart-mirror", "restart mirror eu", sc_restart_mirror),
    ("sigstop-mirror", "SIGSTOP mirror us 20 s (short 8 s)", sc_sigstop_mirror),
    ("stalls-1mbit", "random stalls + 1 Mbit/s to us", sc_stalls_slow),
    ("disk-full", "mirror eu disk full", sc_disk_full),
    ("kill-cache", "kill -9 cache node eu, restart 4 s later", sc_kill_cache),
    ("warmup-partition", "model committed while us is cut off, warm after the heal",
     sc_warmup_partition),
]


def verify(bed, load, outdir, res):
    """Acked writes at the primary and every mirror; digests equal."""
    pri = bed.primary_region
    lost = 0
    tool = [PY, os.path.join(HERE, "load.py"), "check", "--dir", load.dir, "--log", load.acklog]
    p = subprocess.run(bed.exec_argv(pri, tool + ["--server", bed.primary_addr(pri)]),
                       capture_output=True, text=True, timeout=120)
    try:
        r = json.loads(p.stdout.strip().splitlines()[-1])
        lost += r["missing"]
        if r["missing"]:
            res["notes"].append("LOST at the primary: %s" % r["examples"])
        version = r["version"]
    except (IndexError, ValueError):
        res["notes"].append("check at the primary failed: %s" % p.stderr[-300:])
        return 1
    for n in bed.regions():
        p = subprocess.run(bed.exec_argv(n, tool + ["--server", bed.mirror_addr(n), "--role",
                                                    "mirror", "--min-version", str(version)]),
                           capture_output=True, text=True, timeout=120)
        try:
            r = json.loads(p.stdout.strip().splitlines()[-1])
            if r["missing"]:
                res["violations"] += r["missing"]
                res["notes"].append("missing at mirror %s: %s" % (n, r["examples"]))
        except (IndexError, ValueError):
            res["violations"] += 1
            res["notes"].append("check at mirror %s failed: %s" % (n, p.stderr[-300:]))
    # Digests at one version, once the load has stopped.
    bed.wait_converged(timeout=60)
    pst = bed.status_json(pri, "%s:%d" % (bed.host(pri), bedmod.PRIMARY_ADMIN))
    for n in bed.regions():
        st = bed.mirror_status(n) or {}
        if st.get("applied_version") == pst["version"] and st.get("digest") != pst["digest"]:
            res["violations"] += 1
            res["notes"].append("mirror %s digest %s != primary %s at version %d" % (
                n, st.get("digest"), pst["digest"], pst["version"]))
    return lost


def run_scenario(bed, name, label, fn, outdir, short):
    log("scenario %s: %s" % (name, label))
    s = Scenario(bed, outdir, short)
    load = Load(bed, name, outdir)
    load.start()
    time.sleep(3 if short else 10)
    converge = None
    try:
        fn(s, load)
        t0 = time.monotonic()
        converge = bed.wait_converged(timeout=120)
        time.sleep(2)
    except Exception as e:  # a broken scenario is a failed line, not a dead suite
        s.failures.append("scenario error: %s" % e)
    res = load.stop()
    lost = verify(bed, load, outdir, res)
    res.update(name=name, lost=lost, converge=converge,
               notes=s.notes + res["notes"], failures=s.failures)
    res["ok"] = lost == 0 and res["violations"] == 0 and not s.failures
    del t0
    return res


def print_table(rows):
    head = "%-18s %7s %7s %7s %10s %10s %9s  %s" % (
        "fault", "reads", "writes", "errors", "violations", "lost-acked", "converge", "result")
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        print("%-18s %7d %7d %7d %10d %10d %9s  %s" % (
            r["name"], r["reads"], r["writes"], r["errors"], r["violations"], r["lost"],
            "%.1f s" % r["converge"] if r["converge"] is not None else "-",
            "ok" if r["ok"] else "FAIL"))
    print()
    for r in rows:
        for n in r["notes"]:
            print("  %s: %s" % (r["name"], n))
        for f in r["failures"]:
            print("  %s: FAILED: %s" % (r["name"], f))
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description="the fault suite on the netns bed")
    ap.add_argument("--short", action="store_true", help="shorter faults (CI, < 10 minutes)")
    ap.add_argument("--soak", type=float, metavar="MINUTES",
                    help="the scenarios in random order until MINUTES passed")
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--topology", default=os.path.join(HERE, "topology.yaml"))
    ap.add_argument("--json", help="write the results here too")
    a = ap.parse_args()
    chosen = SCENARIOS
    if a.only:
        names = a.only.split(",")
        unknown = [n for n in names if n not in [s[0] for s in SCENARIOS]]
        if unknown:
            print("fault: unknown scenario(s) %s; known: %s" % (
                ", ".join(unknown), ", ".join(s[0] for s in SCENARIOS)), file=sys.stderr)
            return 2
        chosen = [s for s in SCENARIOS if s[0] in names]
    if os.geteuid() != 0:
        print("fault: needs root (network namespaces)", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    topo_state = bedmod.state_dir_of(a.topology)
    if os.path.exists(os.path.join(topo_state, "state.json")):
        log("removing a bed left from an earlier run")
        bedmod.Bed.load(topo_state).down()
    bed = bedmod.bring_up(a.topology)
    outdir = bed.path("load")
    os.makedirs(outdir, exist_ok=True)
    rows = []
    old = {sg: signal.signal(sg, bedmod._raise_interrupted) for sg in (signal.SIGINT,
                                                                      signal.SIGTERM)}
    try:
        # The files mp-fallback-reader reads, put once.
        r0 = bed.regions()[0]
        subprocess.run(bed.exec_argv(r0, bed.client_env(r0) + [
            os.path.join(bed.build, "tests", "tools", "mp-fallback-reader"), "--setup",
            "--primary", bed.primary_addr(r0), "--mirror", bed.mirror_addr(r0), "--files",
            FILES]), check=True, capture_output=True, timeout=60)
        bed.wait_converged()
        if a.soak:
            rng = random.Random()
            end = time.monotonic() + a.soak * 60
            i = 0
            while time.monotonic() < end:
                name, label, fn = rng.choice(chosen)
                i += 1
                row = run_scenario(bed, name, label, fn, outdir, short=False)
                row["name"] = "%d.%s" % (i, name)
                rows.append(row)
                log("%s: %s" % (row["name"], "ok" if row["ok"] else "FAIL"))
        else:
            for name, label, fn in chosen:
                row = run_scenario(bed, name, label, fn, outdir, a.short)
                rows.append(row)
                log("%s: %s" % (name, "ok" if row["ok"] else "FAIL"))
    except bedmod.Interrupted:
        log("interrupted")
        rows.append({"name": "interrupted", "reads": 0, "writes": 0, "errors": 0,
                     "violations": 0, "lost": 0, "converge": None, "ok": False, "notes": [],
                     "failures": ["interrupted"]})
    finally:
        for sg, h in old.items():
            signal.signal(sg, h)
        print_table(rows)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rows, f, indent=1)
        keep = os.path.join(ROOT, "var", "fault-logs")
        subprocess.run(["rm", "-rf", keep])
        subprocess.run(["cp", "-r", bed.state_dir, keep], capture_output=True)
        bed.down()
        log("bed removed; logs kept in %s; %.0f s in all" % (keep, time.monotonic() - t_start))
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
