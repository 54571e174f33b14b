#!/usr/bin/python3
"""Configuration: -n checks a file, errors point at FILE:LINE:COL and name the
key, command-line options beat the file, a store of another cluster is
refused, and token create needs a secret."""

import os
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402


def write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_check_good(tmp):
    path = write(tmp, "good.yaml", "\n".join([
        "# a full configuration",
        "cluster_id: prod-1",
        "data_dir: %s" % os.path.join(tmp, "data"),
        "listen: 127.0.0.1:7100",
        "admin: '[::1]:7180'",
        "max_frame_bytes: 64KiB",
        "heartbeat_interval: 250ms",
        "idle_timeout: 5m",
        "log_retention:",
        "  max_versions: 1000",
        "  max_age: 1h",
        "  hard_cap: 5000000",
        "commit:",
        "  max_batch_writes: 512",
        "max_connections: 100",
        "log_level: warn",
        ""]))
    rc, out, err = mp.run_primary(["-n", "-c", path])
    assert rc == 0 and out.strip() == "configuration OK", (rc, out, err)
    rc, out, err = mp.run_primary(["--print-config", "-c", path])
    assert rc == 0 and "max_frame_bytes: 64KiB" in out and "prod-1" in out, (rc, out, err)
    # What --print-config prints reads back.
    again = write(tmp, "again.yaml", out)
    rc, out2, err = mp.run_primary(["-n", "-c", again])
    assert rc == 0 and out2.strip() == "configuration OK", (rc, out2, err)
    # No file at all: the defaults are fine.
    rc, out, err = mp.run_primary(["-n"])
    assert rc == 0 and out.strip() == "configuration OK", (rc, out, err)
    assert not os.path.exists(os.path.join(tmp, "data")), "-n created the data directory"


def test_check_bad(tmp):
    cases = [
        ("listen: 127.0.0.1:7100\nbogus_key: 1\n", 2, "bogus_key"),
        ("log_retention:\n  max_versions: 5\n  max_agee: 1h\n", 3, "max_agee"),
        ("max_frame_bytes: 10\n", 1, "max_frame_bytes"),
        ("max_frame_bytes: 2GiB\n", 1, "max_frame_bytes"),
        ("max_connections: 0\n", 1, "max_connections"),
        ("listen: nowhere\n", 1, "listen"),
        ("\n\nadmin: 127.0.0.1:99999\n", 3, "admin"),
        ("listen: 127.0.0.1:\n", 1, "listen"),
        ("heartbeat_interval: soon\n", 1, "heartbeat_interval"),
        ("log_level: loud\n", 1, "log_level"),
        ("tls:\n  cert: a.pem\n  verify_clients: maybe\n", 3, "verify_clients"),
        ("commit: 5\n", 1, "commit"),
        ("listen: 127.0.0.1:7100\nlisten: 127.0.0.1:7101\n", 2, "listen"),
        ("cluster_id: [a, b]\n", 1, "cluster_id"),
        ("log_level: info\n- item\n", 2, None),
    ]
    for i, (text, line, key) in enumerate(cases):
        path = write(tmp, "bad%d.yaml" % i, text)
        rc, out, err = mp.run_primary(["-n", "-c", path])
        assert rc == 1, "exit %d for %r: %s%s" % (rc, text, out, err)
        assert "configuration OK" not in out
        m = re.search(re.escape(path) + r":(\d+):(\d+): (.*)", err)
        assert m, "no %s:LINE:COL in %r (for %r)" % (path, err, text)
        assert int(m.group(1)) == line, "line %s, expected %d: %r" % (m.group(1), line, err)
        assert int(m.group(2)) >= 1
        if key is not None:
            assert key in m.group(3), "message does not name %r: %r" % (key, err)
    # Errors after loading the file: still a clear message and exit 1.
    for text, want in [("tls:\n  cert: a.pem\n", "tls.cert and tls.key"),
                       ("store: mysql://x\n", "store")]:
        path = write(tmp, "late.yaml", text)
        rc, out, err = mp.run_primary(["-n", "-c", path])
        assert rc == 1 and want in err, (text, rc, err)
    rc, out, err = mp.run_primary(["-n", "-c", os.path.join(tmp, "missing.yaml")])
    assert rc == 1 and "missing.yaml" in err, (rc, err)
    rc, out, err = mp.run_primary(["-n", "--listen", "nowhere"])
    assert rc == 1 and "--listen" in err, (rc, err)
    rc, out, err = mp.run_primary(["-n", "--log-level", "loud"])
    assert rc == 1 and "log" in err and "loud" in err, (rc, err)
    rc, out, err = mp.run_primary(["--no-such-option"])
    assert rc == 2 and "usage" in err, (rc, err)
    rc, out, err = mp.run_primary(["-n", "stray"])
    assert rc == 2 and "stray" in err, (rc, err)


