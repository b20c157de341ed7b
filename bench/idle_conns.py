#!/usr/bin/env python3
"""bench/idle_conns.py: open N idle SMTP connections and hold them.

Each connection reads the 220 greeting, sends EHLO and reads the whole
EHLO reply, then stays open and silent. When all are open the script prints
one line "ready OPEN FAILED" on stdout, then holds the connections until
its stdin reaches end of file (or a line is read), or until --hold seconds
have passed (at most 60), and closes them all.

  python3 bench/idle_conns.py 127.0.0.1 2525 2000 < control-fifo

Used by bench/run.sh to measure the server's memory per idle connection.
Talks only to the address it is given; every wait is bounded.
"""

import argparse
import select
import socket
import sys
import time

MAX_HOLD = 60.0


def read_reply(sock, deadline):
    """Read one (possibly multi-line) SMTP reply; return its code or None."""
    data = b""
    while True:
        # a reply is complete when its last line has a space after the code
        lines = data.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) >= 4 and line[3:4] == b" ":
                try:
                    return int(line[:3])
                except ValueError:
                    return None
        left = deadline - time.monotonic()
        if left <= 0 or len(data) > 65536:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk


def open_one(host, port, timeout):
    """Connect, read the greeting, EHLO; return the socket or None."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    if read_reply(sock, deadline) != 220:
        sock.close()
        return None
    try:
        sock.sendall(b"EHLO idle.bench.test\r\n")
    except OSError:
        sock.close()
        return None
    if read_reply(sock, deadline) != 250:
        sock.close()
        return None
    return sock


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--hold", type=float, default=MAX_HOLD,
                    help="seconds to hold the connections (max 60)")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds allowed per connection set-up")
    args = ap.parse_args()
    hold = max(0.0, min(args.hold, MAX_HOLD))

    socks = []
    failed = 0
    for _ in range(max(0, args.count)):
        s = open_one(args.host, args.port, args.timeout)
        if s is None:
            failed += 1
            if failed >= 10 and not socks:
                break  # the server is not there: stop early
        else:
            socks.append(s)
    print("ready %d %d" % (len(socks), failed), flush=True)

    # hold until stdin says so (EOF or a line), bounded by `hold` seconds
    deadline = time.monotonic() + hold
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            readable, _, _ = select.select([sys.stdin], [], [], left)
        except (OSError, ValueError):
            time.sleep(min(left, 1.0))
            continue
        if readable:
            sys.stdin.readline()
            break

    for s in socks:
        s.close()
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
