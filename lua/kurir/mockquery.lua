-- kurir.mockquery: the search syntax of the mock's API and web UI.
-- A query is space-separated terms that must all match:
--   from:X  to:X  subject:X   substring, case-insensitive (envelope and
--                             header addresses for from:/to:, which
--                             include Cc)
--   before:D  after:D         received before / after D: YYYY-MM-DD,
--                             YYYY-MM-DDTHH:MM[:SS] (UTC) or Unix seconds
--   has:attachment            at least one attachment
--   is:read  is:unread
--   anything else             free text: subject, addresses, text body
-- A value with spaces is quoted: subject:"two words", "free text".
-- A leading "-" negates a term (-from:noreply).

local query = {}

local function parse_time(v)
  if v:match("^%d+$") then return tonumber(v) end
  local y, mo, d, rest = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  local h, mi, s = 0, 0, 0
  if rest ~= "" then
    local hh, mm, ss = rest:match("^[T ](%d%d):(%d%d):?(%d*)Z?$")
    if not hh then return nil end
    h, mi, s = tonumber(hh), tonumber(mm), tonumber(ss) or 0
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or s > 60 then return nil end
  -- days from civil (proleptic Gregorian), so that no local time zone applies
  local yy = mo <= 2 and y - 1 or y
  local era = (yy >= 0 and yy or yy - 399) // 400
  local yoe = yy - era * 400
  local doy = (153 * (mo + (mo > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + h * 3600 + mi * 60 + s
end
query.parse_time = parse_time

local function tokens(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = s:sub(i, i)
    if c:match("%s") then
      i = i + 1
    else
      local buf = {}
      while i <= n and not s:sub(i, i):match("%s") do
        local ch = s:sub(i, i)
        if ch == '"' then
          local j = s:find('"', i + 1, true)
          if not j then return nil, "unterminated quote" end
          buf[#buf + 1] = s:sub(i + 1, j - 1)
          i = j + 1
        else
          buf[#buf + 1] = ch
          i = i + 1
        end
      end
      out[#out + 1] = table.concat(buf)
    end
  end
  return out
end

local FIELDS = { from = true, to = true, subject = true }

--- Parse a query string into a list of terms; nil, err on bad input.
function query.parse(s)
  local terms = {}
  if s == nil or s == "" then return terms end
  if #s > 4096 then return nil, "query too long" end
  local toks, err = tokens(s)
  if not toks then return nil, err end
  for _, t in ipairs(toks) do
    local neg = false
    if t:sub(1, 1) == "-" and #t > 1 then
      neg, t = true, t:sub(2)
    end
    local key, value = t:match("^(%a+):(.*)$")
    key = key and key:lower()
    local term
    if key and FIELDS[key] then
      term = { kind = key, value = value:lower() }
    elseif key == "before" or key == "after" then
      local when = parse_time(value)
      if not when then
        return nil, key .. ": expected YYYY-MM-DD[THH:MM[:SS]] or Unix seconds, got '" .. value .. "'"
      end
      term = { kind = key, value = when }
    elseif key == "has" and value:lower() == "attachment" then
      term = { kind = "attachment" }
    elseif key == "is" and (value:lower() == "read" or value:lower() == "unread") then
      term = { kind = value:lower() }
    else
      term = { kind = "text", value = t:lower() }
    end
    term.negate = neg
    if term.value ~= "" then terms[#terms + 1] = term end
  end
  return terms
end

local function has(hay, needle)
  return hay ~= nil and hay:find(needle, 1, true) ~= nil
end

local function term_match(t, e)
  local k = t.kind
  if k == "from" then return has(e.search_from, t.value) end
  if k == "to" then return has(e.search_to, t.value) end
  if k == "subject" then return has(e.subject:lower(), t.value) end
  if k == "before" then return e.received < t.value end
  if k == "after" then return e.received >= t.value end
  if k == "attachment" then return e.attachments > 0 end
  if k == "read" then return e.read end
  if k == "unread" then return not e.read end
  return has(e.search_text, t.value)
end

--- True when every term matches entry e.
function query.match(terms, e)
  for _, t in ipairs(terms or {}) do
    if term_match(t, e) == t.negate then return false end
  end
  return true
end

return query
