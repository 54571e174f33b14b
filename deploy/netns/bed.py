#!/usr/bin/python3
"""The multi-site test bed in network namespaces (stdlib + PyYAML).

    bed.py up [TOPOLOGY.yaml] [--foreground]   build it (deploy/netns/topology.yaml by default)
    bed.py down [--state-dir DIR]              stop and remove everything `up` made
    bed.py partition|heal REGION               drop (or stop dropping) a region's WAN traffic
    bed.py relay REGION[-HUB] COMMAND [ARG]    send a command to a link's mp-wanrelay
    bed.py fill|free REGION                    fill the mirror's disk of a region (or free it)
    bed.py exec REGION CMD...                  run CMD in a region's namespace
    bed.py status                              what runs where

Layout: a namespace PREFIX-wan holds nothing but the links: one veth pair per
region (PREFIX-wan's end w-REGION at SUBNET.i.1, the region's eth0 at
SUBNET.i.2), no forwarding, and an mp-wanrelay per inter-region path
listening at SUBNET.i.1 (the region's own side). A region reaches the
primary region only through its relay, which holds every byte for the link's
one-way delay (plus jitter) and limits its rate; a region behind a hub reaches
the hub's mirror through a relay of its own. A partition is an nftables set of
interfaces in PREFIX-wan whose traffic is dropped (in and out), so every
connection through the cut region hangs as it would on a real WAN.

Every process is started with `ip netns exec` (which execs, so its PID is
the daemon's) in a new session, and written to STATE_DIR/state.json with the
namespaces and mounts as soon as it exists; `down` (and any failure or signal
during `up`) stops the processes by PID (SIGTERM, SIGKILL after 5 s), unmounts
and deletes the namespaces, whatever was reached.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_TOPOLOGY = os.path.join(ROOT, "deploy", "netns", "topology.yaml")

PRIMARY_PORT, PRIMARY_ADMIN = 7100, 7180
MIRROR_PORT, MIRROR_ADMIN = 7200, 7280
CACHE_PORT, CACHE_ADMIN = 7400, 7480
S3_PORT = 9000
S3_BUCKET = "origin"


class BedError(Exception):
    pass


def run(argv, check=True, input=None, quiet=False):
    p = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise BedError("%s: exit %d: %s" % (" ".join(argv), p.returncode,
                                            (p.stderr or p.stdout).strip()))
    return p


def parse_size(s):
    s = str(s).strip()
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "k": 1000, "M": 10**6, "G": 10**9}
    for u, m in units.items():
        if s.endswith(u):
            return int(float(s[:-len(u)]) * m)
    return int(s)


def load_topology(path):
    with open(path) as f:
        t = yaml.safe_load(f) or {}
    if not isinstance(t, dict):
        raise BedError("%s: expected a mapping" % path)
    topo = {
        "prefix": str(t.get("prefix", "mpn")),
        "subnet": str(t.get("subnet", "10.77")),
        "state_dir": str(t.get("state_dir", "var/netns")),
        "primary": dict(region="pri", store="sqlite", origin="s3"),
        "regions": [],
    }
    topo["primary"].update(t.get("primary") or {})
    if len(topo["prefix"]) > 6 or not topo["prefix"].isalnum():
        raise BedError("prefix '%s': 1..6 letters or digits" % topo["prefix"])
    if topo["primary"]["origin"] not in ("s3", "file"):
        raise BedError("primary.origin: s3 or file")
    if topo["primary"]["store"] != "sqlite":
        raise BedError("primary.store: only sqlite is built by this bed so far")
    names = {topo["primary"]["region"]}
    for i, r in enumerate(t.get("regions") or [], start=1):
        reg = dict(name=None, rtt_ms=40, jitter_ms=0, rate=0, caches=2, disk="256MiB",
                   via=None, hub_rtt_ms=40)
        unknown = set(r) - set(reg)
        if unknown:
            raise BedError("region %d: unknown key(s) %s" % (i, ", ".join(sorted(unknown))))
        reg.update(r)
        n = reg["name"]
        if not n or not str(n).isalnum() or len(str(n)) > 8 or n in names:
            raise BedError("region %d: name '%s': 1..8 letters or digits, unique" % (i, n))
        names.add(n)
        for k in ("rtt_ms", "jitter_ms", "hub_rtt_ms", "caches"):
            if not isinstance(reg[k], int) or reg[k] < 0 or reg[k] > 100000:
                raise BedError("region %s: %s: a whole number" % (n, k))
        reg["index"] = i
        topo["regions"].append(reg)
    if not topo["regions"]:
        raise BedError("%s: no regions" % path)
    byname = {r["name"]: r for r in topo["regions"]}
    for r in topo["regions"]:
        if r["via"] is not None:
            hub = byname.get(r["via"])
            if hub is None or hub["via"] is not None or hub is r:
                raise BedError("region %s: via '%s' is not a region of its own" %
                               (r["name"], r["via"]))
    if len(topo["regions"]) > 200:
        raise BedError("too many regions")
    return topo


class Bed:
    """One test bed; its state lives in STATE_DIR/state.json."""

    def __init__(self, topo, build=None):
        self.topo = topo
        self.prefix = topo["prefix"]
        self.state_dir = os.path.join(ROOT, topo["state_dir"]) \
            if not os.path.isabs(topo["state_dir"]) else topo["state_dir"]
        self.build = build or os.environ.get("MP_BUILD", os.path.join(ROOT, "build"))
        self.state = {"topology": topo, "namespaces": [], "mounts": [], "procs": {},
                      "build": self.build}

    # ---- names and addresses ----
    def ns(self, region):
        return "%s-%s" % (self.prefix, region)

    @property
    def wan(self):
        return self.ns("wan")

    def index(self, region):
        if region == self.topo["primary"]["region"]:
            return 0
        for r in self.topo["regions"]:
            if r["name"] == region:
                return r["index"]
        raise BedError("no region '%s'" % region)

    def host(self, region):
        return "%s.%d.2" % (self.topo["subnet"], self.index(region))

    def gateway(self, region):
        """The region's own end of the WAN, where its relays listen."""
        return "%s.%d.1" % (self.topo["subnet"], self.index(region))

    def region(self, name):
        for r in self.topo["regions"]:
            if r["name"] == name:
                return r
        raise BedError("no region '%s'" % name)

    @property
    def primary_region(self):
        return self.topo["primary"]["region"]

    def regions(self):
        return [r["name"] for r in self.topo["regions"]]

    def path(self, *parts):
        return os.path.join(self.state_dir, *parts)

    def primary_addr(self, region):
        """The primary as seen from region."""
        if region == self.primary_region:
            return "%s:%d" % (self.host(region), PRIMARY_PORT)
        return "%s:%d" % (self.gateway(region), PRIMARY_PORT)

    def mirror_addr(self, region):
        return "%s:%d" % (self.host(region), MIRROR_PORT)

    def site_config(self, region):
        return self.path("%s.yaml" % region)

    def client_env(self, region):
        """env(1) words giving a libmirrorplane program without a site
        configuration the region's way to the origin bucket."""
        if self.topo["primary"]["origin"] != "s3":
            return []
        host = self.host(region) if region == self.primary_region else self.gateway(region)
        return ["env", "AWS_ENDPOINT_URL=http://%s:%d" % (host, S3_PORT),
                "AWS_ACCESS_KEY_ID=S3RVER", "AWS_SECRET_ACCESS_KEY=S3RVER",
                "AWS_REGION=us-east-1"]

    def relay_name(self, region, hub=None):
        return "relay-%s" % region if hub is None else "relay-%s-%s" % (region, hub)

    # ---- state ----
    def save(self):
        os.makedirs(self.state_dir, exist_ok=True)
        tmp = self.path("state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, self.path("state.json"))

    @classmethod
    def load(cls, state_dir):
        with open(os.path.join(state_dir, "state.json")) as f:
            st = json.load(f)
        b = cls(st["topology"], build=st.get("build"))
        b.state_dir = state_dir
        b.state = st
        return b

    # ---- processes ----
    def exec_argv(self, region, argv):
        return ["ip", "netns", "exec", self.ns(region)] + list(argv)

    def spawn(self, name, region, argv, wait_http=None, env=None):
        """Starts argv in region's namespace, logging to STATE_DIR/NAME.log."""
        log = self.path(name + ".log")
        with open(log, "ab") as lf:
            p = subprocess.Popen(self.exec_argv(region, argv), stdin=subprocess.DEVNULL,
                                 stdout=lf, stderr=lf, start_new_session=True,
                                 cwd=self.state_dir, env=env)
        self.state["procs"][name] = {"pid": p.pid, "region": region, "argv": list(argv),
                                     "log": log, "exe": os.path.basename(argv[0])}
        self.save()
        self._popen = getattr(self, "_popen", {})
        self._popen[name] = p
        if wait_http is not None:
            self.wait_http(name, region, wait_http)
        return p.pid

    def alive(self, name):
        info = self.state["procs"].get(name)
        if info is None:
            return False
        p = getattr(self, "_popen", {}).get(name)
        if p is not None:
            return p.poll() is None
        return self._is_ours(info)

    @staticmethod
    def _is_ours(info):
        """The PID still runs the program we started (not a reused PID)."""
        try:
            with open("/proc/%d/cmdline" % info["pid"], "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return False
        exe = info["exe"].encode()
        return any(os.path.basename(a) == exe for a in argv[:3])

    def wait_http(self, name, region, url, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.http(region, url, timeout=1) is not None:
                return
            if not self.alive(name):
                raise BedError("%s exited at start:\n%s" % (name, self.tail(name)))
            time.sleep(0.1)
        raise BedError("%s did not answer %s in %d s:\n%s" % (name, url, timeout,
                                                              self.tail(name)))

    def tail(self, name, n=20):
        try:
            with open(self.state["procs"][name]["log"], errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except (OSError, KeyError):
            return ""

    def http(self, region, url, timeout=2, method="GET"):
        """GET url from inside region's namespace; the body, or None."""
        p = subprocess.run(self.exec_argv(region, ["curl", "-fsS", "-m", str(timeout), "-X",
                                                   method, url]),
                           capture_output=True)
        return p.stdout if p.returncode == 0 else None

    def status_json(self, region, admin):
        body = self.http(region, "http://%s/status" % admin)
        return json.loads(body) if body else None

    def send_signal(self, name, sig):
        info = self.state["procs"][name]
        if self.alive(name):
            os.kill(info["pid"], sig)

    def stop(self, name, timeout=5.0, sig=signal.SIGTERM):
        info = self.state["procs"].get(name)
        if info is None:
            return
        p = getattr(self, "_popen", {}).get(name)
        if self.alive(name):
            try:
                os.kill(info["pid"], signal.SIGCONT)
                os.kill(info["pid"], sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.alive(name):
                if p is not None:
                    try:
                        p.wait(0.05)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.05)
            if self.alive(name):
                os.kill(info["pid"], signal.SIGKILL)
                if p is not None:
                    p.wait()
                else:
                    time.sleep(0.2)
        elif p is not None:
            p.poll()
        del self.state["procs"][name]
        getattr(self, "_popen", {}).pop(name, None)
        self.save()

    def restart(self, name, wait_http=None):
        info = dict(self.state["procs"][name])
        self.stop(name)
        return self.spawn(name, info["region"], info["argv"], wait_http=wait_http)

    def kill9(self, name):
        info = self.state["procs"][name]
        p = getattr(self, "_popen", {}).get(name)
        os.kill(info["pid"], signal.SIGKILL)
        if p is not None:
            p.wait()
        return info

    # ---- the network ----
    def _add_ns(self, name):
        run(["ip", "netns", "add", name])
        self.state["namespaces"].append(name)
        self.save()
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _link_region(self, region):
        i = self.index(region)
        a, b = "%s-w%d" % (self.prefix, i), "%s-r%d" % (self.prefix, i)
        run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        try:
            run(["ip", "link", "set", a, "netns", self.wan, "name", "w-" + region])
            run(["ip", "link", "set", b, "netns", self.ns(region), "name", "eth0"])
        except BedError:
            run(["ip", "link", "del", a], check=False)
            run(["ip", "link", "del", b], check=False)
            raise
        sub = self.topo["subnet"]
        run(["ip", "-n", self.wan, "addr", "add", "%s.%d.1/24" % (sub, i), "dev", "w-" + region])
        run(["ip", "-n", self.wan, "link", "set", "w-" + region, "up"])
        run(["ip", "-n", self.ns(region), "addr", "add", "%s.%d.2/24" % (sub, i), "dev", "eth0"])
        run(["ip", "-n", self.ns(region), "link", "set", "eth0", "up"])

    NFT = """table inet %s {
  set cut { type ifname; }
  chain input { type filter hook input priority 0; policy accept; iifname @cut drop; }
  chain output { type filter hook output priority 0; policy accept; oifname @cut drop; }
  chain forward { type filter hook forward priority 0; policy drop; }
}
"""

    def _nft(self, script):
        run(["ip", "netns", "exec", self.wan, "nft", "-f", "-"], input=script)

    def partition(self, region):
        """Drops every packet of region's WAN link (both ways)."""
        self.index(region)
        self._nft("add element inet %s cut { \"w-%s\" }\n" % (self.prefix, region))

    def heal(self, region):
        self.index(region)
        self._nft("delete element inet %s cut { \"w-%s\" }\n" % (self.prefix, region))

    def partitioned(self):
        p = run(["ip", "netns", "exec", self.wan, "nft", "-j", "list", "set", "inet",
                 self.prefix, "cut"])
        for item in json.loads(p.stdout).get("nftables", []):
            if "set" in item:
                return [e[2:] for e in item["set"].get("elem", [])]
        return []

    def relay(self, link, *command):
        """Sends one command to link's relay ("eu", or "ap-eu" for a hub path);
        returns its answer's fields."""
        name = "relay-" + link
        if name not in self.state["procs"]:
            raise BedError("no relay '%s'" % link)
        p = run([os.path.join(self.build, "tests", "tools", "mp-wanrelay"), "ctl",
                 self.path(name + ".ctl")] + [str(c) for c in command])
        return dict(kv.split("=", 1) for kv in p.stdout.split()[1:])

    def add_path(self, name, from_region, maps, delay_ms, jitter_ms=0):
        """One more relayed path (benchmarks: a PostgreSQL standby's stream, a
        measuring side channel): maps are (port at from_region's gateway,
        to_region, port there); its relay is "relay-NAME" with one-way
        delay_ms."""
        relay = os.path.join(self.build, "tests", "tools", "mp-wanrelay")
        m = ["%s:%d=%s:%d" % (self.gateway(from_region), lp, self.host(to), tp)
             for lp, to, tp in maps]
        self._relay(relay, "relay-" + name, m, 2 * delay_ms, jitter_ms, 0)
        return ["%s:%d" % (self.gateway(from_region), lp) for lp, _, _ in maps]

    def links(self):
        return [n[len("relay-"):] for n in self.state["procs"] if n.startswith("relay-")]

    # ---- disks ----
    def _mount_disk(self, region, size):
        d = self.path(region, "mirror")
        os.makedirs(d, exist_ok=True)
        run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0755" % size, "mp-" + region, d])
        self.state["mounts"].append(d)
        self.save()

    def fill(self, region, keep_bytes=0):
        """Fills the mirror's disk of region but keep_bytes."""
        d = self.path(region, "mirror")
        st = os.statvfs(d)
        free = st.f_bavail * st.f_frsize - keep_bytes
        with open(os.path.join(d, "filler"), "ab") as f:
            chunk = b"\0" * (1 << 20)
            try:
                while free > 0:
                    n = f.write(chunk[:min(len(chunk), free)])
                    free -= n
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                pass
        return os.statvfs(d).f_bavail * st.f_frsize

    def free(self, region):
        try:
            os.unlink(self.path(region, "mirror", "filler"))
        except FileNotFoundError:
            pass

    # ---- up and down ----
    def up(self):
        if os.path.exists(self.path("state.json")):
            raise BedError("%s exists: a bed is up (deploy/netns/down first)" %
                           self.path("state.json"))
        for exe in ("primary/mp-primary", "mirror/mp-mirror", "mirror/mp-cache",
                    "tests/tools/mp-wanrelay", "client/mp"):
            if not os.access(os.path.join(self.build, exe), os.X_OK):
                raise BedError("%s/%s missing: build first (meson compile -C build)" %
                               (self.build, exe))
        have = run(["ip", "netns", "list"]).stdout.split()
        if self.wan in have:
            raise BedError("namespace %s exists: deploy/netns/down first" % self.wan)
        # A fresh bed: data of an earlier one (removed by down) goes.
        if os.path.isdir(self.state_dir):
            for dirpath, dirs, _ in os.walk(self.state_dir):
                for d in dirs:
                    if os.path.ismount(os.path.join(dirpath, d)):
                        raise BedError("%s is still mounted" % os.path.join(dirpath, d))
            subprocess.run(["rm", "-rf", self.state_dir], check=True)
        os.makedirs(self.state_dir, exist_ok=True)
        self.save()
        t0 = time.monotonic()
        pri = self.primary_region
        self._add_ns(self.wan)
        self._nft(self.NFT % self.prefix)
        for region in [pri] + self.regions():
            self._add_ns(self.ns(region))
            self._link_region(region)
        self._start_relays()
        self._start_primary_region()
        for r in self.topo["regions"]:
            if r["via"] is None:
                self._start_region(r)
        for r in self.topo["regions"]:
            if r["via"] is not None:
                self._start_region(r)
        self.wait_converged(timeout=60)
        self.state["up_seconds"] = round(time.monotonic() - t0, 1)
        self.save()

    def _start_relays(self):
        relay = os.path.join(self.build, "tests", "tools", "mp-wanrelay")
        pri = self.primary_region
        s3 = self.topo["primary"]["origin"] == "s3"
        for r in self.topo["regions"]:
            n = r["name"]
            maps = ["%s:%d=%s:%d" % (self.gateway(n), PRIMARY_PORT, self.host(pri),
                                     PRIMARY_PORT)]
            if s3:
                maps.append("%s:%d=%s:%d" % (self.gateway(n), S3_PORT, self.host(pri), S3_PORT))
            self._relay(relay, self.relay_name(n), maps, r["rtt_ms"], r["jitter_ms"], r["rate"])
            if r["via"] is not None:
                hub = r["via"]
                maps = ["%s:%d=%s:%d" % (self.gateway(n), MIRROR_PORT, self.host(hub),
                                         MIRROR_PORT)]
                self._relay(relay, self.relay_name(n, hub), maps, r["hub_rtt_ms"],
                            r["jitter_ms"], r["rate"])

    def _relay(self, exe, name, maps, rtt_ms, jitter_ms, rate):
        argv = [exe, "--control", self.path(name + ".ctl"), "--delay-ms", str(rtt_ms // 2),
                "--jitter-ms", str(jitter_ms), "--rate", str(rate)]
        for m in maps:
            argv += ["--map", m]
        self.spawn(name, "wan", argv)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.path(name + ".ctl")):
            if not self.alive(name) or time.monotonic() > deadline:
                raise BedError("%s did not start:\n%s" % (name, self.tail(name)))
            time.sleep(0.05)

    def _start_primary_region(self):
        pri = self.primary_region
        h = self.host(pri)
        os.makedirs(self.path(pri, "primary"), exist_ok=True)
        if self.topo["primary"]["origin"] == "s3":
            sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
            import s3server
            script = s3server.install()
            data = self.path(pri, "s3")
            os.makedirs(data, exist_ok=True)
            self.spawn("s3", pri, ["node", "--openssl-legacy-provider", script, "-d", data,
                                   "-a", h, "-p", str(S3_PORT), "--no-vhost-buckets",
                                   "--silent"])
            url = "http://%s:%d/" % (h, S3_PORT)
            deadline = time.monotonic() + 30
            while self.http(pri, url, timeout=1) is None:
                if not self.alive("s3") or time.monotonic() > deadline:
                    raise BedError("s3rver did not start:\n%s" % self.tail("s3"))
                time.sleep(0.1)
            if self.http(pri, url + S3_BUCKET, method="PUT") is None:
                raise BedError("could not create bucket %s" % S3_BUCKET)
            origin = "s3://%s/mp" % S3_BUCKET
        else:
            origin = "file://%s" % self.path(pri, "primary", "objects")
        with open(self.path("primary.yaml"), "w") as f:
            f.write("# mp-primary of the netns bed (written by deploy/netns/up)\n"
                    "data_dir: %s\norigin: %s\nlisten: %s:%d\nadmin: %s:%d\n" %
                    (self.path(pri, "primary"), origin, h, PRIMARY_PORT, h, PRIMARY_ADMIN))
        self.spawn("primary", pri, [os.path.join(self.build, "primary", "mp-primary"), "-c",
                                    self.path("primary.yaml")],
                   wait_http="http://%s:%d/healthz" % (h, PRIMARY_ADMIN))
        self._write_site_config(pri, mirrors=[], primary=self.primary_addr(pri),
                                s3_host=h)

    def _write_site_config(self, region, mirrors, primary, s3_host):
        lines = ["# Site configuration of region %s (written by deploy/netns/up)" % region,
                 "site: %s" % region]
        if mirrors:
            lines.append("mirror: [%s]" % ", ".join(mirrors))
        lines += ["primary: [%s]" % primary, "consistency: session", "timeout: 2s",
                  "session_file: %s" % self.path(region + ".session")]
        if self.topo["primary"]["origin"] == "s3":
            lines += ["buckets:", "  origin:", "    endpoint: http://%s:%d" % (s3_host, S3_PORT),
                      "    access_key: S3RVER", "    secret_key: S3RVER"]
        with open(self.site_config(region), "w") as f:
            f.write("\n".join(lines) + "\n")

    def _start_region(self, r):
        n = r["name"]
        h = self.host(n)
        self._mount_disk(n, parse_size(r["disk"]))
        upstream = [self.primary_addr(n)]
        if r["via"] is not None:
            upstream.insert(0, "%s:%d" % (self.gateway(n), MIRROR_PORT))
        self.spawn("mirror-" + n, n,
                   [os.path.join(self.build, "mirror", "mp-mirror"), "--site", n, "--upstream",
                    ",".join(upstream), "--data-dir", self.path(n, "mirror", "data"),
                    "--listen", "%s:%d" % (h, MIRROR_PORT),
                    "--admin", "%s:%d" % (h, MIRROR_ADMIN)],
                   wait_http="http://%s:%d/healthz" % (h, MIRROR_ADMIN))
        self._write_site_config(n, mirrors=[self.mirror_addr(n)], primary=self.primary_addr(n),
                                s3_host=self.gateway(n))
        for k in range(r["caches"]):
            d = self.path(n, "cache%d" % k)
            os.makedirs(d, exist_ok=True)
            self.spawn("cache-%s-%d" % (n, k), n,
                       [os.path.join(self.build, "mirror", "mp-cache"), "-c",
                        self.site_config(n), "--site", n, "--mirror", self.mirror_addr(n),
                        "--cache-dir", d + ":512MiB", "--listen", "%s:%d" % (h, CACHE_PORT + k),
                        "--admin", "%s:%d" % (h, CACHE_ADMIN + k)],
                       wait_http="http://%s:%d/healthz" % (h, CACHE_ADMIN + k))

    # ---- observation ----
    def primary_version(self):
        st = self.status_json(self.primary_region,
                              "%s:%d" % (self.host(self.primary_region), PRIMARY_ADMIN))
        return None if st is None else st.get("version")

    def mirror_status(self, region):
        return self.status_json(region, "%s:%d" % (self.host(region), MIRROR_ADMIN))

    def mirror_version(self, region):
        st = self.mirror_status(region)
        if st is None:
            return None
        return st.get("applied_version", st.get("version"))

    def wait_converged(self, timeout=60, regions=None):
        """Waits until every mirror applied the primary's version of now;
        returns the seconds it took."""
        t0 = time.monotonic()
        target = self.primary_version()
        if target is None:
            raise BedError("the primary does not answer /status")
        regions = regions or self.regions()
        left = set(regions)
        while left:
            for n in list(left):
                v = self.mirror_version(n)
                if v is not None and v >= target:
                    left.discard(n)
            if not left:
                break
            if time.monotonic() - t0 > timeout:
                raise BedError("not converged after %d s to version %d: %s" % (
                    timeout, target, ", ".join("%s at %s" % (n, self.mirror_version(n))
                                               for n in sorted(left))))
            time.sleep(0.05)
        return time.monotonic() - t0

    def describe(self):
        out = ["netns bed %s (state %s)" % (self.prefix, self.state_dir)]
        pri = self.primary_region
        out.append("  %-4s %-14s primary %s admin http://%s:%d  (clients: %s)" % (
            pri, self.ns(pri), self.primary_addr(pri), self.host(pri), PRIMARY_ADMIN,
            self.site_config(pri)))
        for r in self.topo["regions"]:
            n = r["name"]
            via = " via hub %s (%d ms RTT)" % (r["via"], r["hub_rtt_ms"]) if r["via"] else ""
            out.append("  %-4s %-14s mirror %s, %d cache node(s), %d ms RTT to %s%s  "
                       "(clients: %s)" % (n, self.ns(n), self.mirror_addr(n), r["caches"],
                                          r["rtt_ms"], pri, via, self.site_config(n)))
        out.append("  run a command in a region:  ip netns exec %s build/client/mp -c %s ls /"
                   % (self.ns(self.regions()[0]), self.site_config(self.regions()[0])))
        return "\n".join(out)

    def down(self):
        """Stops and removes everything in the state, whatever was reached."""
        errors = []
        # Daemons first (clients of the relays), relays last.
        names = sorted(self.state["procs"], key=lambda n: (n.startswith("relay-"), n))
        for name in names:
            try:
                self.stop(name)
            except OSError as e:
                errors.append("%s: %s" % (name, e))
        for d in reversed(self.state["mounts"]):
            p = run(["umount", d], check=False)
            if p.returncode != 0 and os.path.ismount(d):
                errors.append("umount %s: %s" % (d, p.stderr.strip()))
        self.state["mounts"] = []
        for ns in reversed(self.state["namespaces"]):
            p = run(["ip", "netns", "del", ns], check=False)
            if p.returncode != 0 and ns in run(["ip", "netns", "list"]).stdout.split():
                errors.append("ip netns del %s: %s" % (ns, p.stderr.strip()))
        self.state["namespaces"] = []
        if errors:
            self.save()
            raise BedError("; ".join(errors))
        os.unlink(self.path("state.json"))


def state_dir_of(topo_path=None):
    topo = load_topology(topo_path or DEFAULT_TOPOLOGY)
    d = topo["state_dir"]
    return d if os.path.isabs(d) else os.path.join(ROOT, d)


class Interrupted(Exception):
    pass


def _raise_interrupted(sig, frame):
    raise Interrupted("signal %d" % sig)


def bring_up(topo_path=None, build=None):
    """Builds a bed; on any failure or SIGINT/SIGTERM removes what it made."""
    bed = Bed(load_topology(topo_path or DEFAULT_TOPOLOGY), build=build)
    old = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        bed.up()
    except BaseException:
        if os.path.exists(bed.path("state.json")):
            try:
                bed.down()
            except BedError as e:
                print("bed: cleaning up: %s" % e, file=sys.stderr)
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return bed


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    cmd, args = argv[0], argv[1:]
    try:
        if cmd == "up":
            fg = "--foreground" in args
            args = [a for a in args if a != "--foreground"]
            bed = bring_up(args[0] if args else None)
            print(bed.describe())
            print("  up in %.1f s; deploy/netns/down removes it" % bed.state["up_seconds"])
            if fg:
                print("Ctrl-C stops everything.")
                old = {s: signal.signal(s, _raise_interrupted)
                       for s in (signal.SIGINT, signal.SIGTERM)}
                try:
                    while True:
                        time.sleep(3600)
                except Interrupted:
                    pass
                finally:
                    for s, h in old.items():
                        signal.signal(s, h)
                    bed.down()
            return 0
        sd = state_dir_of()
        if args[:1] == ["--state-dir"]:
            sd, args = os.path.abspath(args[1]), args[2:]
        if cmd == "down":
            if not os.path.exists(os.path.join(sd, "state.json")):
                print("bed: nothing is up (no %s/state.json)" % sd)
                return 0
            Bed.load(sd).down()
            print("bed: down")
            return 0
        bed = Bed.load(sd)
        if cmd == "partition":
            bed.partition(args[0])
        elif cmd == "heal":
            bed.heal(args[0])
        elif cmd == "relay":
            print(bed.relay(args[0], *args[1:]))
        elif cmd == "fill":
            print("free bytes left: %d" % bed.fill(args[0]))
        elif cmd == "free":
            bed.free(args[0])
        elif cmd == "exec":
            return subprocess.call(bed.exec_argv(args[0], args[1:]), cwd=ROOT)
        elif cmd == "status":
            print(bed.describe())
            print("  partitioned: %s" % (", ".join(bed.partitioned()) or "none"))
            for link in sorted(bed.links()):
                print("  link %-8s %s" % (link, bed.relay(link, "stats")))
            for n in sorted(bed.state["procs"]):
                print("  %-14s pid %-7d %s" % (n, bed.state["procs"][n]["pid"],
                                              "running" if bed.alive(n) else "EXITED"))
        else:
            print("bed: unknown command '%s'" % cmd, file=sys.stderr)
            return 2
    except (BedError, Interrupted, OSError, yaml.YAMLError) as e:
        print("bed: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
