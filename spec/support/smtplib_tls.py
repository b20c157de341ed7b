#!/usr/bin/env python3
"""TLS and AUTH client actions for the kurir end-to-end specs.

usage: smtplib_tls.py ACTION HOST PORT [ARGS...]

Every action prints "key=value" lines (one fact a line) for the spec to
check, and exits 0 when it ran to the end (even if the server refused
something: the spec decides what is right), 1 on an unexpected error.
All sockets have timeouts; nothing here waits unbounded.

Actions:
  features HOST PORT
      EHLO in clear, STARTTLS, EHLO over TLS, then STARTTLS once more.
  inject HOST PORT
      Raw socket: EHLO, then "STARTTLS\\r\\nRSET\\r\\n" in one write, the
      220, the handshake on that socket, a short read (must get nothing),
      MAIL before EHLO, then EHLO over TLS.
  send HOST PORT MODE SUBJECT
      MODE starttls (smtplib.SMTP + starttls()) or ssl (smtplib.SMTP_SSL):
      send one message to rcpt@example.test.
  login HOST PORT MODE MECH USER PASSWORD [SUBJECT]
      starttls/ssl, then smtp.login() restricted to MECH (the server's
      AUTH list is narrowed to MECH so login() has to pick it); on
      success send one message.
  auth HOST PORT MODE MECH USER PASSWORD
      smtp.auth(MECH, smtp.auth_<mech>) directly.
  client_cert HOST PORT CERT KEY
      STARTTLS presenting a client certificate, then EHLO and QUIT.
  stall HOST PORT
      Implicit TLS port: send a real ClientHello, read the server's
      first flight, then never answer; report how long until the server
      closes the connection.
"""

import smtplib
import socket
import ssl
import sys
import time

TIMEOUT = 10

MESSAGE = (
    "From: sender@example.test\r\n"
    "To: rcpt@example.test\r\n"
    "Subject: {subject}\r\n"
    "\r\n"
    "Hello over TLS.\r\n"
)


def out(key, value):
    print("%s=%s" % (key, value), flush=True)


def client_context(cert=None, key=None):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def features(smtp, prefix):
    for name in sorted(smtp.esmtp_features):
        out(prefix + "." + name, smtp.esmtp_features[name].strip())


def connect(host, port, mode):
    if mode == "ssl":
        smtp = smtplib.SMTP_SSL(host, port, timeout=TIMEOUT, context=client_context())
        smtp.ehlo("smtplib.e2e.test")
        return smtp
    smtp = smtplib.SMTP(host, port, timeout=TIMEOUT)
    smtp.ehlo("smtplib.e2e.test")
    code, text = smtp.starttls(context=client_context())
    out("starttls", code)
    smtp.ehlo("smtplib.e2e.test")
    return smtp


def send_one(smtp, subject):
    refused = smtp.sendmail("sender@example.test", ["rcpt@example.test"],
                            MESSAGE.format(subject=subject).encode("ascii"))
    out("sendmail", "ok" if not refused else repr(refused))


def act_features(host, port):
    smtp = smtplib.SMTP(host, port, timeout=TIMEOUT)
    smtp.ehlo("smtplib.e2e.test")
    features(smtp, "plain")
    code, text = smtp.starttls(context=client_context())
    out("starttls", code)
    out("tls.version", smtp.sock.version())
    # smtplib forgets the features after starttls(): a new EHLO is needed
    code, text = smtp.ehlo("smtplib.e2e.test")
    out("ehlo2", code)
    features(smtp, "tls")
    code, text = smtp.docmd("STARTTLS")
    out("starttls2", "%d %s" % (code, text.decode("ascii", "replace")))
    code, text = smtp.quit()
    out("quit", code)


