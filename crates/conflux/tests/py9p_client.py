"""Drives the py9p client of PyPI p9fs==0.0.4 against `conflux serve-9p`.

Usage: python3 py9p_client.py PORT VERSION   (VERSION: 9P2000.u or 9P2000)
Lists, reads, creates, writes, stats and removes files; prints one JSON object.
"""
import json
import socket
import sys

from py9p import py9p


def text(x):
    return x.decode() if isinstance(x, bytes) else x


def ls(c):
    """Client.ls(), except that directory entries are decoded in the session's
    dialect: py9p 0.0.4's lsdir() always decodes them as plain 9P2000 (its own
    server sends 9P2000.u entries under .u, so ls() breaks against it too)."""
    c.open("")
    data = b""
    while True:
        buf = c.read(c.msize)
        if not buf:
            break
        data += buf
    c.close()
    p9 = py9p.Marshal9P(dotu=c.dotu)
    p9.setBuffer(data)
    p9.buf.seek(0)
    stats = []
    p9.decstat(stats, 0)
    return sorted(text(s.name) for s in stats)


def main():
    port, ver = int(sys.argv[1]), sys.argv[2]
    version = py9p.Version.v9P2000u if ver == "9P2000.u" else py9p.Version.v9P2000
    sock = socket.create_connection(("127.0.0.1", port))
    c = py9p.Client(sock, py9p.Credentials("tester"), ver=version, msize=65536)
    out = {"version": c.version.value}
    out["ls"] = ls(c) if c.dotu else sorted(text(n) for n in c.ls())
    c.open("hello.txt")
    out["hello"] = text(c.read(1000))
    c.close()
    c.open("/sub/deep.txt")
    out["deep"] = text(c.read(1000))
    c.close()
    c.create("new.txt", 0o644, py9p.OWRITE)
    c.write(b"written by py9p")
    c.close()
    c.open("new.txt")
    out["new"] = text(c.read(1000))
    c.close()
    out["new_length"] = c.stat("new.txt")[0].length
    c.rm("hello.txt")
    out["ls_after"] = ls(c)
    try:
        c.open("missing.txt")
        out["missing"] = "opened"
    except py9p.RpcError as e:
        out["missing"] = text(e.args[0])
    c._fullclose()
    print(json.dumps(out))


main()
