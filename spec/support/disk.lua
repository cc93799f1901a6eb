--- Files for specs and their helpers: whole-file reads and writes, a test
-- of existence, and a private temporary directory.
-- @module disk

local disk = {}

--- The file's bytes, or nil and the reason when it cannot be read (as for
-- /proc/PID/stat of a process that has gone).
function disk.read(path)
   local f, err = io.open(path, "rb")
   if not f then return nil, err end
   local s = f:read("*a")
   f:close()
   return s
end

--- Writes `data` as the whole file; raises when it cannot.
function disk.write(path, data)
   local f = assert(io.open(path, "wb"))
   assert(f:write(data))
   f:close()
end

function disk.exists(path)
   local f = io.open(path, "rb")
   if f then f:close() end
   return f ~= nil
end

local function quote(s)
   return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- A new directory only this user can enter, next to where os.tmpname puts
-- files. The caller removes it (disk.remove_tree).
function disk.tmpdir()
   local base = os.tmpname() -- creates an empty file: the name is ours
   os.remove(base)
   local ok = os.execute("mkdir -m 700 " .. quote(base))
   assert(ok == true or ok == 0, "mkdir " .. base .. " failed")
   return base
end

--- Removes a directory made by disk.tmpdir, and what it holds.
function disk.remove_tree(path)
   assert(path:match("^/tmp/"), "disk.remove_tree: not under /tmp: " .. path)
   os.execute("rm -rf " .. quote(path))
end

return disk
