#!/usr/bin/python3
"""libmirrorplane's fallback to the primary and its way back: one handle
(timeout 1 s, probe every 200 ms) reads ten files over and over with
mp-fallback-reader while the mirror is (a) killed with -9 and restarted 3 s
later on the same port and data directory, and (b) stopped (SIGSTOP) for
4 s. No read may fail, each outage may cost at most one slow read (one
timeout: the prober, not the callers, finds out when the mirror is back),
reads must move to the primary during each outage and back to the mirror
after it, and the mirror serves the reads outside the outages."""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402

FILES = ["/fb/f%d" % i for i in range(10)]
TIMEOUT_MS = 1000
PROBE_MS = 200
# The reader is stopped (SIGINT) this long after the last outage ended; its
# duration is only a backstop. About 20 s in all.
AFTER_S = 6
DURATION_S = 120
SLOW_NS = TIMEOUT_MS * 800000  # what the tool counts as slow: 0.8 timeout
# How long after an outage ends the reads may take to come back to the
# mirror (probing, catching up) before the test calls it a failure.
BACK_WITHIN_NS = 5 * 10**9


def reader_argv(p, m, *extra):
    return [mp.fallback_reader_binary(), "--primary", p.address, "--mirror", m.address,
            "--files", ",".join(FILES), "--timeout-ms", str(TIMEOUT_MS),
            "--probe-ms", str(PROBE_MS)] + list(extra)


def read_log(path):
    """[(start_ns, latency_ns, server, ok)] from the reader's --log."""
    out = []
    with open(path) as f:
        for line in f:
            start, lat_us, server, ok = line.split()
            out.append((int(start), int(lat_us) * 1000, server, ok == "1"))
    return out


