// Browser test of the mock's web UI: headless Chromium (Debian's) driven by
// playwright-core. Starts its own kurir mock on free ports, sends mail with
// Python's smtplib, and checks every UI action: a message appears without a
// reload, opens, switches views (HTML with remote content blocked, text,
// headers, raw), attachment link, unread mark, search, mailbox switch,
// delete one, delete all. Screenshots go to $SCREENSHOT_DIR (default
// build/screenshots). Usage: node ui_test.mjs (KURIR_BIN=path/to/kurir).
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import net from "node:net";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const bin = process.env.KURIR_BIN || join(root, "build/kurir");
const shots = process.env.SCREENSHOT_DIR || join(root, "build/screenshots");
const browserPath = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 15000 * (process.env.KURIR_SANITIZED ? 3 : 1);
mkdirSync(shots, { recursive: true });

function freePort() {
  return new Promise((res) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => { const { port } = srv.address(); srv.close(() => res(port)); });
  });
}

async function startKurir(dir) {
  const smtpPort = await freePort();
  return new Promise((resolveStart, reject) => {
    const p = spawn(bin, ["-l", `127.0.0.1:${smtpPort}`, "-l", "http://127.0.0.1:0", join(root, "scripts/mock.lua"),
      "--maildir", join(dir, "mail")], { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    const timer = setTimeout(() => reject(new Error("kurir did not start:\n" + log)), TIMEOUT);
    p.stderr.on("data", (d) => {
      log += d;
      const smtp = log.match(/event=listening address=127\.0\.0\.1:(\d+)/);
      const http = log.match(/event=listening address=http:\/\/127\.0\.0\.1:(\d+)/);
      if (smtp && http) {
        clearTimeout(timer);
        resolveStart({ proc: p, smtp: Number(smtp[1]), http: Number(http[1]), log: () => log });
      }
    });
    p.on("exit", (code) => reject(new Error(`kurir exited ${code}:\n${log}`)));
  });
}

function sendMail(port, rcpt, subject, extra = "") {
  const py = `
import smtplib, sys
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "Sender <sender@example.test>"
m["To"] = sys.argv[2]
m["Subject"] = sys.argv[3]
m.set_content("plain text of " + sys.argv[3])
m.add_alternative('<p>html of <b>' + sys.argv[3] + '</b></p><img src="http://203.0.113.1/track.png">' + sys.argv[4], subtype="html")
m.add_attachment(b"a,b\\n", maintype="text", subtype="csv", filename="data.csv")
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
    s.send_message(m)
`;
  execFileSync("python3", ["-c", py, String(port), rcpt, subject, extra], { timeout: TIMEOUT });
}

const dir = mkdtempSync(join(tmpdir(), "kurir-ui-"));
const kurir = await startKurir(dir);
const browser = await chromium.launch({ executablePath: browserPath, headless: true, args: ["--no-sandbox"] });
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(TIMEOUT);
  page.on("dialog", (d) => d.accept());
  const remote = [];
  page.on("request", (r) => { if (r.url().includes("203.0.113.1")) remote.push(r.url()); });
  await page.goto(`http://127.0.0.1:${kurir.http}/`);
  await page.getByTestId("live").filter({ hasText: "live" }).waitFor();

  // a message appears without a reload, marked unread
  sendMail(kurir.smtp, "dev@example.test", "First hello");
  const first = page.getByTestId("message").filter({ hasText: "First hello" });
  await first.waitFor();
  assert.match(await first.getAttribute("class"), /unread/);
  await page.screenshot({ path: join(shots, "1-list.png") });

  // open it: HTML view in the sandboxed iframe, remote content blocked
  await first.click();
  await page.getByTestId("m-subject").filter({ hasText: "First hello" }).waitFor();
  const frame = page.frameLocator("[data-testid=html-frame]");
  await frame.locator("b", { hasText: "First hello" }).waitFor();
  assert.equal(await page.getByTestId("html-frame").getAttribute("sandbox"), "");
  await page.getByTestId("load-remote").waitFor();
  assert.deepEqual(remote, [], "a remote image was fetched before the user asked");
  await page.screenshot({ path: join(shots, "2-html.png") });
  await page.waitForFunction(() => !document.querySelector("[data-testid=message].unread"));
  // remote content only on request
  const fetched = page.waitForEvent("request", (r) => r.url().includes("203.0.113.1"));
  await page.getByTestId("load-remote").click();
  await fetched;
  await page.getByTestId("load-remote").waitFor({ state: "hidden" });

  // text, headers, raw
  await page.getByTestId("tab-text").click();
  await page.getByTestId("text-body").filter({ hasText: "plain text of First hello" }).waitFor();
  await page.getByTestId("tab-headers").click();
  await page.getByTestId("headers-body").filter({ hasText: "Subject" }).waitFor();
  await page.getByTestId("tab-raw").click();
  await page.getByTestId("raw-body").filter({ hasText: "Content-Type: multipart/mixed" }).waitFor();
  await page.screenshot({ path: join(shots, "3-raw.png") });
  const att = page.getByTestId("attachment");
  assert.match(await att.textContent(), /data\.csv/);
  const res = await page.request.get(new URL(await att.getAttribute("href"), page.url()).href);
  assert.equal(await res.text(), "a,b\n");

  // search
  sendMail(kurir.smtp, "dev@example.test", "Second report");
  await page.getByTestId("message").filter({ hasText: "Second report" }).waitFor();
  await page.getByTestId("search").fill("subject:second");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=message]").length === 1);
  assert.match(await page.getByTestId("message").textContent(), /Second report/);
  await page.screenshot({ path: join(shots, "4-search.png") });
  await page.getByTestId("search").fill("");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=message]").length === 2);

  // mailbox switch
  sendMail(kurir.smtp, "dev+teamb@example.test", "For team B");
  await page.getByTestId("message").filter({ hasText: "For team B" }).waitFor();
  await page.getByTestId("mailbox").selectOption("teamb");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=message]").length === 1);
  assert.match(await page.getByTestId("message").textContent(), /For team B/);
  await page.screenshot({ path: join(shots, "5-mailbox.png") });
  await page.getByTestId("mailbox").selectOption("");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=message]").length === 3);

  // delete one, then all
  await page.getByTestId("message").filter({ hasText: "Second report" }).click();
  await page.getByTestId("m-subject").filter({ hasText: "Second report" }).waitFor();
  await page.getByTestId("m-delete").click();
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=message]").length === 2);
  await page.getByTestId("delete-all").click();
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=message]").length === 0);
  await page.screenshot({ path: join(shots, "6-empty.png") });
  console.log("ui_test: ok (screenshots in " + shots + ")");
} catch (e) {
  failed = true;
  console.error("ui_test: FAILED:", e);
  console.error(kurir.log());
} finally {
  await browser.close();
  kurir.proc.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
