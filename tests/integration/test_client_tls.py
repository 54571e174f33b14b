#!/usr/bin/python3
"""libmirrorplane over TLS (through the mp CLI): a TLS-only primary serves mp
with tls.enabled and the right CA; plain TCP, an unknown CA, a name the
certificate does not carry, and (with verify_clients) a missing or foreign
client certificate each fail with one clear line."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp  # noqa: E402
from test_tls import pki  # noqa: E402


def one_line(r, *needles):
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, "expected one line on stderr: %r" % r.err
    for n in needles:
        assert n in lines[0], "%r does not say %r" % (lines[0], n)


def test_tls_primary(tmp):
    ca, server, client, rogue = pki(tmp)
    p = mp.Primary(tmp, config={"tls": {"cert": server[0], "key": server[1]}})
    tls = ["tls.enabled=true", "tls.ca=" + ca]
    cli = mp.Cli(tmp, p, None, options=tls)
    data = os.urandom(300000)
    cli.run("put", "-", "/tls/f", input=data)
    assert cli.run("cat", "/tls/f").out == data
    assert cli.run("ls", "/tls").text.split() == ["f"]
    st = cli.json("status")
    assert st["servers"][0]["up"], st
    # The name checked can be given (the certificate carries localhost).
    cli.run("stat", "/tls/f", options=["tls.server_name=localhost"])
    # Plain TCP to a TLS-only server.
    plain = mp.Cli(tmp, p, None)
    one_line(plain.run("ls", "/", expect=1), "ls /")
    # A CA that did not sign the server's certificate; a name it lacks.
    one_line(cli.run("ls", "/", expect=1, options=["tls.ca=" + rogue[2]]),
             "certificate verify failed")
    one_line(cli.run("ls", "/", expect=1, options=["tls.server_name=other.example"]),
             "certificate verify failed")
    # Bad TLS configuration: named, before any connection.
    one_line(cli.run("ls", "/", expect=2, options=["tls.ca=" + os.path.join(tmp, "nope.pem")]),
             "nope.pem")
    one_line(cli.run("ls", "/", expect=2, options=["tls.cert=" + client[0]]),
             "tls.cert and tls.key")
    p.stop()


def test_mutual_tls(tmp):
    ca, server, client, rogue = pki(tmp)
    p = mp.Primary(tmp, config={"tls": {"cert": server[0], "key": server[1], "client_ca": ca,
                                        "verify_clients": True}})
    tls = ["tls.enabled=true", "tls.ca=" + ca]
    cli = mp.Cli(tmp, p, None, options=tls)
    r = cli.run("ls", "/", expect=1)
    one_line(r, "ls /")
    r = cli.run("ls", "/", expect=1, options=["tls.cert=" + rogue[0], "tls.key=" + rogue[1]])
    one_line(r, "ls /")
    ok = ["tls.cert=" + client[0], "tls.key=" + client[1]]
    cli.run("mkdir", "-p", "/m/a", options=ok)
    assert cli.run("ls", "/m", options=ok).text.split() == ["a"]
    p.stop()


if __name__ == "__main__":
    mp.main(globals())
