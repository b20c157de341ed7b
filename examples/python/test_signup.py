"""A pytest example: test code that sends mail, checked through kurir's
mock. Each test gets its own mailbox (the +tag of the recipient), so tests
can run in parallel against one server without seeing each other's mail,
and wait-for-message means no polling and no sleeps.

Run: python3 -m pytest examples/python (KURIR_BIN=path/to/kurir, default
build/kurir)."""
import json
import os
import re
import smtplib
import socket
import subprocess
import tempfile
import urllib.request
from email.message import EmailMessage

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KURIR = os.environ.get("KURIR_BIN", os.path.join(ROOT, "build", "kurir"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mock():
    """kurir's mock server: SMTP and HTTP ports, stopped at the end."""
    smtp = free_port()
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            [KURIR, "-l", f"127.0.0.1:{smtp}", "-l", "http://127.0.0.1:0",
             os.path.join(ROOT, "scripts", "mock.lua"), "--maildir", os.path.join(d, "mail")],
            stderr=subprocess.PIPE, text=True)
        http = None
        seen_smtp = False
        for line in proc.stderr:   # the listening lines name the real ports
            m = re.search(r"event=listening address=http://127\.0\.0\.1:(\d+)", line)
            if m:
                http = int(m.group(1))
            if f"address=127.0.0.1:{smtp}" in line:
                seen_smtp = True
            if http and seen_smtp:
                break
        yield {"smtp": smtp, "api": f"http://127.0.0.1:{http}/api/v1"}
        proc.terminate()
        proc.wait(timeout=10)


def wait_for_mail(mock, mailbox, count=1, timeout=10):
    """Blocks until `count` messages are in `mailbox` (HTTP 408 otherwise)."""
    url = f"{mock['api']}/wait?mailbox={mailbox}&count={count}&timeout={timeout}"
    with urllib.request.urlopen(url, timeout=timeout + 5) as r:
        return json.load(r)["messages"]


# --- the application under test --------------------------------------------
def send_welcome(smtp_port, address, name):
    msg = EmailMessage()
    msg["From"] = "app@example.test"
    msg["To"] = address
    msg["Subject"] = f"Welcome, {name}!"
    msg.set_content(f"Hello {name}, confirm at https://app.example.test/confirm?u={name}")
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.send_message(msg)


# --- the tests ---------------------------------------------------------------
def test_welcome_mail_is_sent(mock):
    send_welcome(mock["smtp"], "ana+test_welcome@example.test", "Ana")
    [m] = wait_for_mail(mock, "test_welcome")
    assert m["subject"] == "Welcome, Ana!"
    assert m["to"] == ["ana+test_welcome@example.test"]
    with urllib.request.urlopen(f"{mock['api']}/messages/{m['id']}") as r:
        body = json.load(r)
    assert "confirm?u=Ana" in body["text"]


def test_nothing_is_sent_means_408(mock):
    with pytest.raises(urllib.error.HTTPError) as e:
        wait_for_mail(mock, "test_silence", timeout=0.2)
    assert e.value.code == 408
