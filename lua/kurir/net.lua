-- kurir.net: what `kurir.connect` adds on top of the engine's socket:
-- a host name is resolved with kurir.dns (A, then AAAA) and each address
-- is tried in turn; the name is kept for SNI and certificate checks.
--
-- The engine installs it at load:  kurir.connect = net.wrap(raw, kurir.dns)

local net = {}

local function is_address(host)
  if host == "localhost" then return true end
  if host:sub(1, 1) == "/" then return true end   -- a Unix socket
  if host:match("^%d+%.%d+%.%d+%.%d+$") then return true end
  -- IPv6 literals, with or without brackets
  return host:find(":", 1, true) ~= nil
end
net.is_address = is_address

--- Returns a connect(host, port, opts) that resolves names through dns
-- and calls raw(address, port, opts) for each address until one works.
function net.wrap(raw, dns)
  return function(host, port, opts)
    if type(host) ~= "string" or is_address(host) then
      return raw(host, port, opts)
    end
    local addrs, err = dns.addr(host)
    if not addrs then return nil, host .. ": " .. tostring(err) end
    if #addrs == 0 then return nil, host .. ": no address" end
    local o = {}
    if opts ~= nil then
      if type(opts) ~= "table" then error("bad argument #3 to 'connect' (table expected)", 2) end
      for k, v in pairs(opts) do o[k] = v end
    end
    if o.servername == nil then o.servername = host end
    local last
    for _, a in ipairs(addrs) do
      local sock, e = raw(a, port, o)
      if sock then return sock end
      last = e
    end
    return nil, last
  end
end

return net
