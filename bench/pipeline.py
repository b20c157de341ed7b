#!/usr/bin/env python3
"""Pipelined throughput (RFC 2920): one session sends N messages in groups
of BATCH (MAIL, RCPT, DATA, body, '.') without waiting, then reads the
replies of each group. Prints: messages seconds.

    pipeline.py HOST PORT N [BATCH] [SIZE]

Bounded: every socket operation has a 30 s timeout; exits 1 on a reply
that is not the expected one."""
import socket
import sys
import time


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 1024
    s = socket.create_connection((host, port), timeout=30)
    f = s.makefile("rb")
    if not f.readline().startswith(b"220"):
        sys.exit("no 220 greeting")
    s.sendall(b"EHLO bench.test\r\n")
    while True:
        line = f.readline()
        if not line.startswith(b"250"):
            sys.exit("EHLO refused: %r" % line)
        if line[3:4] == b" ":
            break
    body = b"Subject: pipelined\r\n\r\n" + b"x" * max(0, size - 24) + b"\r\n"
    one = (b"MAIL FROM:<from@example.test>\r\nRCPT TO:<to@example.test>\r\nDATA\r\n"
           + body + b".\r\n")
    expect = (b"250", b"250", b"354", b"250")
    t0 = time.monotonic()
    sent = 0
    while sent < n:
        k = min(batch, n - sent)
        s.sendall(one * k)
        for _ in range(k):
            for code in expect:
                line = f.readline()
                if not line.startswith(code):
                    sys.exit("unexpected reply %r (wanted %s)" % (line, code.decode()))
        sent += k
    secs = time.monotonic() - t0
    s.sendall(b"QUIT\r\n")
    s.close()
    print("%d %.2f" % (n, secs))


if __name__ == "__main__":
    main()
