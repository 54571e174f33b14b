#!/usr/bin/python3
"""A throw-away S3-compatible server (s3rver) for tests and benchmarks (stdlib only).

    with S3Server(buckets=["mp-test"]) as s3:
        run_tests(s3.endpoint)   # http://127.0.0.1:PORT, credentials S3RVER / S3RVER

CLI:
    s3server.py run [--bucket NAME]... -- CMD ARGS...
        starts a server, runs CMD with MP_TEST_S3_ENDPOINT (and MP_TEST_S3_BUCKET, the first
        --bucket) set, stops the server and exits with CMD's status. Without node and npm CMD
        runs without MP_TEST_S3_ENDPOINT (a message says so) unless --require is given.
    s3server.py start --dir DIR [--bucket NAME]...
        starts a server in DIR (created), prints the endpoint, writes DIR/endpoint and DIR/pid
        and leaves the server running.
    s3server.py stop --dir DIR
        stops the server started in DIR (by its PID) and removes DIR.

s3rver 3.7.1 is installed once with npm into ~/.cache/mirrorplane/s3rver (or
$MP_S3RVER_CACHE). It listens on 127.0.0.1 and a free port, keeps its data in DIR/data, does
not check signatures and accepts the access key S3RVER with the secret S3RVER. Buckets are
addressed path-style (--no-vhost-buckets). Node runs with --openssl-legacy-provider because
s3rver's ListObjectsV2 continuation tokens use DES (a 500 on every truncated listing otherwise).
"""

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

VERSION = "3.7.1"
MARKER = ".s3server"
ACCESS_KEY = SECRET_KEY = "S3RVER"


class S3ServerError(Exception):
    pass


