#!/usr/bin/python3
"""TLS: a TLS-only primary serves Python ssl clients and refuses plain TCP;
with tls.client_ca and tls.verify_clients only clients holding a certificate
of that CA get in. Certificates are made with the openssl CLI."""

import os
import socket
import ssl
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402


def openssl(*args, cwd):
    p = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, "openssl %s: %s" % (" ".join(args), p.stderr)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-out", name + ".pem", "-days", "2", "-subj",
            "/CN=%s" % name, "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")


def make_cert(d, ca, name, usage, san=None):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=%s" % name, cwd=d)
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=%s\n" % usage)
        if san:
            f.write("subjectAltName=%s\n" % san)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", ext, cwd=d)
    key = os.path.join(d, name + ".key")
    os.chmod(key, 0o600)
    return os.path.join(d, name + ".pem"), key


def pki(tmp):
    d = os.path.join(tmp, "pki")
    os.makedirs(d)
    ca, _ = make_ca(d, "ca")
    rogue_ca, _ = make_ca(d, "rogue")
    server = make_cert(d, "ca", "server", "serverAuth", "DNS:localhost,IP:127.0.0.1")
    client = make_cert(d, "ca", "client", "clientAuth")
    rogue = make_cert(d, "rogue", "intruder", "clientAuth")
    return ca, server, client, rogue + (rogue_ca,)


def plain_fails(p):
    """A plain TCP client gets no HELLO_OK from a TLS-only primary."""
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    payload = mp.encode_frame(mp.HELLO, 1, {"proto": 1})
    try:
        s.sendall(payload)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout) as e:
        if isinstance(e, socket.timeout):
            raise AssertionError("a plain client was left hanging instead of being refused")
        data = b""
    finally:
        s.close()
    if len(data) >= 4:
        (n,) = struct.unpack(">I", data[:4])
        if len(data) >= 4 + n:
            try:
                f = mp.decode_payload(data[4:4 + n])
            except Exception:
                f = None
            assert not (isinstance(f, list) and f and f[0] == mp.HELLO_OK), \
                "a plain TCP client was served by a TLS-only primary"


def test_tls_only(tmp):
    ca, server, client, rogue = pki(tmp)
    p = mp.Primary(tmp, config={"tls": {"cert": server[0], "key": server[1]}})
    ctx = mp.tls_client_context(ca)
    c = mp.Client(p.port, tls=ctx, hello=True)
    assert c.sock.version() in ("TLSv1.2", "TLSv1.3"), c.sock.version()
    assert c.mkdir("/secure")["version"] == 1
    assert c.resolve("/secure")[mp.N_NAME] == "secure"
    # By IP address too (the certificate names 127.0.0.1).
    c2 = mp.Client(p.port, tls=ctx, server_hostname="127.0.0.1", hello=True)
    assert c2.version() == 1
    c2.close()
    plain_fails(p)
    # A client that does not trust the server's CA refuses it.
    try:
        mp.Client(p.port, tls=mp.tls_client_context(rogue[2]), hello=True)
        raise AssertionError("a client trusting another CA accepted the server")
    except ssl.SSLCertVerificationError:
        pass
    # Bad frames over TLS behave as over TCP.
    bad = mp.Client(p.port, tls=ctx, hello=True)
    bad.send_raw(struct.pack(">I", 1) + b"\xc1")
    t, _, b = bad.recv()
    assert t == mp.ERROR and b["code"] == "EPROTO", b
    assert bad.version() == 1
    bad.send_raw(struct.pack(">I", 1 << 30))
    bad.expect_closed()
    bad.close()
    # A subscriber over TLS.
    s = mp.Subscriber(p.port, tls=ctx)
    s.subscribe(0, site="tls-site")
    v = c.create("/secure/f")["version"]
    s.pump(until=v, timeout=10)
    assert s.model.digest().hex() == p.status()["digest"]
    s.close()
    assert c.version() == v
    c.close()
    assert p.status()["store"] in ("sqlite", "postgres")
    p.stop()


def test_oversized_frame_over_tls(tmp):
    ca, server, client, rogue = pki(tmp)
    p = mp.Primary(tmp, config={"tls": {"cert": server[0], "key": server[1]},
                                "max_frame_bytes": "64KiB"})
    c = mp.Client(p.port, tls=mp.tls_client_context(ca), hello=True)
    c.send_raw(struct.pack(">I", 65537))
    frames = c.expect_closed()
    assert [f[2].get("code") for f in frames] == ["E2BIG"], "oversized frame over TLS: %r" % (
        frames,)
    assert "65536" in frames[0][2]["message"]
    c.close()
    p.stop()


def test_mutual_tls(tmp):
    ca, server, client, rogue = pki(tmp)
    p = mp.Primary(tmp, config={"tls": {"cert": server[0], "key": server[1], "client_ca": ca,
                                        "verify_clients": True}})
    # Without a certificate: refused (at the handshake, or at the first read
    # with TLS 1.3).
    try:
        c = mp.Client(p.port, tls=mp.tls_client_context(ca), hello=True)
        raise AssertionError("a client without a certificate was served: %r" % c)
    except (ssl.SSLError, mp.ConnectionClosed, ConnectionResetError, BrokenPipeError):
        pass
    # With a certificate of another CA: refused.
    try:
        c = mp.Client(p.port, tls=mp.tls_client_context(ca, rogue[0], rogue[1]), hello=True)
        raise AssertionError("a client with a certificate of another CA was served")
    except (ssl.SSLError, mp.ConnectionClosed, ConnectionResetError, BrokenPipeError):
        pass
    plain_fails(p)
    # With the CA's client certificate: served.
    c = mp.Client(p.port, tls=mp.tls_client_context(ca, *client), hello=True)
    assert c.mkdir("/m")["version"] == 1
    c.close()
    p.wait_log("tls:")
    p.stop()


def test_tls_config_errors(tmp):
    ca, server, client, rogue = pki(tmp)
    for cfg, want in [
        ({"tls": {"cert": server[0]}}, "tls.cert and tls.key go together"),
        ({"tls": {"cert": server[0], "key": client[1]}}, "does not match"),
        ({"tls": {"cert": server[0], "key": server[1], "verify_clients": True}},
         "tls.verify_clients needs tls.client_ca"),
        ({"tls": {"cert": os.path.join(tmp, "nope.pem"), "key": server[1]}}, "nope.pem"),
    ]:
        p = mp.Primary(tmp, config=cfg, start=False, name="bad")
        p.spawn()
        rc = p.proc.wait(30)
        assert rc != 0 and want in p.log_since_start(), (cfg, rc, p.log_since_start())


if __name__ == "__main__":
    mp.main(globals())
