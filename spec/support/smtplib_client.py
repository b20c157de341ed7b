#!/usr/bin/env python3
"""Send one message to kurir with Python's smtplib (a third-party client).

usage: smtplib_client.py HOST PORT [SUBJECT]

Uses EHLO, PIPELINING-unaware sendmail() with a body that needs
dot-stuffing, prints sendmail()'s result (the refused recipients, {} when
all were accepted) and exits 0 on success, 1 otherwise."""

import smtplib
import sys


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    host, port = sys.argv[1], int(sys.argv[2])
    subject = sys.argv[3] if len(sys.argv) > 3 else "smtplib test"
    body = (
        "From: sender@example.test\r\n"
        "To: rcpt@example.test\r\n"
        "Subject: " + subject + "\r\n"
        "\r\n"
        "Hello from smtplib.\r\n"
        ".a line that starts with a dot\r\n"
        "Bye.\r\n"
    ).encode("ascii")
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        code, banner = smtp.ehlo("smtplib.e2e.test")
        if code != 250:
            print("EHLO failed:", code, banner)
            return 1
        refused = smtp.sendmail("sender@example.test", ["rcpt@example.test"], body)
        print("sendmail:", refused)
        code, text = smtp.quit()
        print("quit:", code, text.decode("ascii", "replace"))
        if refused or code != 221:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