def cache_dir():
    return os.environ.get("MP_S3RVER_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "mirrorplane", "s3rver"))


def install(log=sys.stderr):
    """Returns the path of s3rver.js, installing s3rver with npm if needed."""
    d = cache_dir()
    script = os.path.join(d, "node_modules", "s3rver", "bin", "s3rver.js")
    if os.path.exists(script):
        return script
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise S3ServerError("%s not found (install nodejs and npm)" % tool)
    os.makedirs(d, exist_ok=True)
    print("s3server: installing s3rver@%s into %s" % (VERSION, d), file=log)
    p = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "s3rver@" + VERSION],
                       cwd=d, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0 or not os.path.exists(script):
        raise S3ServerError("npm install s3rver@%s failed (exit %d):\n%s"
                            % (VERSION, p.returncode, p.stdout))
    return script


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """Start with start() or a with-block; endpoint is valid while it runs.

    buckets: names to create once the server answers.
    directory: where to put the server (created; removed by stop() only if it holds a server
    started by this module).
    """

    def __init__(self, buckets=(), directory=None, log=sys.stderr):
        self.buckets = list(buckets)
        self.dir = directory
        self.port = None
        self.endpoint = None
        self.pid = None
        self.log = log
        self._proc = None

    def _request(self, method, path, timeout=2):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, headers={"Content-Length": "0"})
            r = conn.getresponse()
            r.read()
            return r.status
        finally:
            conn.close()

    def _wait_ready(self, deadline):
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                return False
            try:
                self._request("GET", "/")
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def start(self):
        script = install(self.log)
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="mp-s3-")
        else:
            os.makedirs(self.dir, exist_ok=True)
            if os.listdir(self.dir):
                raise S3ServerError("%s is not empty" % self.dir)
        self.dir = os.path.abspath(self.dir)
        with open(os.path.join(self.dir, MARKER), "w") as f:
            f.write("%d\n" % os.getpid())
        data = os.path.join(self.dir, "data")
        os.makedirs(data, exist_ok=True)
        try:
            # A free port can be taken between the probe and the bind: retry.
            for attempt in range(5):
                self.port = free_port()
                logf = open(os.path.join(self.dir, "server.log"), "ab")
                self._proc = subprocess.Popen(
                    # s3rver makes ListObjectsV2 continuation tokens with DES, which
                    # OpenSSL 3 only has in its legacy provider: without it every
                    # truncated listing is a 500 InternalError.
                    ["node", "--openssl-legacy-provider", script, "-d", data, "-a", "127.0.0.1", "-p", str(self.port),
                     "--no-vhost-buckets", "--silent"],
                    cwd=self.dir, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                    start_new_session=True)
                logf.close()
                self.pid = self._proc.pid
                if self._wait_ready(time.monotonic() + 30):
                    break
                self._kill()
                if attempt == 4:
                    raise S3ServerError("s3rver did not start:\n%s" % self.server_log())
            with open(os.path.join(self.dir, "pid"), "w") as f:
                f.write("%d\n" % self.pid)
            for b in self.buckets:
                status = self._request("PUT", "/" + b)
                if status not in (200, 409):
                    raise S3ServerError("creating bucket %s: HTTP %d" % (b, status))
        except BaseException:
            self.stop()
            raise
        self.endpoint = "http://127.0.0.1:%d" % self.port
        return self.endpoint

    def server_log(self):
        try:
            with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _kill(self):
        """Stops the server by its PID: SIGTERM, then SIGKILL after 5 s."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        elif self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(self.pid, 0)
                    time.sleep(0.05)
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._proc = None
        self.pid = None

    def stop(self, remove=True):
        if self.dir is None:
            return
        self._kill()
        if remove and os.path.exists(os.path.join(self.dir, MARKER)):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.endpoint = None

    def __enter__(self):
        self._old_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(s) in (signal.SIG_DFL, None):
                    self._old_handlers[s] = signal.signal(s, _raise_on_signal)
        try:
            self.start()
        except BaseException:
            self._restore_handlers()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            self._restore_handlers()
        return False

    def _restore_handlers(self):
        for s, h in self._old_handlers.items():
            signal.signal(s, h)
        self._old_handlers = {}


class _Terminated(BaseException):
    pass


def _raise_on_signal(signum, frame):
    raise _Terminated(signum)


def cmd_run(args):
    cmd = args.cmd
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise SystemExit("s3server: run needs a command after --")
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _raise_on_signal)
    server = S3Server(buckets=args.bucket or [])
    env = dict(os.environ)
    child = None
    try:
        try:
            env["MP_TEST_S3_ENDPOINT"] = server.start()
            if args.bucket:
                env["MP_TEST_S3_BUCKET"] = args.bucket[0]
        except S3ServerError as e:
            if args.require or "not found" not in str(e):
                print("s3server: %s" % e, file=sys.stderr)
                return 1
            print("s3server: SKIP S3 tests: %s; running without MP_TEST_S3_ENDPOINT" % e,
                  file=sys.stderr)
            env.pop("MP_TEST_S3_ENDPOINT", None)
            env.pop("MP_TEST_S3_BUCKET", None)
        child = subprocess.Popen(cmd, env=env)
        return child.wait()
    except _Terminated as t:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return 128 + t.args[0]
    finally:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        server.stop()


def cmd_start(args):
    server = S3Server(buckets=args.bucket or [], directory=args.dir)
    try:
        endpoint = server.start()
    except S3ServerError as e:
        print("s3server: %s" % e, file=sys.stderr)
        return 1
    with open(os.path.join(server.dir, "endpoint"), "w") as f:
        f.write(endpoint + "\n")
    print(endpoint)
    return 0


def cmd_stop(args):
    d = os.path.abspath(args.dir)
    if not os.path.exists(os.path.join(d, MARKER)):
        print("s3server: %s was not made by s3server.py start" % d, file=sys.stderr)
        return 1
    server = S3Server(directory=d)
    try:
        with open(os.path.join(d, "pid")) as f:
            server.pid = int(f.read().strip())
    except (OSError, ValueError):
        server.pid = None
    server.stop()
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description="Throw-away S3 server (s3rver) for tests.")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="start, run CMD with MP_TEST_S3_ENDPOINT, stop")
    r.add_argument("--bucket", action="append", help="bucket to create")
    r.add_argument("--require", action="store_true",
                   help="fail instead of running CMD without a server when node/npm are absent")
    r.add_argument("cmd", nargs=argparse.REMAINDER)
    s = sub.add_parser("start", help="start a server in DIR and leave it running")
    s.add_argument("--dir", required=True)
    s.add_argument("--bucket", action="append", help="bucket to create")
    t = sub.add_parser("stop", help="stop the server in DIR and remove DIR")
    t.add_argument("--dir", required=True)
    args = ap.parse_args(argv)
    return {"run": cmd_run, "start": cmd_start, "stop": cmd_stop}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
