#!/usr/bin/python3
"""Tokens: with a cluster secret every HELLO needs a token; client tokens are
limited to their subtree and to reads when read-only; only site tokens may
SUBSCRIBE; expired and forged tokens are refused."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from mp import BATCH, CREATE, MKDIR, READDIR, RENAME, RESOLVE, RMDIR, SETATTR, SUBSCRIBE, \
    SYMLINK, UNLINK  # noqa: E402


def write_secret(tmp, name="secret", data=b"0123456789abcdef0123456789abcdef\n", mode=0o600):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def token(p, *args):
    rc, out, err = mp.run_primary(["token", "create"] + list(args) + ["-c", p.config_path])
    assert rc == 0, "token create %s failed (%d): %s" % (" ".join(args), rc, err)
    tok = out.strip()
    assert tok.startswith("mpt1.") and "\n" not in tok, out
    return tok


def start(tmp):
    secret = write_secret(tmp)
    p = mp.Primary(tmp, config={"secret_file": secret})
    return p


def refused(p, tok, contains):
    c = mp.Client(p.port)
    body = {"proto": 1}
    if tok is not None:
        body["token"] = tok
    e = c.error("EACCES", mp.HELLO, body, contains=contains)
    # Still not authenticated afterwards.
    c.error("EPROTO", mp.VERSION, {}, contains="HELLO")
    c.close()
    return e


def test_tokens_required(tmp):
    p = start(tmp)
    refused(p, None, "token is required")
    refused(p, "garbage", "token refused")
    refused(p, "mpt1.AAAA.BBBB", "token refused")
    # A token of another cluster's secret.
    other = write_secret(tmp, "other", b"another secret of 32 bytes......")
    rc, out, err = mp.run_primary(["token", "create", "--client", "c1", "--read-write",
                                   "--secret-file", other])
    assert rc == 0, err
    refused(p, out.strip(), "token refused")
    # An altered token.
    good = token(p, "--client", "c1", "--read-write")
    head, payload, mac = good.split(".")
    bad_mac = mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB")
    refused(p, "%s.%s.%s" % (head, payload, bad_mac), "token refused")
    # And the good one works, as does one made with -c before the subcommand
    # (the README's form).
    c = p.client(token=good)
    assert c.mkdir("/x")["version"] == 1
    c.close()
    rc, out, err = mp.run_primary(["-c", p.config_path, "token", "create", "--client", "trainer"])
    assert rc == 0 and out.startswith("mpt1."), (rc, err)
    c = p.client(token=out.strip())
    c.close()
    p.wait_log("token refused")
    p.stop()


def test_client_subtree(tmp):
    p = start(tmp)
    admin = p.client(token=token(p, "--client", "admin", "--read-write"))
    admin.mkdir("/a")
    admin.mkdir("/b")
    admin.create("/b/secret")
    admin.mkdir("/ab")
    c = p.client(token=token(p, "--client", "c1", "--subtree", "/a", "--read-write"))
    v = c.mkdir("/a/x")["version"]
    c.create("/a/x/f")
    c.symlink("/a/s", "/b/secret")
    c.rename("/a/x/f", "/a/g")
    c.setattr("/a/g", mode=0o600)
    c.batch([(MKDIR, {"path": "/a/y"}), (CREATE, {"path": "/a/y/f"})])
    c.unlink("/a/y/f")
    c.rmdir("/a/y")
    v = c.version()
    for t, body in [(MKDIR, {"path": "/b/x"}), (MKDIR, {"path": "/ab/x"}),
                    (MKDIR, {"path": "/c"}), (CREATE, {"path": "/b/secret"}),
                    (UNLINK, {"path": "/b/secret"}), (RMDIR, {"path": "/ab"}),
                    (SETATTR, {"path": "/", "mode": 0o777}),
                    (SYMLINK, {"path": "/b/s", "target": "/a"}),
                    (RENAME, {"from": "/a/g", "to": "/b/g"}),
                    (RENAME, {"from": "/b/secret", "to": "/a/secret"}),
                    (MKDIR, {"path": "/a/../b/x"})]:
        c.error("EACCES", t, body, contains="subtree")
    c.error("EACCES", BATCH, {"ops": [[MKDIR, {"path": "/a/ok"}], [MKDIR, {"path": "/b/no"}]]},
                contains=["op 1", "subtree"])
    assert c.version() == v, "a refused write made a version"
    admin.error("ENOENT", RESOLVE, {"path": "/a/ok"})
    # Reads: the subtree and its ancestors, nothing else.
    assert c.resolve("/a/g")[mp.N_NAME] == "g"
    assert c.resolve("/")[mp.N_INO] == 1
    assert c.readdir(path="/a")["entries"]
    c.error("EACCES", RESOLVE, {"path": "/b/secret"})
    c.error("EACCES", RESOLVE, {"path": "/ab"})
    c.error("EACCES", READDIR, {"path": "/b"})
    b_ino = admin.resolve("/b/secret")[mp.N_INO]
    c.error("EACCES", mp.GETATTR, {"ino": b_ino})
    c.error("EACCES", mp.LOOKUP, {"parent": admin.resolve("/b")[mp.N_INO], "name": "secret"})
    # A client token cannot subscribe.
    c.error("EACCES", SUBSCRIBE, {"from": 0}, contains="site token")
    admin.error("EACCES", SUBSCRIBE, {"from": 0}, contains="site token")
    c.close()
    admin.close()
    p.stop()


def test_readdir_of_an_ancestor(tmp):
    """A subtree token may list its ancestors so it can walk to its subtree,
    but an entry it gets from READDIR must be one it may read: LOOKUP and
    GETATTR of /b are refused, so READDIR / must not hand out /b."""
    p = start(tmp)
    admin = p.client(token=token(p, "--client", "admin", "--read-write"))
    admin.mkdir("/a")
    admin.mkdir("/b")
    admin.create("/b/secret-name")
    c = p.client(token=token(p, "--client", "c1", "--subtree", "/a"))
    entries = c.readdir(path="/")["entries"]
    assert any(e[mp.N_NAME] == "a" for e in entries), entries
    for e in entries:
        t, b = c.call(mp.GETATTR, {"ino": e[mp.N_INO]})
        assert t == mp.REPLY, "READDIR / returned %r, which GETATTR refuses: %s" % (
            e[mp.N_NAME], b.get("message"))
    c.close()
    admin.close()
    p.stop()


def test_token_paths_with_slashes(tmp):
    """Repeated and trailing slashes are valid paths (PROTOCOL.md): a token
    holder writing inside its subtree must not be refused for them."""
    p = start(tmp)
    root = p.client(token=token(p, "--client", "root", "--read-write"))
    root.mkdir("/a")
    r = root.mkdir("/a/top/")
    assert r["node"][mp.N_NAME] == "top"
    c = p.client(token=token(p, "--client", "c1", "--subtree", "/a", "--read-write"))
    assert c.mkdir("/a//x")["node"][mp.N_NAME] == "x"
    assert c.mkdir("/a/y/")["node"][mp.N_NAME] == "y"
    c.close()
    root.close()
    p.stop()


def test_read_only_and_site(tmp):
    p = start(tmp)
    admin = p.client(token=token(p, "--client", "admin", "--read-write"))
    admin.mkdir("/d")
    admin.create("/d/f")
    ro = p.client(token=token(p, "--client", "reader", "--read-only"))
    v = ro.version()
    assert ro.resolve("/d/f")[mp.N_NAME] == "f"
    assert len(ro.readdir(path="/d")["entries"]) == 1
    for t, body in [(MKDIR, {"path": "/d/x"}), (CREATE, {"path": "/d/f"}),
                    (UNLINK, {"path": "/d/f"}), (RENAME, {"from": "/d/f", "to": "/d/g"}),
                    (SETATTR, {"path": "/d/f", "size": 1}), (RMDIR, {"path": "/d"}),
                    (BATCH, {"ops": [[MKDIR, {"path": "/d/y"}]]})]:
        ro.error("EACCES", t, body, contains="does not allow writes")
    assert ro.version() == v
    ro.error("EACCES", SUBSCRIBE, {"from": 0}, contains="site token")
    ro.close()
    # Subtree read-only tokens (the default access) read only their subtree.
    ro2 = p.client(token=token(p, "--client", "reader2", "--subtree", "/d"))
    ro2.error("EACCES", MKDIR, {"path": "/d/z"}, contains="does not allow writes")
    ro2.close()

    site_tok = token(p, "--site", "paris")
    site = p.client(token=site_tok)
    site.error("EACCES", MKDIR, {"path": "/d/x"}, contains="does not allow writes")
    assert site.resolve("/d/f")
    site.close()
    s = mp.Subscriber(p.port, token=site_tok)
    r = s.subscribe(0, site="ignored-with-tokens")
    assert r["snapshot"] is False
    s.pump(until=v, timeout=10)
    assert s.model.digest().hex() == p.status()["digest"]
    mp.wait_until(lambda: [x for x in p.status()["subscribers"] if x["site"] == "paris"
                           and x["acked_version"] == v], timeout=10,
                  what="site paris (the token's name) in /status")
    s.close()
    admin.close()
    p.stop()


def test_expired(tmp):
    p = start(tmp)
    short = token(p, "--client", "brief", "--read-write", "--expires", "1s")
    site = token(p, "--site", "brief-site", "--expires", "1s")
    c = p.client(token=short)  # valid now
    c.mkdir("/x")
    time.sleep(2.2)
    refused(p, short, "expired")
    refused(p, site, "expired")
    c.close()
    rc, out, err = mp.run_primary(["token", "create", "--client", "c", "--expires", "0s",
                                   "-c", p.config_path])
    assert rc != 0 and "--expires" in err, (rc, err)
    p.stop()


def test_bad_secret_files(tmp):
    # Readable by others: refused at start with a message saying what to do.
    loose = write_secret(tmp, "loose", mode=0o644)
    p = mp.Primary(tmp, config={"secret_file": loose}, start=False, name="loose")
    p.spawn()
    rc = p.proc.wait(30)
    assert rc != 0 and "chmod 600" in p.log(), (rc, p.log())
    short = write_secret(tmp, "short", data=b"0123456789\n")
    p = mp.Primary(tmp, config={"secret_file": short}, start=False, name="short")
    p.spawn()
    rc = p.proc.wait(30)
    assert rc != 0 and "16" in p.log_since_start() and "short" in p.log_since_start(), p.log()
    missing = os.path.join(tmp, "missing")
    p = mp.Primary(tmp, config={"secret_file": missing}, start=False, name="missing")
    p.spawn()
    rc = p.proc.wait(30)
    assert rc != 0 and "missing" in p.log_since_start(), p.log()


if __name__ == "__main__":
    mp.main(globals())
