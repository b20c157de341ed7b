-- kurir.hooks for the specs that run the shipped modules without the
-- engine (busted --run=lua): the engine provides this module itself, with
-- the hook names of core/lua/engine.c. Here they are read from that file, so
-- that the names are still written down only once.

local here = debug.getinfo(1, "S").source:match("^@(.*)/spec/support/kurir/hooks%.lua$") or "."
local f = assert(io.open(here .. "/core/lua/engine.c", "rb"))
local src = f:read("a")
f:close()
local list = assert(src:match("hook_names%[HOOK_COUNT%]%s*=%s*(%b{})"), "no hook_names in core/lua/engine.c")
local names = {}
for name in list:gmatch('"([%w_]+)"') do names[#names + 1] = name end
return names
