-- End to end: kurir replaces coroutine.resume, coroutine.wrap and
-- coroutine.close with its own (they tell the CPU budget which thread
-- runs). spec/support/coroutine_probe.lua exercises the coroutine library
-- (values, errors with and without position, to-be-closed variables,
-- status, running, isyieldable, misuse, nesting to the C stack limit); its
-- output inside kurir, at load time, in a hook and in a task, must be the
-- output of stock Lua (this busted process) byte for byte.

local harness = require "harness"
local client = require "smtp_client"

teardown(harness.cleanup)

local probe = harness.root .. "/spec/support/coroutine_probe.lua"

describe("the coroutine library inside kurir", function()
  it("behaves as stock Lua's at load time, in a hook and in a task", function()
    local stock = assert(loadfile(probe))()
    assert.truthy(stock:find("probe | true | nil", 1, true), stock)

    local srv = harness.start {
      script = [[
local kurir = require "kurir"
local probe = arg[1]
local function run(name)
  local f = assert(io.open(name .. ".out", "w"))
  f:write(assert(loadfile(probe))())
  f:close()
end
run("load")
kurir.on.helo = function()
  run("hook")
  return 250, "probed"
end
kurir.spawn(function()
  run("task")
  kurir.log("task_probed", {})
end)
]],
      args = { probe },
    }
    local c = client.open(srv.port)
    c:expect(220)
    c:check("HELO probe.test", 250, "250 probed")
    c:close()
    assert.truthy(srv:wait_log("event=task_probed"), srv:describe())
    for _, where in ipairs { "load", "hook", "task" } do
      local got = harness.read_file(srv.dir .. "/" .. where .. ".out")
      assert.equals(stock, got, where)
    end
    harness.finish(srv)
  end)
end)
