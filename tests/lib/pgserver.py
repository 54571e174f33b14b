#!/usr/bin/python3
"""A throw-away PostgreSQL server for tests and benchmarks (stdlib only).

    with PgServer() as pg:
        run_tests(pg.url)        # postgres://postgres@127.0.0.1:PORT/mirrorplane

    with PgServer() as pg, PgServer(standby_of=pg) as hot:
        ...                      # hot.url: a hot standby streaming from pg

CLI:
    pgserver.py run [-c KEY=VALUE]... -- CMD ARGS...
        starts a server, runs CMD with MP_TEST_PG_URL set, stops the server
        and exits with CMD's status. Without PostgreSQL binaries CMD runs
        without MP_TEST_PG_URL (a warning says so) unless --require is given.
    pgserver.py start --dir DIR [-c KEY=VALUE]...
        starts a server in DIR (created), prints the URL, writes DIR/url and
        leaves the server running.
    pgserver.py stop --dir DIR
        stops the server started in DIR and removes DIR.

The server lives in a temporary directory: data in DIR/data, the unix socket
in DIR itself, TCP on 127.0.0.1 and a free port, trust authentication for
user postgres. initdb refuses to run as root, so as root the directory
belongs to user postgres and every server binary runs through
`runuser -u postgres --`.

A standby (standby_of=PRIMARY) is made by `pg_basebackup -R -X stream` from
the running PRIMARY instead of initdb, and runs as a hot standby with the
default asynchronous streaming replication.
"""

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

DATABASE = "mirrorplane"
MARKER = ".pgserver"


class PgServerError(Exception):
    pass


