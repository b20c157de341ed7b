#!/usr/bin/env python3
"""dns_server.py - a tiny authoritative DNS server over UDP for the e2e specs.

Answers from a fixed test zone (below), packed by hand with struct; no
third-party modules. Names outside the zone are NXDOMAIN; "slow.test" is
never answered (for timeouts); "servfail.test" and "refused.test" get those
response codes; "wrongq.test" is answered for another question. Binds 127.0.0.1 on --port (0 = any free port), writes the
port to --port-file once it listens, logs one line per query to stderr,
and exits after --lifetime seconds or on SIGTERM/SIGINT.
"""

import argparse
import os
import select
import signal
import socket
import struct
import sys
import time

T_A, T_PTR, T_MX, T_TXT, T_AAAA = 1, 12, 15, 16, 28
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5

ZONE = {
    ("a.test", T_A): ["192.0.2.1", "192.0.2.2"],
    ("v6.test", T_AAAA): ["2001:db8::1"],
    ("both.test", T_A): ["192.0.2.10"],
    ("both.test", T_AAAA): ["2001:db8::10"],
    # out of order on purpose: the client sorts by preference
    ("mx.test", T_MX): [(20, "mx2.test"), (10, "mx1.test")],
    ("txt.test", T_TXT): [["v=spf1 -all"], ["part one ", "part two"]],
    ("2.0.0.127.zen.test", T_A): ["127.0.0.2"],
    ("2.0.0.127.zen.test", T_TXT): [["listed"]],
    ("1.2.0.192.in-addr.arpa", T_PTR): ["host.a.test"],
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", T_PTR): ["v6host.test"],
    ("empty.test", T_TXT): [["only text here"]],
    # for kurir.connect by name: the test peers run on loopback
    ("peer.test", T_A): ["127.0.0.1"],
    ("peer6.test", T_AAAA): ["::1"],
    # queue specs: MX delivery to a kurir on loopback, a null MX, no MX (A fallback)
    ("mxdeliver.test", T_MX): [(10, "mxhost.test"), (20, "mxdown.test")],
    ("mxhost.test", T_A): ["127.0.0.1"],
    ("mxdown.test", T_A): ["127.0.0.3"],
    ("nullmx.test", T_MX): [(0, ".")],
    ("nomx.test", T_A): ["127.0.0.1"],
}
NO_ANSWER = {"slow.test"}
# answered with another question in the reply: a resolver must drop it
WRONG_QUESTION = {"wrongq.test": "a.test"}
RCODES = {"servfail.test": SERVFAIL, "refused.test": REFUSED}


def exists(name):
    return any(n == name or n.endswith("." + name) for (n, _) in ZONE)


def encode_name(name):
    if name.rstrip(".") == "":
        return b"\x00"   # the root (a null MX, RFC 7505)
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out += struct.pack("!B", len(raw)) + raw
    return out + b"\x00"


def rdata(rtype, value):
    if rtype == T_A:
        return socket.inet_pton(socket.AF_INET, value)
    if rtype == T_AAAA:
        return socket.inet_pton(socket.AF_INET6, value)
    if rtype == T_MX:
        return struct.pack("!H", value[0]) + encode_name(value[1])
    if rtype == T_PTR:
        return encode_name(value)
    if rtype == T_TXT:
        out = b""
        for s in value:
            raw = s.encode("utf-8")
            out += struct.pack("!B", len(raw)) + raw
        return out
    raise ValueError(rtype)


def parse_question(data):
    """(id, flags, qname, qtype, qclass, end offset) or None."""
    if len(data) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if qdcount != 1 or flags & 0x8000:
        return None
    pos, labels = 12, []
    for _ in range(128):
        if pos >= len(data):
            return None
        n = data[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0:
            return None
        labels.append(data[pos:pos + n].decode("ascii", "replace"))
        pos += n
    else:
        return None
    if pos + 4 > len(data):
        return None
    qtype, qclass = struct.unpack("!HH", data[pos:pos + 4])
    return qid, flags, ".".join(labels), qtype, qclass, pos + 4


def answer(data):
    q = parse_question(data)
    if q is None:
        return None, "malformed"
    qid, flags, qname, qtype, _qclass, end = q
    name = qname.lower().rstrip(".")
    if name in NO_ANSWER:
        return None, "%s %d dropped" % (name, qtype)
    question = data[12:end]
    if name in WRONG_QUESTION:
        name = WRONG_QUESTION[name]
        question = encode_name(name) + struct.pack("!HH", qtype, 1)
    records = ZONE.get((name, qtype), [])
    rcode = RCODES.get(name, NOERROR if (records or exists(name)) else NXDOMAIN)
    if rcode != NOERROR:
        records = []
    # QR, AA, the client's RD; RA
    rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
    out = struct.pack("!HHHHHH", qid, rflags, 1, len(records), 0, 0) + question
    for r in records:
        rd = rdata(qtype, r)
        out += struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rd)) + rd
    return out, "%s %d rcode=%d answers=%d" % (name, qtype, rcode, len(records))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--lifetime", type=float, default=60.0)
    args = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    deadline = time.monotonic() + args.lifetime
    while not stop and time.monotonic() < deadline:
        try:
            ready, _, _ = select.select([sock], [], [], 0.2)
        except InterruptedError:
            continue
        if not ready:
            continue
        try:
            data, peer = sock.recvfrom(4096)
        except OSError:
            continue
        reply, what = answer(data)
        sys.stderr.write("query %s\n" % what)
        sys.stderr.flush()
        if reply is not None:
            sock.sendto(reply, peer)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