def test_cli_overrides_file(tmp):
    file_port, file_admin = mp.free_port(), mp.free_port()
    file_data = os.path.join(tmp, "file-data")
    cfg = {"listen": "127.0.0.1:%d" % file_port, "admin": "127.0.0.1:%d" % file_admin,
           "data_dir": file_data, "log_level": "info"}
    # Primary passes --listen, --admin and --data-dir on the command line.
    p = mp.Primary(tmp, config=cfg, extra_args=["--log-level", "debug"])
    assert p.port != file_port and p.admin_port != file_admin
    c = p.client()
    c.mkdir("/x")
    for port in (file_port, file_admin):
        s = socket.socket()
        try:
            s.settimeout(2)
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the file's address %d is open" % port
        finally:
            s.close()
    p.wait_log("connection from")  # debug, from the command line
    assert os.path.exists(os.path.join(p.data_dir, "meta.db"))
    assert not os.path.exists(file_data), "the file's data_dir was used"
    # The overrides survive a reload.
    p.signal(__import__("signal").SIGHUP)
    p.wait_log("configuration reloaded")
    mark = len(p.log())
    mp.Client(p.port).close()
    p.wait_log("connection from", since=mark)
    c.close()
    p.stop()
    rc, out, err = mp.run_primary(["--print-config", "-c", p.config_path, "--listen",
                                   "127.0.0.1:1234"])
    assert rc == 0 and re.search(r"^listen: .*127\.0\.0\.1:1234", out, re.M), out


def test_cluster_id_mismatch(tmp):
    data = os.path.join(tmp, "data")
    a = mp.Primary(tmp, config={"cluster_id": "alpha"}, data_dir=data, name="alpha")
    c = a.client()
    assert c.req(mp.VERSION, {})["cluster_id"] == "alpha"
    c.mkdir("/kept")
    c.close()
    a.stop()
    b = mp.Primary(tmp, config={"cluster_id": "bravo"}, data_dir=data, name="bravo",
                   start=False)
    b.spawn()
    rc = b.proc.wait(30)
    text = b.log_since_start()
    assert rc != 0, "a store of cluster alpha was opened as bravo"
    assert "alpha" in text and "bravo" in text, text
    # The store is untouched and still opens as alpha (or with no id given).
    a.start()
    c = a.client()
    assert c.resolve("/kept") and c.req(mp.VERSION, {})["cluster_id"] == "alpha"
    c.close()
    a.stop()
    n = mp.Primary(tmp, data_dir=data, name="any")
    assert n.status()["cluster_id"] == "alpha"
    n.stop()
    # A bad cluster id is refused with its rules.
    bad = mp.Primary(tmp, config={"cluster_id": "no spaces"}, data_dir=os.path.join(tmp, "d2"),
                     name="bad", start=False)
    bad.spawn()
    assert bad.proc.wait(30) != 0 and "no spaces" in bad.log_since_start()


def test_token_create_without_secret(tmp):
    path = write(tmp, "nosecret.yaml", "log_level: info\n")
    rc, out, err = mp.run_primary(["token", "create", "--client", "c1", "-c", path])
    assert rc == 1 and "secret_file" in err and out == "", (rc, out, err)
    rc, out, err = mp.run_primary(["token", "create", "--client", "c1"])
    assert rc == 1 and "secret_file" in err, (rc, err)
    rc, out, err = mp.run_primary(["token", "create", "--client", "c1", "--secret-file",
                                   os.path.join(tmp, "nope")])
    assert rc == 1 and "nope" in err, (rc, err)
    rc, out, err = mp.run_primary(["token", "create", "--secret-file", path])
    assert rc == 2 and "--site NAME or --client NAME" in err, (rc, err)
    rc, out, err = mp.run_primary(["token", "create", "--site", "s", "--read-write",
                                   "--secret-file", path])
    assert rc == 2 and "client tokens" in err, (rc, err)
    rc, out, err = mp.run_primary(["token", "create", "--client", "c", "--subtree", "a/b",
                                   "--secret-file", path])
    assert rc == 2 and "--subtree" in err, (rc, err)
    rc, out, err = mp.run_primary(["token", "list"])
    assert rc == 2 and "token create" in err, (rc, err)
    # -c may come before the subcommand too, as the README writes it.
    rc, out, err = mp.run_primary(["-c", path, "token", "create", "--client", "trainer"])
    assert rc == 1 and "secret_file" in err and "unrecognized" not in err, (rc, err)
    rc, out, err = mp.run_primary(["-c", path, "--listen", "127.0.0.1:1", "token", "create",
                                   "--client", "c"])
    assert rc == 2 and "only -c FILE" in err, (rc, err)


if __name__ == "__main__":
    mp.main(globals())
