-- spec/fault_matrix_spec.lua, run inside ngx_lua by tools/ngx-busted.lua:
-- the same fault matrix with the client's iterator over cosockets (the
-- transport "ngx"). Loaded into this file's environment, which holds the
-- runner's describe/it/assert.

-- luacheck: globals ngx

local path = (ngx.var.prefect_root or ".") .. "/spec/fault_matrix_spec.lua"
local chunk = assert(loadfile(path))
setfenv(chunk, getfenv(1))
chunk()