def read_reply(sock):
    """One complete SMTP reply from a plain or TLS socket (bounded)."""
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        lines = data.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) >= 4 and line[3:4] == b" " or len(line) == 3:
                return data
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def act_inject(host, port):
    raw = socket.create_connection((host, port), timeout=TIMEOUT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out("greeting", read_reply(raw).decode("ascii", "replace").split("\r\n")[0])
    raw.sendall(b"EHLO inject.e2e.test\r\n")
    out("ehlo", read_reply(raw).decode("ascii", "replace").split("\r\n")[-2][:3])
    raw.sendall(b"STARTTLS\r\nRSET\r\n")   # one write, one segment
    # read the 220 byte by byte, so no byte after it is consumed here
    line = b""
    while not line.endswith(b"\r\n") and len(line) < 512:
        c = raw.recv(1)
        if not c:
            break
        line += c
    out("starttls", line.decode("ascii", "replace").strip())
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    out("tls.version", tls.version())
    tls.settimeout(1.5)
    try:
        extra = tls.recv(4096)
        out("after_handshake", "closed" if not extra else repr(extra.decode("ascii", "replace")))
    except (socket.timeout, TimeoutError):
        out("after_handshake", "nothing")
    tls.settimeout(TIMEOUT)
    # the state was reset by STARTTLS: MAIL needs a new EHLO first
    tls.sendall(b"MAIL FROM:<inject@example.test>\r\n")
    out("mail_before_ehlo", read_reply(tls).decode("ascii", "replace").strip()[:3])
    tls.sendall(b"EHLO inject.e2e.test\r\n")
    reply = read_reply(tls).decode("ascii", "replace")
    out("ehlo2", reply.split("\r\n")[0][:3])
    out("ehlo2_starttls", "yes" if "STARTTLS" in reply else "no")
    tls.sendall(b"RSET\r\n")
    out("rset", read_reply(tls).decode("ascii", "replace").strip())
    tls.sendall(b"QUIT\r\n")
    out("quit", read_reply(tls).decode("ascii", "replace").strip()[:3])
    tls.close()


def act_send(host, port, mode, subject):
    smtp = connect(host, port, mode)
    out("tls.version", smtp.sock.version())
    send_one(smtp, subject)
    code, text = smtp.quit()
    out("quit", code)


def mech_method(smtp, mech):
    return getattr(smtp, "auth_" + mech.lower().replace("-", "_"))


def act_login(host, port, mode, mech, user, password, subject=None):
    smtp = connect(host, port, mode)
    out("advertised", smtp.esmtp_features.get("auth", "").strip())
    # narrow the server's list so that login() must use this mechanism
    smtp.esmtp_features["auth"] = mech
    try:
        code, text = smtp.login(user, password)
        out("login", "%d %s" % (code, text.decode("ascii", "replace")))
    except smtplib.SMTPAuthenticationError as e:
        out("login", "%d %s" % (e.smtp_code, e.smtp_error.decode("ascii", "replace")))
        smtp.quit()
        return
    if subject:
        send_one(smtp, subject)
    code, text = smtp.quit()
    out("quit", code)


def act_auth(host, port, mode, mech, user, password):
    smtp = connect(host, port, mode)
    smtp.user, smtp.password = user, password
    try:
        code, text = smtp.auth(mech, mech_method(smtp, mech))
        out("auth", "%d %s" % (code, text.decode("ascii", "replace")))
    except smtplib.SMTPAuthenticationError as e:
        out("auth", "%d %s" % (e.smtp_code, e.smtp_error.decode("ascii", "replace")))
    code, text = smtp.quit()
    out("quit", code)


def act_client_cert(host, port, cert, key):
    smtp = smtplib.SMTP(host, port, timeout=TIMEOUT)
    smtp.ehlo("smtplib.e2e.test")
    code, text = smtp.starttls(context=client_context(cert, key))
    out("starttls", code)
    code, text = smtp.ehlo("smtplib.e2e.test")
    out("ehlo2", code)
    code, text = smtp.quit()
    out("quit", code)


def act_stall(host, port):
    raw = socket.create_connection((host, port), timeout=TIMEOUT)
    ctx = client_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    out("client_hello_bytes", len(hello))
    raw.sendall(hello)
    start = time.monotonic()
    raw.settimeout(0.5)
    got = 0
    closed = None
    while time.monotonic() - start < TIMEOUT:
        try:
            chunk = raw.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        except ConnectionResetError:
            closed = time.monotonic() - start
            break
        if not chunk:
            closed = time.monotonic() - start
            break
        got += len(chunk)   # the server's flight; never answered
    out("server_bytes", got)
    out("closed_after", "%.2f" % closed if closed is not None else "never")
    raw.close()


ACTIONS = {
    "features": (act_features, 2),
    "inject": (act_inject, 2),
    "send": (act_send, 4),
    "login": (act_login, 6),
    "auth": (act_auth, 6),
    "client_cert": (act_client_cert, 4),
    "stall": (act_stall, 2),
}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ACTIONS:
        print(__doc__, file=sys.stderr)
        return 2
    fn, nargs = ACTIONS[sys.argv[1]]
    args = sys.argv[2:]
    if len(args) < nargs:
        print(__doc__, file=sys.stderr)
        return 2
    args[1] = int(args[1])
    try:
        fn(*args)
    except Exception as e:  # report, let the spec judge
        out("error", "%s: %s" % (type(e).__name__, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
