-- mail_send.lua - send one message over SMTP for the API specs: the whole
-- dialogue checked, the 250 reply returned (it carries the queue id).

local client = require "smtp_client"

local send = {}

local function b64(s)
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return ((s:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end

--- send.message(port, { from =, to = { ... }, data = "headers\r\n\r\nbody", auth = { user, pass } })
function send.message(port, o)
  local c = client.open(port)
  c:expect(220)
  local code = c:ehlo("sender.e2e.test")
  assert(code == 250)
  if o.auth then
    c:check("AUTH PLAIN " .. b64("\0" .. o.auth[1] .. "\0" .. o.auth[2]), 235)
  end
  c:check("MAIL FROM:<" .. (o.from or "sender@example.test") .. ">", 250)
  for _, r in ipairs(o.to or { "rcpt@example.test" }) do c:check("RCPT TO:<" .. r .. ">", 250) end
  c:check("DATA", 354)
  local data = o.data or "Subject: test\r\n\r\nhello\r\n"
  data = data:gsub("\r\n%.", "\r\n..")
  if data:sub(1, 1) == "." then data = "." .. data end
  if data:sub(-2) ~= "\r\n" then data = data .. "\r\n" end
  assert(c:send(data .. ".\r\n"))
  local reply = c:expect(250)
  c:check("QUIT", 221)
  c:close()
  return reply
end

return send
