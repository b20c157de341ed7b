#!/usr/bin/env python3
"""TLS handshake with a chosen ALPN list against an smtps listener.

usage: alpn_client.py HOST PORT [PROTO,PROTO...]   (no list: no ALPN)
prints "ok <selected protocol or none>" or "fail <reason>"; exit 0.
"""
import socket
import ssl
import sys


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if len(sys.argv) > 3 and sys.argv[3]:
        ctx.set_alpn_protocols(sys.argv[3].split(","))
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                line = tls.recv(512).decode("ascii", "replace").strip()
                print("ok", tls.selected_alpn_protocol() or "none", line[:3])
    except (ssl.SSLError, OSError) as e:
        print("fail", str(e).replace("\n", " "))


main()
