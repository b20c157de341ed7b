-- End to end: MIME through GMime (kurir.mime, msg:mime(), and the API's
-- message view): nested multipart, base64 and quoted-printable, charsets
-- other than UTF-8, and malformed input that must neither crash the server
-- nor lose the message.

local harness = require "harness"
local http = require "http_client"
local send = require "mail_send"

teardown(harness.cleanup)

local function crlf(lines) return table.concat(lines, "\r\n") .. "\r\n" end

local CASES = {
  {
    name = "windows-1252 quoted-printable with an RFC 2047 subject in another charset",
    data = crlf {
      "Subject: =?windows-1252?q?=93quoted=94?= and =?utf-8?b?w6nDqA==?=",
      "Content-Type: text/plain; charset=windows-1252",
      "Content-Transfer-Encoding: quoted-printable",
      "",
      "price =80 5, soft=",
      " break",
    },
    subject = "\u{201C}quoted\u{201D} and éè",
    text = "price € 5, soft break",
  },
  {
    name = "ISO-2022-JP and Shift_JIS bodies",
    data = crlf {
      "Subject: jp",
      "MIME-Version: 1.0",
      "Content-Type: multipart/alternative; boundary=b",
      "",
      "--b",
      "Content-Type: text/plain; charset=iso-2022-jp",
      "",
      "\27$B$3$s$K$A$O\27(B",
      "--b",
      "Content-Type: text/html; charset=shift_jis",
      "Content-Transfer-Encoding: base64",
      "",
      "grGC8YLJgr+CzQ==",
      "--b--",
    },
    subject = "jp",
    text = "こんにちは",
    html = "こんにちは",
  },
  {
    name = "three levels of multipart with a message/rfc822 attachment",
    data = crlf {
      "Subject: nested",
      "MIME-Version: 1.0",
      "Content-Type: multipart/mixed; boundary=a",
      "",
      "--a",
      "Content-Type: multipart/related; boundary=b",
      "",
      "--b",
      "Content-Type: multipart/alternative; boundary=c",
      "",
      "--c",
      "Content-Type: text/plain",
      "",
      "deep text",
      "--c",
      "Content-Type: text/html",
      "",
      "<img src=\"cid:logo\">deep html",
      "--c--",
      "--b",
      "Content-Type: image/png",
      "Content-ID: <logo>",
      "Content-Transfer-Encoding: base64",
      "",
      "iVBORw0KGgo=",
      "--b--",
      "--a",
      "Content-Type: message/rfc822",
      "",
      "Subject: inner",
      "",
      "inner body",
      "--a--",
    },
    subject = "nested",
    text = "deep text",
    html = "<img src=\"cid:logo\">deep html",
    attachments = 1,
  },
  {
    name = "a missing closing boundary, bad base64 and a header without a colon",
    data = crlf {
      "Subject: broken",
      "this header has no colon",
      "Content-Type: multipart/mixed; boundary=zz",
      "",
      "--zz",
      "Content-Type: application/octet-stream; name=x.bin",
      "Content-Transfer-Encoding: base64",
      "",
      "!!!not*base64***",
      "--zz",
      "Content-Type: text/plain; charset=no-such-charset",
      "",
      "still \xff\xfe here",
    },
    subject = "broken",
  },
  {
    name = "no header at all and 8-bit junk",
    data = crlf { "", "\x80\x81\x82 junk \0 with NUL" },
    subject = "",
  },
}

describe("MIME parsing in the API", function()
  local srv, port

  lazy_setup(function()
    srv = harness.start {
      script_file = "scripts/mock.lua", args = { "--maildir", "{dir}/mail" },
      listen = { "127.0.0.1:0", "http://127.0.0.1:0" },
    }
    port = http.port_of(srv)
  end)
  lazy_teardown(function() harness.finish(srv) end)

  for i, case in ipairs(CASES) do
    it(case.name, function()
      send.message(srv.port, { to = { "m+case" .. i .. "@example.test" }, data = case.data })
      local l = http.get(port, "/api/v1/messages?mailbox=case" .. i)
      assert.equals(1, #l.json.messages)
      local m = l.json.messages[1]
      assert.equals(case.subject, m.subject)
      local full = http.get(port, "/api/v1/messages/" .. m.id)
      assert.equals(200, full.status)
      if case.text then assert.equals(case.text, (full.json.text:gsub("%s+$", ""))) end
      if case.html then assert.equals(case.html, (full.json.html:gsub("%s+$", ""))) end
      if case.attachments then assert.equals(case.attachments, #full.json.attachments) end
      assert.equals(200, http.get(port, "/api/v1/messages/" .. m.id .. "/raw").status)
    end)
  end

  it("is still serving SMTP and HTTP after all of them", function()
    assert.equals(#CASES, http.get(port, "/api/v1/messages").json.total)
  end)
end)

describe("msg:mime() in a script", function()
  it("gives parts, content types, filenames and decoded text to the data hook", function()
    local srv = harness.start { script = [[
local kurir = require "kurir"
function kurir.on.data(s, msg)
  local m = msg:mime()
  local out = {}
  for _, p in ipairs(m.parts) do
    out[#out + 1] = p.content_type .. "|" .. (p.filename or "") .. "|" .. (p.text or p.data)
  end
  s:log("mime", { subject = m.subject, parts = table.concat(out, ";"), from = m.from.addresses[1] })
  if kurir.mime("no headers here") ~= nil then return 500 end
  return 250
end
]] }
    send.message(srv.port, { data = crlf {
      "From: A <a@example.test>",
      "Subject: =?utf-8?q?h=C3=A9?=",
      "Content-Type: multipart/mixed; boundary=q",
      "",
      "--q",
      "Content-Type: text/plain; charset=iso-8859-1",
      "Content-Transfer-Encoding: quoted-printable",
      "",
      "caf=E9",
      "--q",
      "Content-Type: text/csv; name=t.csv",
      "Content-Disposition: attachment; filename=t.csv",
      "Content-Transfer-Encoding: base64",
      "",
      "YSxiCg==",
      "--q--",
    } })
    local line = srv:wait_log("event=mime[^\n]*")
    assert.truthy(line, srv:describe())
    local f = harness.logfmt(line)
    assert.equals("hé", f.subject)
    assert.equals("a@example.test", f.from)
    assert.equals("text/plain||café;text/csv|t.csv|a,b\n", f.parts)
    harness.finish(srv)
  end)
end)
