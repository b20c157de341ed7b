#!/usr/bin/python3
"""Browser test of the mock's web UI: headless Chromium driven through
chromedriver by Python's selenium (Debian: chromium, chromium-driver,
python3-selenium). Starts its own kurir mock on free ports, sends mail with
smtplib, and checks every UI action: a message appears without a reload,
opens, switches views (HTML with remote content blocked, text, headers,
raw), attachment link, unread mark, search, mailbox switch, delete one,
delete all.

The "remote" image of the test mail is http://remote.example.test/; the
browser resolves that name to a small HTTP server of this test on
127.0.0.1 (--host-resolver-rules, every other name resolves to nothing), so
"was it fetched?" is answered by that server and no traffic leaves the
machine.

Screenshots go to $SCREENSHOT_DIR (default build/screenshots).
Usage: make test-browser, or /usr/bin/python3 tests/browser/ui_test.py
(Debian's python3, which has selenium; KURIR_BIN=path/to/kurir; CHROMIUM
and CHROMEDRIVER override /usr/bin/chromium and /usr/bin/chromedriver).
Exit status 0 when every check passed, 1 otherwise."""
import http.server
import os
import re
import select
import shutil
import smtplib
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
import zlib
from email.message import EmailMessage

from selenium import webdriver
from selenium.common.exceptions import (NoSuchElementException,
                                        StaleElementReferenceException)
