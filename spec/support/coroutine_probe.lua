-- coroutine_probe.lua - exercises coroutine.resume, wrap, close, status,
-- running and isyieldable, and returns what it saw as one string (one line
-- per observation). spec/e2e/coroutines_spec.lua runs it in stock Lua and
-- inside kurir (whose resume, wrap and close are its own, for the CPU
-- budget) and expects the same string. Loaded with loadfile from the same
-- path in both, so error positions read the same.

local out = {}

local function show(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "table" then return "table:" .. tostring(rawget(v, "tag")) end
  if t == "thread" or t == "function" or t == "userdata" then return t end
  return tostring(v)
end

local function put(...)
  local t = table.pack(...)
  for i = 1, t.n do t[i] = show(t[i]) end
  out[#out + 1] = table.concat(t, " | ", 1, t.n)
end

local function try(f, ...)
  put(pcall(f, ...))
end

local function closer(label, fail)
  return setmetatable({}, { __close = function(_, err)
    put(label, err)
    if fail then error(fail) end
  end })
end

local function body()
  -- resume: values both ways, status along the way, a dead coroutine
  local co = coroutine.create(function(a, b)
    local c = coroutine.yield(a + b, "y")
    return c * 2, "done"
  end)
  put(coroutine.status(co))
  put(coroutine.resume(co, 1, 2))
  put(coroutine.status(co))
  put(coroutine.resume(co, 21))
  put(coroutine.status(co))
  put(coroutine.resume(co))

  -- errors: a string gets its position, any other value stays itself
  put(coroutine.resume(coroutine.create(function() error("boom") end)))
  local obj = { tag = "obj" }
  local ok, got = coroutine.resume(coroutine.create(function() error(obj) end))
  put(ok, got == obj)
  put(coroutine.resume(coroutine.create(function() error() end)))

  -- misuse
  try(coroutine.resume)
  try(coroutine.resume, 42)
  put(coroutine.resume(coroutine.running()))

  -- a coroutine that resumed another is normal; it cannot be resumed or closed
  local outer
  outer = coroutine.create(function()
    local inner = coroutine.create(function()
      put("outer is", coroutine.status(outer))
      put(coroutine.resume(outer))
      try(coroutine.close, outer)
      return "inner done"
    end)
    put(coroutine.resume(inner))
    put(coroutine.status(inner))
  end)
  put(coroutine.resume(outer))

  -- running and isyieldable
  local me, ismain = coroutine.running()
  put(type(me), ismain, coroutine.isyieldable(), coroutine.status(me))
  put(coroutine.isyieldable(coroutine.create(print)))
  coroutine.wrap(function()
    local r, m = coroutine.running()
    put(type(r), m, r ~= me, coroutine.isyieldable(), coroutine.status(me))
  end)()

  -- wrap: values, end, a dead one, errors with and without position
  local gen = coroutine.wrap(function(n)
    for i = 1, n do coroutine.yield(i) end
    return "end"
  end)
  put(gen(2), gen(), gen())
  try(gen)
  try(coroutine.wrap(function() error("wrapped boom") end))
  try(coroutine.wrap(function() error("no position", 0) end))
  ok, got = pcall(coroutine.wrap(function() error(obj) end))
  put(ok, got == obj)
  try(coroutine.wrap(function() error() end))
  try(coroutine.wrap, 42)
  try(coroutine.wrap)

  -- wrap closes the to-be-closed variables of a coroutine that failed
  try(coroutine.wrap(function()
    local _a <close> = closer("a closed with") -- luacheck: no unused
    local _b <close> = closer("b closed with", "b fails") -- luacheck: no unused
    error("tbc")
  end))

  -- yielding across pcall inside a coroutine
  local py = coroutine.wrap(function()
    local pok, v = pcall(function() return coroutine.yield("in pcall") + 1 end)
    return pok, v
  end)
  put(py())
  put(py(41))

  -- close: suspended with a pending variable, failing close, dead, fresh,
  -- running, normal (above), not a coroutine
  local cl = coroutine.create(function()
    local _g <close> = closer("cl closed with") -- luacheck: no unused
    coroutine.yield(1)
  end)
  put(coroutine.resume(cl))
  put(coroutine.close(cl))
  put(coroutine.status(cl))
  put(coroutine.resume(cl))
  local ce = coroutine.create(function()
    local _g <close> = closer("ce closed with", "in close") -- luacheck: no unused
    coroutine.yield()
  end)
  coroutine.resume(ce)
  put(coroutine.close(ce))
  put(coroutine.status(ce))
  local dead = coroutine.create(function() error("died") end)
  put(coroutine.resume(dead))
  put(coroutine.close(dead))
  put(coroutine.close(dead))
  put(coroutine.close(coroutine.create(print)))
  try(coroutine.close, coroutine.running())
  try(coroutine.close, 42)

  -- wrapped coroutines inside wrapped coroutines
  local w1 = coroutine.wrap(function()
    local w2 = coroutine.wrap(function()
      coroutine.yield("deep")
      error("deep error")
    end)
    put(w2())
    try(w2)
    try(w2)
    return "w1 done"
  end)
  put(w1())

  -- nesting past the C stack fails the same way
  local function dive() return coroutine.wrap(dive)() end
  local dok, derr = pcall(dive)
  put(dok, tostring(derr):match("C stack overflow") or derr)
  local function dive_resume()
    local rok, rerr = coroutine.resume(coroutine.create(dive_resume))
    if not rok then error(rerr, 0) end
  end
  dok, derr = pcall(dive_resume)
  put(dok, tostring(derr):match("C stack overflow") or derr)
end

-- inside a coroutine of its own, so running/isyieldable do not depend on
-- where the probe itself runs
local pok, perr = pcall(coroutine.wrap(body))
put("probe", pok, perr)
return table.concat(out, "\n")
