-- certs.lua - test certificates for the end-to-end TLS specs, made with the
-- openssl command line in a directory the spec owns (never committed):
--
--   local certs = require "certs"        -- spec/support is on package.path
--   local c = certs.make(dir)   -- raises on failure, with openssl's output
--   c.ca, c.cert, c.key, c.client_cert, c.client_key, c.other_key
--
-- A CA, a server certificate for "localhost" (SAN DNS:localhost,
-- IP:127.0.0.1, IP:::1) and a client certificate both signed by it, all EC
-- P-256, valid for two days; other_key is an unrelated key for the "key
-- does not match" test. The openssl configuration is written into dir too,
-- so that the system's openssl.cnf does not matter.

local certs = {}

local CONFIG = [[
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
]]

local EC = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
local DAYS = "2"

-- Single-quote a string for sh.
local function q(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

-- Run a command; on failure raise with its output.
local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = p:read("a")
  local ok, how, code = p:close()
  if not ok then
    error(("certs: command failed (%s %s): %s\n%s"):format(how, tostring(code), cmd, out), 2)
  end
  return out
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

function certs.make(dir)
  assert(type(dir) == "string" and dir ~= "", "certs.make: directory expected")
  run("mkdir -p " .. q(dir))
  local function path(name) return dir .. "/" .. name end
  local c = {
    ca = path("ca.pem"),
    ca_key = path("ca.key"),
    cert = path("server.pem"),
    key = path("server.key"),
    client_cert = path("client.pem"),
    client_key = path("client.key"),
    other_key = path("other.key"),
  }
  local cnf = path("openssl.cnf")
  write_file(cnf, CONFIG)

  run(("openssl req -x509 -config %s -extensions ca %s -keyout %s -out %s -days %s -subj %s")
    :format(q(cnf), EC, q(c.ca_key), q(c.ca), DAYS, q("/CN=kurir test CA")))

  local function signed(name, subject, key, cert, ext, serial)
    local csr = path(name .. ".csr")
    run(("openssl req -new -config %s %s -keyout %s -out %s -subj %s")
      :format(q(cnf), EC, q(key), q(csr), q(subject)))
    run(("openssl x509 -req -in %s -CA %s -CAkey %s -set_serial %d -days %s -extfile %s -extensions %s -out %s")
      :format(q(csr), q(c.ca), q(c.ca_key), serial, DAYS, q(cnf), ext, q(cert)))
    os.remove(csr)
  end
  signed("server", "/CN=localhost", c.key, c.cert, "server", 2)
  signed("client", "/CN=client.test/O=kurir tests", c.client_key, c.client_cert, "client", 3)

  run(("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s"):format(q(c.other_key)))
  return c
end

return certs
