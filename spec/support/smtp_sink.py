#!/usr/bin/python3
"""A small SMTP/LMTP receiver for the relay specs: it shows what the client
did on the wire. Serves TCP on 127.0.0.1 (an ephemeral port written to
--port-file) or a Unix socket (--unix PATH, LMTP with --lmtp).

Log (DIR/log, one line per event, flushed):
  conn N                      a connection
  read N VERB,VERB,...        the commands that arrived in one read
  auth N USER ok|bad          AUTH LOGIN
  txn N FROM RCPT,RCPT BODY=8BITMIME|-   a message taken (file DIR/msg-K.eml)
  quit N                      the client sent QUIT
  close N                     the connection ended

Recipients: local part "nobody..." gets 550 5.1.1 at RCPT, "later..." 451
4.2.0 at RCPT; over LMTP "full..." is accepted at RCPT and gets 552 5.2.2
after DATA. Bounded: exits after --lifetime seconds."""
import argparse
import asyncio
import base64
import os

ap = argparse.ArgumentParser()
ap.add_argument("--dir", required=True)
ap.add_argument("--port-file")
ap.add_argument("--unix")
ap.add_argument("--lmtp", action="store_true")
ap.add_argument("--no-pipelining", action="store_true")
ap.add_argument("--no-8bitmime", action="store_true")
ap.add_argument("--auth-login", help="USER:PASSWORD; offer AUTH LOGIN only")
ap.add_argument("--lifetime", type=float, default=120)
args = ap.parse_args()

log = open(os.path.join(args.dir, "log"), "a", buffering=1)
counter = {"conn": 0, "msg": 0}


def note(line):
    log.write(line + "\n")
    log.flush()


def local_part(addr):
    return addr.split("@")[0].lower()


async def handle(reader, writer):
    counter["conn"] += 1
    n = counter["conn"]
    note("conn %d" % n)
    writer.write(b"220 sink.e2e.test ready\r\n")
    buf = b""
    mode = "cmd"   # cmd | data | auth_user | auth_pass
    mail, rcpts, body8, auth_user = None, [], "-", None
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            buf += chunk
            verbs = []
            while True:
                if mode == "data":
                    if buf.startswith(b".\r\n"):
                        data, buf = b"", buf[3:]
                    else:
                        end = buf.find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        data, buf = buf[:end + 2], buf[end + 5:]
                    data = data.replace(b"\r\n..", b"\r\n.")   # dot-stuffing undone
                    if data.startswith(b".."):
                        data = data[1:]
                    mode = "cmd"
                    counter["msg"] += 1
                    k = counter["msg"]
                    with open(os.path.join(args.dir, "msg-%d.eml" % k), "wb") as f:
                        f.write(b"MAIL FROM:" + mail.encode() + b"\n" + data)
                    note("txn %d %s %s %s" % (n, mail, ",".join(rcpts), body8))
                    if args.lmtp:
                        for r in rcpts:
                            if local_part(r).startswith("full"):
                                writer.write(b"552 5.2.2 mailbox full\r\n")
                            else:
                                writer.write(b"250 2.0.0 stored for " + r.encode() + b"\r\n")
                    else:
                        writer.write(b"250 2.0.0 stored as msg-%d\r\n" % k)
                    mail, rcpts = None, []
                    continue
                line, sep, rest = buf.partition(b"\r\n")
                if not sep:
                    break
                buf = rest
                text = line.decode("utf-8", "replace")
                if mode == "auth_user":
                    auth_user = base64.b64decode(text).decode()
                    mode = "auth_pass"
                    writer.write(b"334 UGFzc3dvcmQ6\r\n")
                    continue
                if mode == "auth_pass":
                    mode = "cmd"
                    given = auth_user + ":" + base64.b64decode(text).decode()
                    ok = given == args.auth_login
                    note("auth %d %s %s" % (n, auth_user, "ok" if ok else "bad"))
                    writer.write(b"235 2.7.0 ok\r\n" if ok else b"535 5.7.8 bad credentials\r\n")
                    continue
                verb = text.split(" ")[0].upper()
                verbs.append(verb)
                if verb in ("EHLO", "LHLO"):
                    ext = ["sink.e2e.test", "SIZE 10000000", "ENHANCEDSTATUSCODES"]
                    if not args.no_pipelining:
                        ext.append("PIPELINING")
                    if not args.no_8bitmime:
                        ext.append("8BITMIME")
                    if args.auth_login:
                        ext.append("AUTH LOGIN")
                    out = "".join("250-%s\r\n" % e for e in ext[:-1]) + "250 %s\r\n" % ext[-1]
                    writer.write(out.encode())
                elif verb == "HELO":
                    writer.write(b"250 sink.e2e.test\r\n")
                elif verb == "AUTH" and args.auth_login and text.upper() == "AUTH LOGIN":
                    mode = "auth_user"
                    writer.write(b"334 VXNlcm5hbWU6\r\n")
                elif verb == "AUTH":
                    writer.write(b"504 5.5.4 mechanism not offered\r\n")
                elif verb == "MAIL":
                    mail = text[text.index("<") + 1:text.index(">")]
                    body8 = "BODY=8BITMIME" if "BODY=8BITMIME" in text.upper() else "-"
                    rcpts = []
                    writer.write(b"250 2.1.0 ok\r\n")
                elif verb == "RCPT":
                    addr = text[text.index("<") + 1:text.index(">")]
                    if mail is None:
                        writer.write(b"503 5.5.1 MAIL first\r\n")
                    elif local_part(addr).startswith("nobody"):
                        writer.write(b"550 5.1.1 no such user here\r\n")
                    elif local_part(addr).startswith("later"):
                        writer.write(b"451 4.2.0 come back later\r\n")
                    else:
                        rcpts.append(addr)
                        writer.write(b"250 2.1.5 ok\r\n")
                elif verb == "DATA":
                    if not rcpts:
                        writer.write(b"554 5.5.1 no valid recipients\r\n")
                    else:
                        mode = "data"
                        writer.write(b"354 go ahead\r\n")
                elif verb == "RSET":
                    mail, rcpts = None, []
                    writer.write(b"250 2.0.0 reset\r\n")
                elif verb == "NOOP":
                    writer.write(b"250 2.0.0 ok\r\n")
                elif verb == "QUIT":
                    note("quit %d" % n)
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    writer.close()
                    return
                else:
                    writer.write(b"500 5.5.2 unknown command\r\n")
            if verbs:
                note("read %d %s" % (n, ",".join(verbs)))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        note("close %d" % n)
        writer.close()


async def main():
    if args.unix:
        server = await asyncio.start_unix_server(handle, path=args.unix)
        ready = args.unix
    else:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        ready = str(server.sockets[0].getsockname()[1])
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(ready)
        os.rename(args.port_file + ".tmp", args.port_file)
    await asyncio.sleep(args.lifetime)
    server.close()


asyncio.run(main())
