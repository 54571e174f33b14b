#!/usr/bin/python3
"""libmirrorplane's consistency levels against a real primary and mirror:
mp-session-check runs 8 threads, each with its own handle (its own
session), doing random puts, renames and removes and reading each one back
at once, mostly at the mirror: read-your-writes, monotonic reads, listings
equal to the thread's model, and strong reads seeing every marker
acknowledged before they began. Once while the mirror stutters (SIGSTOP for
30-80 ms every ~200 ms, so that it keeps lagging and reads wait for their
min_version), once without, and once stuttering with a read_deadline of 0,
so that every read the mirror has not caught up with goes to the primary
and the mirror is marked down until the prober finds it caught up (reads
move between the two all the time)."""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402

THREADS = 8
OPS = int(os.environ.get("MP_SESSION_CHECK_OPS", "500"))  # per thread
TOOL_TIMEOUT = 180


def cluster(tmp):
    p = mp.Primary(tmp)
    m = mp.Mirror(tmp, p, name="mirror", config={"reconnect": {"min": "50ms", "max": "500ms"}})
    m.wait_caught_up(p)
    return p, m


def session_check(tmp, p, m, seed, dir_="/sc", extra=()):
    """Runs mp-session-check; returns (exit code, summary, stderr)."""
    argv = [mp.session_check_binary(), "--primary", p.address, "--mirror", m.address,
            "--threads", str(THREADS), "--ops", str(OPS), "--seed", str(seed),
            "--dir", dir_] + list(extra)
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=TOOL_TIMEOUT, cwd=tmp)
    took = time.monotonic() - t0
    lines = r.stdout.strip().splitlines()
    assert lines, "mp-session-check printed nothing (exit %d):\n%s" % (r.returncode,
                                                                      r.stderr[-6000:])
    summary = json.loads(lines[-1])
    print("mp-session-check (%.1f s): %s" % (took, lines[-1]), flush=True)
    return r.returncode, summary, r.stderr


def check(rc, s, stderr):
    detail = "exit %d, summary %r:\n%s" % (rc, s, stderr[-8000:])
    for marker in ("runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "WARNING: ThreadSanitizer"):
        assert marker not in stderr, "sanitizer report from mp-session-check: " + detail
    assert s["violations"] == 0, "consistency violations: " + detail
    assert s["errors"] == 0, "errors: " + detail
    assert rc == 0, detail
    assert s["ops"] == THREADS * OPS, "not every op ran: " + detail
    assert s["mirror_reads"] > 0, "the mirror served no read: " + detail
    assert s["strong_reads"] > 0 and s["lists"] > 0, detail
    assert s["reads"] >= s["mirror_reads"] + s["primary_reads"], detail


def test_session_stutter(tmp):
    p, m = cluster(tmp)
    stutter = mp.Stutter(m, period=0.2, pause=(0.03, 0.08)).start()
    try:
        rc, s, err = session_check(tmp, p, m, seed=11)
    finally:
        pauses = stutter.stop()
    print("mirror stopped %d times" % pauses, flush=True)
    assert pauses >= 3, "the mirror hardly stuttered (%d pauses)" % pauses
    check(rc, s, err)
    # The mirror is whole afterwards (it was only ever paused).
    m.wait_caught_up(p, timeout=60)
    m.stop()
    p.stop()


def test_session_fallbacks(tmp):
    p, m = cluster(tmp)
    stutter = mp.Stutter(m, period=0.2, pause=(0.03, 0.08), seed=2).start()
    try:
        rc, s, err = session_check(tmp, p, m, seed=13,
                                   extra=["--read-deadline-ms", "0", "--probe-ms", "20"])
    finally:
        stutter.stop()
    check(rc, s, err)
    assert s["primary_reads"] > 0 and s["fallbacks"] > 0, (
        "no read fell back to the primary: %r" % s)
    m.wait_caught_up(p, timeout=60)
    m.stop()
    p.stop()


def test_session_steady(tmp):
    p, m = cluster(tmp)
    rc, s, err = session_check(tmp, p, m, seed=12)
    check(rc, s, err)
    # With nothing in the way, the mirror serves the bulk of the reads.
    assert s["mirror_reads"] > s["primary_reads"], s
    m.wait_caught_up(p, timeout=60)
    m.stop()
    p.stop()


if __name__ == "__main__":
    mp.main(globals())
