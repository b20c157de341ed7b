local net = require "kurir.net"

describe("kurir.net", function()
  local calls, raw, dns
  before_each(function()
    calls = {}
    raw = function(host, port, opts)
      calls[#calls + 1] = { host = host, port = port, opts = opts }
      if host == "192.0.2.9" then return nil, "connection refused" end
      return { peer = host }
    end
    dns = {
      addr = function(name)
        if name == "two.test" then return { "192.0.2.9", "192.0.2.10" } end
        if name == "none.test" then return {} end
        if name == "down.test" then return { "192.0.2.9" } end
        return nil, "NXDOMAIN"
      end,
    }
  end)

  it("passes addresses straight through", function()
    local connect = net.wrap(raw, dns)
    for _, h in ipairs { "127.0.0.1", "::1", "[::1]", "localhost" } do
      assert.same({ peer = h }, connect(h, 25))
    end
    assert.equals(4, #calls)
    assert.is_nil(calls[1].opts)
  end)

  it("resolves a name and tries each address, keeping the name for TLS", function()
    local connect = net.wrap(raw, dns)
    local sock = connect("two.test", 25, { tls = true })
    assert.same({ peer = "192.0.2.10" }, sock)
    assert.equals(2, #calls)
    assert.equals("192.0.2.9", calls[1].host)
    assert.equals("two.test", calls[2].opts.servername)
    assert.is_true(calls[2].opts.tls)
  end)

  it("keeps an explicit servername and does not change the caller's table", function()
    local connect = net.wrap(raw, dns)
    local opts = { servername = "other.test" }
    connect("two.test", 25, opts)
    assert.equals("other.test", calls[1].opts.servername)
    assert.are_not.equal(opts, calls[1].opts)
  end)

  it("reports lookup failures and empty answers with the name", function()
    local connect = net.wrap(raw, dns)
    assert.same({ nil, "nx.test: NXDOMAIN" }, { connect("nx.test", 25) })
    assert.same({ nil, "none.test: no address" }, { connect("none.test", 25) })
    assert.same({ nil, "connection refused" }, { connect("down.test", 25) })
  end)

  it("refuses options that are not a table", function()
    local connect = net.wrap(raw, dns)
    assert.has_error(function() connect("two.test", 25, "tls") end)
  end)
end)
