--- Throw-away TLS material for specs: a CA and a server certificate for
-- 127.0.0.1/localhost signed by it, made with the `openssl` command in a
-- fresh temporary directory at test time (nothing is checked in).
-- @module tls

local disk = require("disk")

local tls = {}

local function run(cmd)
   local ok, how, code = os.execute(cmd .. " >/dev/null 2>&1")
   -- Lua 5.1/LuaJIT return the status number; 5.2+ return true/nil, "exit", code.
   if ok == true or ok == 0 then
      return true
   end
   error(string.format("tls: command failed (%s %s): %s", tostring(how), tostring(code), cmd), 2)
end

local function quote(s)
   return "'" .. s:gsub("'", "'\\''") .. "'"
end

local write = disk.write

local function make_ca(dir, name, cn)
   local key, cert = dir .. "/" .. name .. ".key", dir .. "/" .. name .. ".pem"
   run(table.concat({
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
      "-keyout", quote(key), "-out", quote(cert), "-days 2",
      "-subj", quote("/CN=" .. cn),
      "-addext", quote("basicConstraints=critical,CA:TRUE"),
      "-addext", quote("keyUsage=critical,keyCertSign,cRLSign"),
   }, " "))
   return key, cert
end

--- Makes a CA, a server key and a server certificate for 127.0.0.1 and
-- localhost signed by that CA, plus a second, unrelated CA.
-- @return table with `dir`, `ca_file` (the signing CA), `other_ca_file`,
--   `cert`, `key` (the server's), and `remove()` to delete them all.
function tls.make()
   local dir = disk.tmpdir()
   local ca_key, ca_file = make_ca(dir, "ca", "lua-prefect test CA")
   local _, other_ca_file = make_ca(dir, "other-ca", "lua-prefect unrelated CA")
   local key, csr, cert = dir .. "/server.key", dir .. "/server.csr", dir .. "/server.pem"
   local ext = dir .. "/server.ext"
   write(ext, table.concat({
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
      "basicConstraints=CA:FALSE",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth",
      "",
   }, "\n"))
   run(table.concat({
      "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
      "-keyout", quote(key), "-out", quote(csr), "-subj", quote("/CN=127.0.0.1"),
   }, " "))
   run(table.concat({
      "openssl x509 -req -in", quote(csr), "-CA", quote(ca_file), "-CAkey", quote(ca_key),
      "-CAcreateserial -days 2 -out", quote(cert), "-extfile", quote(ext),
   }, " "))
   return {
      dir = dir,
      ca_file = ca_file,
      other_ca_file = other_ca_file,
      cert = cert,
      key = key,
      remove = function()
         disk.remove_tree(dir)
      end,
   }
end

return tls
