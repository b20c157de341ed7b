// A JavaScript example (node:test + nodemailer + fetch): test code that
// sends mail, checked through kurir's mock. Each test uses its own mailbox
// (the +tag of the recipient) and waits for the message instead of polling.
// Run: NODE_PATH=/usr/share/nodejs node --test examples/js/signup.test.mjs
// (KURIR_BIN=path/to/kurir). nodemailer is Debian's node-nodemailer, under
// /usr/share/nodejs; an npm-installed one is found the same way. It is
// loaded with require, which honours NODE_PATH (an ES import does not).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import { createRequire } from "node:module";

const nodemailer = createRequire(import.meta.url)("nodemailer");
const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const bin = process.env.KURIR_BIN || join(root, "build/kurir");
let kurir, smtpPort, api, dir;

const freePort = () => new Promise((res) => {
  const s = net.createServer().listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => res(port)); });
});

before(async () => {
  smtpPort = await freePort();
  dir = mkdtempSync(join(tmpdir(), "kurir-js-"));
  kurir = spawn(bin, ["-l", `127.0.0.1:${smtpPort}`, "-l", "http://127.0.0.1:0", join(root, "scripts/mock.lua"),
    "--maildir", join(dir, "mail")], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  await new Promise((res, rej) => {
    kurir.on("exit", (c) => rej(new Error(`kurir exited ${c}: ${log}`)));
    kurir.stderr.on("data", (d) => {
      log += d;
      const http = log.match(/address=http:\/\/127\.0\.0\.1:(\d+)/);
      if (http && log.includes(`address=127.0.0.1:${smtpPort}`)) {
        api = `http://127.0.0.1:${http[1]}/api/v1`;
        res();
      }
    });
  });
});

after(() => {
  kurir.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
});

// the application under test
async function sendPasswordReset(to) {
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: smtpPort, secure: false, ignoreTLS: true });
  await transport.sendMail({
    from: "app@example.test", to, subject: "Reset your password",
    text: "Use this link: https://app.example.test/reset?t=abc123",
    html: "<p>Use <a href=\"https://app.example.test/reset?t=abc123\">this link</a></p>",
  });
}

test("the reset mail carries the link", async () => {
  await sendPasswordReset("bob+reset@example.test");
  const res = await fetch(`${api}/wait?mailbox=reset&count=1&timeout=10`);
  assert.equal(res.status, 200);
  const [m] = (await res.json()).messages;
  assert.equal(m.subject, "Reset your password");
  const full = await (await fetch(`${api}/messages/${m.id}`)).json();
  assert.match(full.text, /reset\?t=abc123/);
  assert.match(full.html, /<a href=/);
});

test("no mail: the wait ends with 408", async () => {
  const res = await fetch(`${api}/wait?mailbox=nothing-here&timeout=0.2`);
  assert.equal(res.status, 408);
});
