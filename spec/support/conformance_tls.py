#!/usr/bin/env python3
"""conformance_tls.py - a raw SMTP client with STARTTLS for tls_spec.lua.

usage: conformance_tls.py PORT LINE...

Reads the greeting, then sends each LINE (a backslash-n in a LINE is sent as
CRLF, so one argument may pipeline several commands) and prints every reply
as one output line: "code|line1|line2...". A LINE that is exactly STARTTLS
is sent, and when the reply is 220 the TLS handshake is made (no
certificate check: the tests use throw-away certificates). A LINE that
starts with "@" is sent without waiting for replies (for example the body of
a message). Every read is bounded by a 10 s timeout; on EOF it prints
"EOF" and stops.
"""
import socket
import ssl
import sys


def main():
    port = int(sys.argv[1])
    sock = socket.create_connection(("127.0.0.1", port), 10)
    sock.settimeout(10)
    buf = [b""]

    def reply():
        lines = []
        while True:
            i = buf[0].find(b"\r\n")
            if i >= 0:
                line = buf[0][:i]
                buf[0] = buf[0][i + 2:]
                lines.append(line.decode("utf-8", "replace"))
                if len(line) < 4 or line[3:4] == b" ":
                    break
                continue
            try:
                data = sock.recv(65536)
            except (socket.timeout, OSError):
                data = b""
            if not data:
                return None
            buf[0] += data
        return lines[0][:3] + "|" + "|".join(lines)

    def show(r):
        print(r if r is not None else "EOF", flush=True)
        return r is not None

    if not show(reply()):
        return
    for arg in sys.argv[2:]:
        if arg.startswith("@"):
            sock.sendall(arg[1:].replace("\\n", "\r\n").encode())
            continue
        cmds = arg.split("\\n")
        sock.sendall(("\r\n".join(cmds) + "\r\n").encode())
        for _ in cmds:
            r = reply()
            if not show(r):
                return
            if arg == "STARTTLS" and r.startswith("220"):
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                sock = ctx.wrap_socket(sock, server_hostname="localhost")
                sock.settimeout(10)
                buf[0] = b""
                print("TLS|" + str(sock.version()), flush=True)
    sock.close()


if __name__ == "__main__":
    main()