def bindir():
    """The server binaries' directory, which is not on PATH on Debian."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        raise PgServerError("pg_config not found (install postgresql and libpq-dev)")
    out = subprocess.run([pg_config, "--bindir"], check=True, capture_output=True, text=True)
    path = out.stdout.strip()
    # Debian's pg_config (from libpq-dev) may point at /usr/bin, which lacks
    # initdb: look in the versioned server directories too.
    candidates = [path]
    root = "/usr/lib/postgresql"
    if os.path.isdir(root):
        for v in sorted(os.listdir(root), key=lambda s: int(s) if s.isdigit() else 0,
                        reverse=True):
            candidates.append(os.path.join(root, v, "bin"))
    for c in candidates:
        if os.path.exists(os.path.join(c, "initdb")) and os.path.exists(os.path.join(c, "pg_ctl")):
            return c
    raise PgServerError("initdb not found in %s" % ", ".join(candidates))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """Start with start() or a with-block; url is valid while it runs.

    options: extra postgresql.conf settings, e.g. {"fsync": "off"}.
    directory: where to put the server (created; removed by stop() only if
    this object created it or it holds a server started by this module).
    standby_of: a running PgServer; this one becomes its hot standby (a base
    backup of it, streaming from it). Stop the standby before the primary.
    """

    def __init__(self, options=None, directory=None, log=sys.stderr, standby_of=None):
        self.options = dict(options or {})
        self.standby_of = standby_of
        self.dir = directory
        self.port = None
        self.url = None
        self.log = log
        self._bindir = None
        self._as_postgres = os.geteuid() == 0
        self._running = False

    # -- helpers -------------------------------------------------------
    def _cmd(self, argv):
        if self._as_postgres:
            return ["runuser", "-u", "postgres", "--"] + argv
        return argv

    def _run(self, argv, what):
        # cwd=self.dir: as user postgres the caller's cwd may be unreadable.
        p = subprocess.run(self._cmd(argv), cwd=self.dir, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            raise PgServerError("%s failed (exit %d):\n%s" % (what, p.returncode, p.stdout))
        return p.stdout

    def _datadir(self):
        return os.path.join(self.dir, "data")

    def _write_conf(self):
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "'%s'" % self.dir,
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        if self.standby_of is not None:
            # What pg_basebackup -R wrote (primary_conninfo) is kept; the
            # rest of the primary's settings it copied are replaced.
            for line in self._read_auto_conf():
                key, sep, value = line.partition("=")
                if sep and key.strip() in ("primary_conninfo", "primary_slot_name"):
                    conf[key.strip()] = value.strip()
            conf["hot_standby"] = "on"
        for k, v in self.options.items():
            v = str(v)
            if not (v.startswith("'") or v.replace(".", "", 1).isdigit()):
                v = "'%s'" % v.replace("'", "''")
            conf[k] = v
        # postgresql.auto.conf wins over postgresql.conf; ALTER SYSTEM would
        # rewrite it anyway.
        with open(os.path.join(self._datadir(), "postgresql.auto.conf"), "w") as f:
            f.write("# written by pgserver.py\n")
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))

    def _read_auto_conf(self):
        try:
            with open(os.path.join(self._datadir(), "postgresql.auto.conf")) as f:
                return [l.strip() for l in f if l.strip() and not l.startswith("#")]
        except OSError:
            return []

    def _make_datadir(self):
        if self.standby_of is None:
            self._run([os.path.join(self._bindir, "initdb"), "-D", self._datadir(),
                       "--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8",
                       "--locale=C"], "initdb")
            return
        if not self.standby_of.url:
            raise PgServerError("standby_of: the primary is not running")
        # -R: standby.signal and primary_conninfo; initdb's pg_hba.conf
        # (-A trust) already lets 127.0.0.1 connect for replication.
        self._run([os.path.join(self._bindir, "pg_basebackup"), "-h", "127.0.0.1", "-p",
                   str(self.standby_of.port), "-U", "postgres", "-D", self._datadir(),
                   "-R", "-X", "stream", "-c", "fast", "--no-sync"], "pg_basebackup")

    # -- lifecycle -----------------------------------------------------
    def start(self):
        self._bindir = bindir()
        if self._as_postgres and shutil.which("runuser") is None:
            raise PgServerError("running as root needs runuser to drop to user postgres")
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="mp-pg-")
        else:
            os.makedirs(self.dir, exist_ok=True)
            # stop() removes the directory: never take over one in use.
            if os.listdir(self.dir):
                raise PgServerError("%s is not empty" % self.dir)
        self.dir = os.path.abspath(self.dir)
        with open(os.path.join(self.dir, MARKER), "w") as f:
            f.write("%d\n" % os.getpid())
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o700)
        try:
            self._make_datadir()
            # A free port can be taken between the probe and the bind: retry.
            for attempt in range(5):
                self.port = free_port()
                self._write_conf()
                try:
                    self._run([os.path.join(self._bindir, "pg_ctl"), "-D", self._datadir(),
                               "-l", os.path.join(self.dir, "server.log"), "-w", "-t", "60",
                               "start"], "pg_ctl start")
                    self._running = True
                    break
                except PgServerError:
                    if attempt == 4 or "could not bind" not in self.server_log():
                        raise
            if self.standby_of is None:  # a standby has the primary's databases
                self._run([os.path.join(self._bindir, "createdb"), "-h", self.dir, "-p",
                           str(self.port), "-U", "postgres", DATABASE], "createdb")
        except BaseException:
            self.stop()
            raise
        self.url = "postgres://postgres@127.0.0.1:%d/%s" % (self.port, DATABASE)
        return self.url

    def server_log(self):
        try:
            with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, remove=True):
        if self.dir is None:
            return
        if self._running or os.path.exists(os.path.join(self._datadir(), "postmaster.pid")):
            try:
                self._run([os.path.join(self._bindir or bindir(), "pg_ctl"), "-D",
                           self._datadir(), "-m", "fast", "-w", "-t", "60", "stop"],
                          "pg_ctl stop")
            except PgServerError as e:
                if os.path.exists(os.path.join(self._datadir(), "postmaster.pid")):
                    print("pgserver: %s" % e, file=self.log)
            self._running = False
        if remove and os.path.exists(os.path.join(self.dir, MARKER)):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.url = None

    def __enter__(self):
        # A SIGTERM would otherwise end Python without running __exit__ and
        # leave the server behind. Handlers the program set are kept.
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


def _parse_options(items):
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit("pgserver: -c wants KEY=VALUE, got %r" % item)
        options[key] = value
    return options


def cmd_run(args):
    cmd = args.cmd
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise SystemExit("pgserver: run needs a command after --")
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _raise_on_signal)
    server = PgServer(_parse_options(args.c))
    env = dict(os.environ)
    child = None
    try:
        try:
            env["MP_TEST_PG_URL"] = server.start()
        except PgServerError as e:
            if args.require or "not found" not in str(e):
                print("pgserver: %s" % e, file=sys.stderr)
                return 1
            print("pgserver: %s; running without MP_TEST_PG_URL" % e, file=sys.stderr)
            env.pop("MP_TEST_PG_URL", None)
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
    server = PgServer(_parse_options(args.c), directory=args.dir)
    try:
        url = server.start()
    except PgServerError as e:
        print("pgserver: %s" % e, file=sys.stderr)
        return 1
    with open(os.path.join(server.dir, "url"), "w") as f:
        f.write(url + "\n")
    print(url)
    return 0


def cmd_stop(args):
    d = os.path.abspath(args.dir)
    if not os.path.exists(os.path.join(d, MARKER)):
        print("pgserver: %s was not made by pgserver.py start" % d, file=sys.stderr)
        return 1
    server = PgServer(directory=d)
    server._running = True
    server.stop()
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description="Throw-away PostgreSQL server for tests.")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="start, run CMD with MP_TEST_PG_URL, stop")
    r.add_argument("-c", action="append", metavar="KEY=VALUE", help="postgresql.conf setting")
    r.add_argument("--require", action="store_true",
                   help="fail instead of running CMD without a server when PostgreSQL is absent")
    r.add_argument("cmd", nargs=argparse.REMAINDER)
    s = sub.add_parser("start", help="start a server in DIR and leave it running")
    s.add_argument("--dir", required=True)
    s.add_argument("-c", action="append", metavar="KEY=VALUE", help="postgresql.conf setting")
    t = sub.add_parser("stop", help="stop the server in DIR and remove DIR")
    t.add_argument("--dir", required=True)
    args = ap.parse_args(argv)
    return {"run": cmd_run, "start": cmd_start, "stop": cmd_stop}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
