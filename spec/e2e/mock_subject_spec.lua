-- End to end: the mock's "stored" log line shows the Subject decoded from
-- RFC 2047 encoded words (B and Q; UTF-8, ISO-8859-1), and a word it cannot
-- decode (unknown charset, bad encoding) as it was sent.

local harness = require "harness"
local client = require "smtp_client"

teardown(harness.cleanup)

describe("the mock's log line", function()
  it("decodes the Subject (RFC 2047)", function()
    local srv = harness.start { script_file = "scripts/mock.lua", args = { "--maildir", "{dir}/mail" } }
    local cases = {
      { "=?utf-8?q?Zo=C3=AB!?=", "Zoë!" },
      { "=?UTF-8?B?Wm/DqyE=?=", "Zoë!" },
      { "=?iso-8859-1?q?caf=E9?= =?ISO-8859-1?Q?_ol=E9?=", "café olé" },
      { "Re: =?ISO-8859-1?B?ZmFfbOk=?= done", "Re: fa_lé done" },
      { "=?koi8-r?b?8NLJ18XU?=", "=?koi8-r?b?8NLJ18XU?=" },
      { "=?utf-8?q?bad=ZZ?=", "=?utf-8?q?bad=ZZ?=" },
      { "=?utf-8?b?/w==?=", "=?utf-8?b?/w==?=" },
    }
    local c = client.open(srv.port)
    c:expect(220)
    c:ehlo("mock.e2e.test")
    for i, case in ipairs(cases) do
      c:check("MAIL FROM:<a@example.test>", 250)
      c:check("RCPT TO:<b@example.test>", 250)
      c:check("DATA", 354)
      assert(c:send("Subject: " .. case[1] .. "\r\n\r\nbody " .. i .. "\r\n.\r\n"))
      c:expect(250)
    end
    c:check("QUIT", 221)
    local lines = {}
    assert.truthy(srv:wait_log(function(text)
      lines = {}
      for l in text:gmatch("[^\n]*event=stored[^\n]*") do lines[#lines + 1] = l end
      return #lines == #cases
    end), srv:describe())
    for i, case in ipairs(cases) do
      assert.equals(case[2], harness.logfmt(lines[i]).subject, lines[i])
    end
    harness.finish(srv)
  end)
end)
