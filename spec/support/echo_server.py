#!/usr/bin/env python3
"""echo_server.py - a line peer for the kurir.connect specs.

    python3 echo_server.py PORT [LIFETIME [PORT_FILE]]

Listens on 127.0.0.1:PORT (0: an ephemeral port), prints "listening PORT"
with the port bound once it accepts (and writes it to PORT_FILE when
given), and answers every connection line by line:

    CLOSE        -> "bye" (no line end), then closes the connection
    SILENT       -> reads on but never answers again
    SLOW <secs>  -> waits <secs> (at most 10), then "slow\\n"
    BLOB <n>     -> n bytes "x" (n at most 4 MiB), no line end
    anything     -> the same line back, with its own line end

Exits by itself after LIFETIME seconds (default 300), so that a test run
that dies never leaves it behind.
"""
import os
import socket
import sys
import threading
import time


def serve(conn):
    silent = False
    buf = b""
    with conn:
        conn.settimeout(60)
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                end = b"\r\n" if line.endswith(b"\r") else b"\n"
                word = line.rstrip(b"\r")
                if silent:
                    continue
                try:
                    if word == b"CLOSE":
                        conn.sendall(b"bye")
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    if word == b"SILENT":
                        silent = True
                    elif word.startswith(b"SLOW "):
                        time.sleep(min(float(word[5:]), 10.0))
                        conn.sendall(b"slow\n")
                    elif word.startswith(b"BLOB "):
                        conn.sendall(b"x" * min(int(word[5:]), 4 << 20))
                    else:
                        conn.sendall(word + end)
                except OSError:
                    return


def main():
    port = int(sys.argv[1])
    lifetime = float(sys.argv[2]) if len(sys.argv) > 2 else 300.0
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    port = srv.getsockname()[1]
    if len(sys.argv) > 3:
        tmp = sys.argv[3] + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, sys.argv[3])
    print("listening", port, flush=True)
    srv.settimeout(1.0)
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    srv.close()


if __name__ == "__main__":
    main()