from selenium.webdriver.chromium.remote_connection import ChromiumRemoteConnection
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KURIR = os.environ.get("KURIR_BIN", os.path.join(ROOT, "build", "kurir"))
SHOTS = os.environ.get("SCREENSHOT_DIR", os.path.join(ROOT, "build", "screenshots"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
TIMEOUT = 15.0 * (3 if os.environ.get("KURIR_SANITIZED") else 1)
REMOTE_HOST = "remote.example.test"


def png_pixel():
    """A 1x1 transparent PNG, the "tracking pixel" the remote host serves."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00\x00"))
            + chunk(b"IEND", b""))


PIXEL = png_pixel()
# urllib without any proxy from the environment: everything is on loopback
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def check(cond, message):
    """An assertion that also holds under python3 -O."""
    if not cond:
        raise AssertionError(message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Kurir:
    """The mock on a free SMTP port and an HTTP port it picks itself; the
    ports are read from its `event=listening` log lines."""

    def __init__(self, workdir):
        self.log = []
        smtp = free_port()
        self.proc = subprocess.Popen(
            [KURIR, "-l", "127.0.0.1:%d" % smtp, "-l", "http://127.0.0.1:0",
             os.path.join(ROOT, "scripts", "mock.lua"),
             "--maildir", os.path.join(workdir, "mail")],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        try:
            self.smtp, self.http = self._ports()
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            self.proc.stderr.close()
            raise
        # keep draining stderr so that kurir never blocks on a full pipe
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _ports(self):
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + TIMEOUT
        buf = b""
        while True:
            text = buf.decode("utf-8", "replace")
            smtp = re.search(r"event=listening address=127\.0\.0\.1:(\d+)", text)
            http = re.search(r"event=listening address=http://127\.0\.0\.1:(\d+)", text)
            if smtp and http:
                self.log.append(text)
                return int(smtp.group(1)), int(http.group(1))
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("kurir did not start within %.0f s:\n%s" % (TIMEOUT, text))
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = self.proc.wait(timeout=TIMEOUT)
                    raise RuntimeError("kurir exited %s:\n%s" % (code, text))
                buf += chunk

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line.decode("utf-8", "replace"))

    def stop(self):
        """SIGTERM to this PID; None when kurir stopped cleanly (exit 0),
        else what went wrong (a sanitizer report also ends in a non-zero
        exit)."""
        problem = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                problem = "kurir did not stop within %.0f s of SIGTERM" % TIMEOUT
                self.proc.kill()
                self.proc.wait()
        if problem is None and self.proc.returncode != 0:
            problem = "kurir exited %d" % self.proc.returncode
        self.drain.join(timeout=TIMEOUT)
        self.proc.stderr.close()
        return problem


class RemoteServer:
    """Stands in for the remote host of the test mail's image: records every
    request, answers with a pixel."""

    def __init__(self):
        self.hits = []
        self.fetched = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits.append("%s%s" % (self.headers.get("Host"), self.path))
                outer.fetched.set()
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PIXEL)))
                self.end_headers()
                self.wfile.write(PIXEL)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def send_mail(port, rcpt, subject):
    m = EmailMessage()
    m["From"] = "Sender <sender@example.test>"
    m["To"] = rcpt
    m["Subject"] = subject
    m.set_content("plain text of " + subject)
    m.add_alternative("<p>html of <b>%s</b></p><img src=\"http://%s/track.png\">"
                      % (subject, REMOTE_HOST), subtype="html")
    m.add_attachment(b"a,b\n", maintype="text", subtype="csv", filename="data.csv")
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as s:
        s.send_message(m)


def read_port(proc, stream, pattern, what):
    """The port a child prints once it listens (a line matching pattern),
    then keep draining its output so that it never blocks on a full pipe."""
    seen = []
    deadline = time.monotonic() + 30
    while True:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("%s did not start:\n%s" % (what, "".join(seen)))
        ready, _, _ = select.select([stream], [], [], 1)
        if ready:
            line = stream.readline()
            seen.append(line)
            m = re.search(pattern, line)
            if m:
                threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
                return int(m.group(1))


def stop_proc(proc):
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Browser:
    """Chromium and chromedriver, each started here on 127.0.0.1 with a port
    of its own choosing (read off the line it prints), stopped by PID.
    selenium's own launcher reaches both as "localhost", which a root
    without /etc/hosts (a fresh debootstrap) cannot resolve."""

    def __init__(self, workdir, remote_port):
        self.chromium = self.chromedriver = self.driver = None
        try:
            self.chromium = subprocess.Popen([
                CHROMIUM, "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,800", "--no-proxy-server", "--no-first-run",
                "--host-resolver-rules=MAP %s 127.0.0.1:%d, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
                % (REMOTE_HOST, remote_port),
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                "--user-data-dir=" + os.path.join(workdir, "chromium-profile"), "about:blank"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            devtools = read_port(self.chromium, self.chromium.stderr,
                                 r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", "chromium")
            self.chromedriver = subprocess.Popen([CHROMEDRIVER, "--port=0"], stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT, text=True)
            port = read_port(self.chromedriver, self.chromedriver.stdout,
                             r"started successfully on port (\d+)", "chromedriver")
            opts = webdriver.ChromeOptions()
            opts.debugger_address = "127.0.0.1:%d" % devtools
            self.driver = webdriver.Remote(command_executor=ChromiumRemoteConnection(
                remote_server_addr="http://127.0.0.1:%d" % port, vendor_prefix="goog",
                browser_name="chrome"), options=opts)
            # the screenshots show a 1280x800 viewport whatever the window frame takes
            self.driver.execute("executeCdpCommand", {"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}})
        except Exception:
            self.stop()
            raise

    def stop(self):
        if self.driver is not None:
            self.driver.quit()
        stop_proc(self.chromedriver)
        stop_proc(self.chromium)


class UI:
    """Waits and actions on the page by data-testid, re-finding elements on
    every try: the list is re-rendered on every change."""

    def __init__(self, driver):
        self.d = driver
        self.wait = WebDriverWait(driver, TIMEOUT, poll_frequency=0.05,
                                  ignored_exceptions=(NoSuchElementException,
                                                      StaleElementReferenceException))

    def all(self, testid):
        return self.d.find_elements(By.CSS_SELECTOR, "[data-testid='%s']" % testid)

    def find(self, testid, text=None):
        """The first shown element with that test id (and text), or None."""
        for e in self.all(testid):
            if e.is_displayed() and (text is None or text in e.get_attribute("textContent")):
                return e
        return None

    def wait_for(self, testid, text=None):
        what = testid + (" with %r" % text if text else "")
        return self.wait.until(lambda _: self.find(testid, text), "no %s shown" % what)

    def wait_hidden(self, testid):
        self.wait.until(lambda _: self.find(testid) is None, "%s still shown" % testid)

    def click(self, testid, text=None):
        def attempt(_):
            e = self.find(testid, text)
            if e is None:
                return False
            e.click()
            return True
        self.wait.until(attempt, "could not click %s %s" % (testid, text or ""))

    def read(self, testid, fn, text=None):
        """fn(element) of the element shown, retried if it was re-rendered."""
        def attempt(_):
            e = self.find(testid, text)
            return e is not None and [fn(e)]
        return self.wait.until(attempt, "no %s shown" % testid)[0]

    def wait_count(self, n):
        self.wait.until(lambda d: d.execute_script(
            "return document.querySelectorAll('[data-testid=message]').length") == n,
            "the list never showed %d messages" % n)

    def fill(self, testid, value):
        e = self.wait_for(testid)
        e.send_keys(Keys.CONTROL, "a")
        e.send_keys(Keys.BACKSPACE)
        if value:
            e.send_keys(value)
        have = e.get_property("value")
        check(have == value, "%s holds %r, not %r" % (testid, have, value))

    def select(self, testid, value):
        def attempt(_):
            Select(self.find(testid)).select_by_value(value)
            return True
        self.wait.until(attempt, "%s has no option %r" % (testid, value))

    def shot(self, name):
        path = os.path.join(SHOTS, name)
        check(self.d.save_screenshot(path), "screenshot %s failed" % path)


def run(ui, kurir, remote):
    d = ui.d
    d.get("http://127.0.0.1:%d/" % kurir.http)
    ui.wait_for("live", "live")

    # a message appears without a reload, marked unread
    send_mail(kurir.smtp, "dev@example.test", "First hello")
    ui.wait_for("message", "First hello")
    cls = ui.read("message", lambda e: e.get_attribute("class"), "First hello")
    check("unread" in cls.split(), "a new message is not marked unread: class=%r" % cls)
    ui.shot("1-list.png")

    # open it: HTML view in the sandboxed iframe, remote content blocked
    ui.click("message", "First hello")
    ui.wait_for("m-subject", "First hello")
    frame = ui.wait_for("html-frame")
    check(frame.get_dom_attribute("sandbox") == "",
          "the HTML iframe is not fully sandboxed: sandbox=%r" % frame.get_dom_attribute("sandbox"))
    d.switch_to.frame(frame)
    try:
        ui.wait.until(lambda _: any("First hello" in b.text for b in d.find_elements(By.TAG_NAME, "b")),
                      "the HTML body is not shown in the iframe")
    finally:
        d.switch_to.default_content()
    ui.wait_for("load-remote")
    check(remote.hits == [], "a remote image was fetched before the user asked: %r" % remote.hits)
    ui.shot("2-html.png")
    ui.wait.until(lambda _: d.execute_script(
        "return document.querySelector('[data-testid=message].unread') === null"),
        "the opened message is still marked unread")
    # remote content only on request
    ui.click("load-remote")
    check(remote.fetched.wait(TIMEOUT), "the remote image was not fetched after Load remote content")
    check(remote.hits == ["%s/track.png" % REMOTE_HOST], "unexpected remote requests: %r" % remote.hits)
    ui.wait_hidden("load-remote")

    # text, headers, raw
    ui.click("tab-text")
    ui.wait_for("text-body", "plain text of First hello")
    ui.click("tab-headers")
    ui.wait_for("headers-body", "Subject")
    ui.click("tab-raw")
    ui.wait_for("raw-body", "Content-Type: multipart/mixed")
    ui.shot("3-raw.png")
    atts = ui.all("attachment")
    check(len(atts) == 1, "expected one attachment link, got %d" % len(atts))
    check(re.search(r"data\.csv", atts[0].get_attribute("textContent")),
          "attachment link: %r" % atts[0].get_attribute("textContent"))
    href = urllib.parse.urljoin(d.current_url, atts[0].get_dom_attribute("href"))
    with DIRECT.open(href, timeout=TIMEOUT) as res:
        body = res.read()
    check(body == b"a,b\n", "attachment body: %r" % body)

    # search
    send_mail(kurir.smtp, "dev@example.test", "Second report")
    ui.wait_for("message", "Second report")
    ui.fill("search", "subject:second")
    ui.wait_count(1)
    text = ui.read("message", lambda e: e.get_attribute("textContent"))
    check("Second report" in text, "search shows %r" % text)
    ui.shot("4-search.png")
    ui.fill("search", "")
    ui.wait_count(2)

    # mailbox switch
    send_mail(kurir.smtp, "dev+teamb@example.test", "For team B")
    ui.wait_for("message", "For team B")
    ui.select("mailbox", "teamb")
    ui.wait_count(1)
    text = ui.read("message", lambda e: e.get_attribute("textContent"))
    check("For team B" in text, "mailbox teamb shows %r" % text)
    ui.shot("5-mailbox.png")
    ui.select("mailbox", "")
    ui.wait_count(3)

    # delete one, then all (after the confirmation dialog)
    ui.click("message", "Second report")
    ui.wait_for("m-subject", "Second report")
    ui.click("m-delete")
    ui.wait_count(2)
    ui.click("delete-all")
    alert = ui.wait.until(EC.alert_is_present(), "delete all asked no confirmation")
    check("Delete every message" in alert.text, "confirmation: %r" % alert.text)
    alert.accept()
    ui.wait_count(0)
    ui.shot("6-empty.png")


def main():
    os.makedirs(SHOTS, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="kurir-ui-")
    kurir = remote = browser = None
    ok = False
    try:
        kurir = Kurir(workdir)
        remote = RemoteServer()
        browser = Browser(workdir, remote.port)
        run(UI(browser.driver), kurir, remote)
        ok = True
    except Exception:  # every failure ends in one report with kurir's log
        print("ui_test: FAILED:", file=sys.stderr)
        traceback.print_exc()
    finally:
        if browser is not None:
            browser.stop()
        if remote is not None:
            remote.stop()
        if kurir is not None:
            problem = kurir.stop()
            if problem:
                print("ui_test: FAILED: %s" % problem, file=sys.stderr)
                ok = False
            if not ok:
                print("".join(kurir.log), file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
    if ok:
        print("ui_test: ok (screenshots in %s)" % SHOTS)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
