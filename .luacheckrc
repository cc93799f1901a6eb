-- luacheck configuration: plain Lua everywhere, busted's globals in specs.
std = "max"
max_line_length = 110
codes = true

files["spec"] = { std = "+busted" }
files["lua/prefect/transport/ngx.lua"] = { read_globals = { "ngx" } }
