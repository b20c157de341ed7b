-- End to end: every code block of README.md and docs/*.md that is marked as
-- an example is run against the real binary, so the docs stay true. The
-- marker is the fenced block's info string (docs/examples.md):
--
--   ```lua example                 a script: `kurir --check` must accept it
--   ```lua example server          also started on 127.0.0.1:0 and driven
--                                  through one transaction by a client
--   ```lua example file=NAME       saved as NAME for the console blocks
--                                  after it in the same document
--   ```sh example server           each line starts a kurir server: it is
--                                  started (ports made 0) and driven
--   ```console example             a transcript: each `$ ` line is run, the
--                                  lines under it are its exact output
--
-- Each document gets a scratch directory (the cwd of its examples) with
-- cert.pem and key.pem (a matching pair), scripts/ (the repository's), and
-- `kurir` on PATH as the binary under test.

local harness = require "harness"
local client = require "smtp_client"
local certs = require "certs"

local q = harness.quote

teardown(harness.cleanup)

-- The marked blocks of one Markdown file, in order.
local function examples(path)
  local text = assert(harness.read_file(harness.root .. "/" .. path), "cannot read " .. path)
  local out, cur, n = {}, nil, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if cur then
      if line:match("^```%s*$") then
        if cur.lang then
          cur.body = table.concat(cur.lines, "\n") .. "\n"
          out[#out + 1] = cur
        end
        cur = nil
      else
        cur.lines[#cur.lines + 1] = line
      end
    elseif line:match("^```") then
      cur = { lines = {} }   -- an unmarked block unless its info string says so
      local lang, info = line:match("^```(%S+)%s+(.*)$")
      local words = {}
      for w in (info or ""):gmatch("%S+") do words[#words + 1] = w end
      if lang and words[1] == "example" then
        cur.lang, cur.where, cur.server = lang, path .. ":" .. n, false
        for i = 2, #words do
          local w = words[i]
          if w == "server" then
            cur.server = true
          elseif w:match("^file=[%w._-]+$") then
            cur.file = w:sub(6)
          else
            error(path .. ":" .. n .. ": unknown example option '" .. w .. "'")
          end
        end
      end
    end
  end
  assert(not cur, path .. ": a code block is not closed")
  return out
end

local DOCS = { "README.md" }
for _, name in ipairs(harness.list_dir(harness.root .. "/docs")) do
  if name:match("%.md$") then DOCS[#DOCS + 1] = "docs/" .. name end
end

-- One transaction as a client would send it; returns the replies seen.
local function drive(port)
  local c = client.open(port)
  local seen = {}
  local function reply(code, text)
    seen[#seen + 1] = tostring(code) .. " " .. tostring(text)
    return code
  end
  assert.equals(220, reply(c:reply()), table.concat(seen, "\n"))
  assert.equals(250, reply(c:ehlo("client.example.test")), table.concat(seen, "\n"))
  if reply(c:cmd("MAIL FROM:<sender@example.test>")) == 250 and
      reply(c:cmd("RCPT TO:<rcpt@example.test>")) == 250 and
      reply(c:cmd("DATA")) == 354 then
    assert(c:send("From: sender@example.test\r\nSubject: docs example\r\n\r\nhello\r\n.\r\n"))
    assert.truthy(reply(c:reply()), table.concat(seen, "\n"))
  end
  assert.equals(221, reply(c:cmd("QUIT")), table.concat(seen, "\n"))
  c:close()
  return seen
end

-- Drive every plain listener of a started server, touch the smtps ones,
-- check the log, and stop it cleanly.
local function exercise(srv, where)
  local plain = 0
  for i, addr in ipairs(srv.addresses) do
    if addr:match("^smtps://") then
      local c = assert(client.connect(srv.ports[i]), where .. ": " .. addr .. " does not accept")
      c:close()
    else
      plain = plain + 1
      drive(srv.ports[i])
    end
  end
  assert.is_true(plain > 0, where .. ": no plain listener to drive")
  assert.falsy(srv:log():find("event=hook_error", 1, true), where .. ": " .. srv:describe())
  harness.finish(srv)
end

-- Start the kurir command line of an `sh example server` line: the
-- listeners get port 0 (one on 127.0.0.1:0 when it names none).
local function start_line(line, dir, where)
  line = line:gsub("%s+#.*$", "")
  local words = {}
  for w in line:gmatch("%S+") do words[#words + 1] = w end
  assert(words[1] == "kurir", where .. ": a server line starts with kurir: " .. line)
  local listen, rest, i = {}, {}, 2
  while i <= #words do
    if words[i] == "-l" then
      listen[#listen + 1] = words[i + 1]:gsub(":%d+$", ":0")
      i = i + 2
    else
      rest[#rest + 1] = words[i]
      i = i + 1
    end
  end
  if #listen == 0 then listen = { "127.0.0.1:0" } end
  local o = { listen = listen, cwd = dir }
  if rest[1] then
    o.script_file = rest[1]:sub(1, 1) == "/" and rest[1] or (dir .. "/" .. rest[1])
    o.args = { table.unpack(rest, 2) }
  end
  return harness.start(o)
end

-- Run a console transcript: `$ cmd` lines, each followed by its output.
local function transcript(ex, dir, bin)
  local steps, cur = {}, nil
  for _, line in ipairs(ex.lines) do
    local cmd = line:match("^%$ (.*)$")
    if cmd then
      cur = { cmd = cmd, out = {} }
      steps[#steps + 1] = cur
    else
      assert(cur, ex.where .. ": a transcript starts with a `$ ` line")
      cur.out[#cur.out + 1] = line
    end
  end
  assert.is_true(#steps > 0, ex.where .. ": empty transcript")
  for _, s in ipairs(steps) do
    local _, out = harness.sh("cd " .. q(dir) .. " && PATH=" .. q(bin) .. ":$PATH; " .. s.cmd .. " 2>&1")
    local want = table.concat(s.out, "\n")
    assert.equals(want, (out:gsub("\n$", "")), ex.where .. ": $ " .. s.cmd)
  end
end

describe("examples in the docs", function()
  local crt_dir, bin_dir, total = nil, nil, 0

  setup(function()
    crt_dir = harness.tmpdir()
    local crt = certs.make(crt_dir)
    crt_dir = { dir = crt_dir, cert = crt.cert, key = crt.key }
    bin_dir = harness.tmpdir()
    assert(os.execute("ln -s " .. q(harness.bin) .. " " .. q(bin_dir .. "/kurir")))
  end)

  teardown(function()
    if crt_dir then harness.rmtree(crt_dir.dir) end
    harness.rmtree(bin_dir)
  end)

  -- A fresh scratch directory for one document.
  local function scratch()
    local dir = harness.tmpdir()
    assert(os.execute("cp " .. q(crt_dir.cert) .. " " .. q(dir .. "/cert.pem") .. " && cp " ..
      q(crt_dir.key) .. " " .. q(dir .. "/key.pem") .. " && ln -s " .. q(harness.root .. "/scripts") ..
      " " .. q(dir .. "/scripts")))
    return dir
  end

  for _, doc in ipairs(DOCS) do
    it("runs every marked example of " .. doc, function()
      local dir = scratch()
      local list = examples(doc)
      for _, ex in ipairs(list) do
        total = total + 1
        if ex.lang == "lua" and ex.file then
          harness.write_file(dir .. "/" .. ex.file, ex.body)
        elseif ex.lang == "lua" then
          local src = ex.body
          if not src:find('require "kurir"', 1, true) and not src:find("require 'kurir'", 1, true) then
            src = 'local kurir = require "kurir"\n' .. src
          end
          harness.write_file(dir .. "/example.lua", src)
          local rc, out = harness.sh("cd " .. q(dir) .. " && " .. q(harness.bin) .. " --check example.lua 2>&1")
          assert.equals(0, rc, ex.where .. ": kurir --check refused the example:\n" .. out .. "\n" .. src)
          if ex.server then
            exercise(harness.start { script = src, cwd = dir }, ex.where)
          end
        elseif ex.lang == "sh" and ex.server then
          for _, line in ipairs(ex.lines) do
            if line:match("%S") and not line:match("^%s*#") then
              exercise(start_line(line, dir, ex.where), ex.where .. ": " .. line)
            end
          end
        elseif ex.lang == "console" then
          transcript(ex, dir, bin_dir)
        else
          error(ex.where .. ": no way to run a `" .. ex.lang .. " example` block")
        end
      end
      harness.rmtree(dir)
    end)
  end

  it("found marked examples at all", function()
    assert.is_true(total >= 8, "only " .. total .. " marked examples in " .. table.concat(DOCS, ", "))
  end)
end)