def test_fallback_and_back(tmp):
    p = mp.Primary(tmp)
    m = mp.Mirror(tmp, p, name="mirror", config={"reconnect": {"min": "50ms", "max": "500ms"}})
    r = subprocess.run(reader_argv(p, m, "--setup"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "setup failed (%d): %s %s" % (r.returncode, r.stdout, r.stderr)
    assert json.loads(r.stdout.strip().splitlines()[-1])["setup"] == len(FILES), r.stdout
    m.wait_caught_up(p)

    log_path = os.path.join(tmp, "reads.log")
    out_path, err_path = os.path.join(tmp, "reader.out"), os.path.join(tmp, "reader.err")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        reader = subprocess.Popen(reader_argv(p, m, "--duration-s", str(DURATION_S),
                                              "--log", log_path),
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    # (what, gone_ns, back_ns, recovered_ns): the mirror went away at gone,
    # could answer again from back on (restart begins, SIGCONT), and was
    # ready at recovered.
    outages = []
    try:
        time.sleep(3)
        # (a) kill -9, 3 s down, back on the same port and data directory.
        port = m.port
        t = time.time_ns()
        m.kill9()
        time.sleep(3)
        t_back = time.time_ns()
        m.start()
        assert m.port == port, "the mirror came back on another port"
        outages.append(("kill -9", t, t_back, time.time_ns()))
        time.sleep(3)
        # (b) a hung mirror: SIGSTOP for 4 s.
        t = time.time_ns()
        m.signal(signal.SIGSTOP)
        try:
            time.sleep(4)
        finally:
            t_back = time.time_ns()
            m.signal(signal.SIGCONT)
        outages.append(("SIGSTOP", t, t_back, time.time_ns()))
        time.sleep(AFTER_S)
        assert reader.poll() is None, "the reader ended early"
        reader.send_signal(signal.SIGINT)
        rc = reader.wait(60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    with open(out_path) as f:
        stdout = f.read()
    with open(err_path) as f:
        stderr = f.read()
    for marker in ("runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "WARNING: ThreadSanitizer"):
        assert marker not in stderr, "sanitizer report from the reader:\n" + stderr[-6000:]
    lines = stdout.strip().splitlines()
    assert lines, "the reader printed nothing (exit %d): %s" % (rc, stderr[-4000:])
    s = json.loads(lines[-1])
    print("reader: %s" % json.dumps({k: v for k, v in s.items() if k != "switches"}))
    print("switches: %s" % [(round((w["time_ns"] - outages[0][1]) / 1e9, 3), w["from"], w["to"])
                            for w in s["switches"]])
    print("outages: %s" % [(o[0],) + tuple(round((t - outages[0][1]) / 1e9, 3) for t in o[1:])
                           for o in outages])
    detail = "exit %d, summary %s, stderr:\n%s" % (rc, lines[-1], stderr[-4000:])
    assert s["errors"] == 0 and rc == 0, "reads failed: " + detail
    reads = read_log(log_path)
    assert len(reads) == s["reads"] and s["reads"] > 200, detail
    assert all(ok for _, _, _, ok in reads), detail

    # At most one slow read per outage, and none outside them.
    assert s["slow"] <= len(outages), "more slow reads than outages: " + detail
    for start, lat, server, _ in reads:
        if lat >= SLOW_NS:
            hits = [what for what, b, _, e in outages if b - 10**8 <= start <= e]
            assert hits, "a slow read (%d ms at %s) outside any outage" % (lat // 10**6, server)
    for what, b, _, e in outages:
        n = sum(1 for start, lat, _, _ in reads if lat >= SLOW_NS and b - 10**8 <= start <= e)
        assert n <= 1, "%d slow reads during the %s outage: %s" % (n, what, detail)

    switches = s["switches"]
    windows = []  # (begin, back at the mirror)
    for what, b, e, rec in outages:
        # Reads leave the mirror within one timeout of it going away...
        away = [w for w in switches if w["from"] == "mirror" and w["to"] == "primary" and
                b - 10**8 <= w["time_ns"] <= b + TIMEOUT_MS * 10**6 + 5 * 10**8]
        assert away, "no switch to the primary right after the %s at %.3f: %s" % (
            what, b / 1e9, switches)
        # ...stay at the primary while it is away (no read served by the mirror)...
        during = [(start, server) for start, lat, server, _ in reads
                  if away[0]["time_ns"] <= start and start + lat <= e]
        assert during and all(server == "primary" for _, server in during), (
            "reads during the %s outage: %s" % (what, sorted(set(x for _, x in during))))
        # ...and come back to it after it recovered.
        back = [w for w in switches if w["from"] == "primary" and w["to"] == "mirror" and
                e <= w["time_ns"] <= rec + BACK_WITHIN_NS]
        assert back, "reads did not come back to the mirror within %d s of the %s ending: %s" % (
            BACK_WITHIN_NS // 10**9, what, switches)
        windows.append((b, back[0]["time_ns"]))
    # No flapping: outside the outages the mirror is never marked down.
    # Reads are hedged, so a read the mirror is slow to answer (catching up
    # after an outage) may be answered by the primary: a single read, never
    # a run of them as a mark-down (a probe interval long) would make.
    run = longest = 0
    for start, _, server, _ in reads:
        if any(b - 10**8 <= start < back for b, back in windows):
            run = 0
            continue
        run = run + 1 if server == "primary" else 0
        longest = max(longest, run)
    assert longest <= 3, "%d reads in a row at the primary outside the outages: %s" % (
        longest, switches)
    # Outside the outages, the mirror serves the reads.
    outside = [server for start, _, server, _ in reads
               if not any(b <= start < back for b, back in windows)]
    at_mirror = sum(1 for x in outside if x == "mirror")
    assert outside and at_mirror * 2 > len(outside), (
        "the mirror served %d of %d reads outside the outages" % (at_mirror, len(outside)))
    assert at_mirror >= 0.95 * len(outside), (
        "the mirror served only %d of %d reads outside the outages" % (at_mirror, len(outside)))
    m.stop()
    p.stop()


if __name__ == "__main__":
    mp.main(globals())
