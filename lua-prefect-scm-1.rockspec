rockspec_format = "3.0"
package = "lua-prefect"
version = "scm-1"

source = {
   url = "git+https://github.com/lua-prefect/lua-prefect.git",
}

description = {
   summary = "Read Prefect task runs from Lua: a filter DSL, a paging client and a streaming C decoder",
   detailed = [[
lua-prefect queries Prefect's POST /api/task_runs/filter from Lua 5.4 and LuaJIT
(OpenResty included). A C core on libcurl streams each page through a JSON
decoder that builds task runs straight into Lua tables; a thin Lua layer
compiles friendly queries to Prefect's exact request body and pages through
any number of results with flat memory.
]],
   license = "MIT",
   labels = { "prefect", "http", "json", "openresty" },
}

dependencies = {
   "lua >= 5.1",
   "lua-cjson",
   -- The bundled test server (prefect.testing.*, bin/prefect-test-server) also
   -- needs luasocket and lua-zlib, and luasec for its optional TLS.
}

external_dependencies = {
   CURL = { header = "curl/curl.h", library = "curl" },
}

build = {
   -- `make rock-core` (see the Makefile) compiles prefect.core in one compiler call, so no object
   -- file is left in csrc/; luarocks installs what `install` lists.
   type = "make",
   build_target = "rock-core",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LIBFLAG = "$(LIBFLAG)",
      LUA_INCDIR = "$(LUA_INCDIR)",
      CURL_INCDIR = "$(CURL_INCDIR)",
      CURL_LIBDIR = "$(CURL_LIBDIR)",
      VERSION = "scm-1",
   },
   install_pass = false,
   install = {
      lua = {
         ["prefect.calendar"] = "lua/prefect/calendar.lua",
         ["prefect.client"] = "lua/prefect/client.lua",
         ["prefect.csrf"] = "lua/prefect/csrf.lua",
         ["prefect.errors"] = "lua/prefect/errors.lua",
         ["prefect.exchange"] = "lua/prefect/exchange.lua",
         ["prefect.filter"] = "lua/prefect/filter.lua",
         ["prefect.filter.encode"] = "lua/prefect/filter/encode.lua",
         ["prefect.filter.fail"] = "lua/prefect/filter/fail.lua",
         ["prefect.filter.friendly"] = "lua/prefect/filter/friendly.lua",
         ["prefect.filter.merge"] = "lua/prefect/filter/merge.lua",
         ["prefect.filter.raw"] = "lua/prefect/filter/raw.lua",
         ["prefect.filter.schema"] = "lua/prefect/filter/schema.lua",
         ["prefect.filter.suggest"] = "lua/prefect/filter/suggest.lua",
         ["prefect.filter.time"] = "lua/prefect/filter/time.lua",
         ["prefect.filter.values"] = "lua/prefect/filter/values.lua",
         ["prefect.follow"] = "lua/prefect/follow.lua",
         ["prefect.include"] = "lua/prefect/include.lua",
         ["prefect"] = "lua/prefect/init.lua",
         ["prefect.options"] = "lua/prefect/options.lua",
         ["prefect.pager"] = "lua/prefect/pager.lua",
         ["prefect.retry"] = "lua/prefect/retry.lua",
         ["prefect.testing.api"] = "lua/prefect/testing/api.lua",
         ["prefect.testing.conn"] = "lua/prefect/testing/conn.lua",
         ["prefect.testing.dataset"] = "lua/prefect/testing/dataset.lua",
         ["prefect.testing.faults"] = "lua/prefect/testing/faults.lua",
         ["prefect.testing.gzip"] = "lua/prefect/testing/gzip.lua",
         ["prefect.testing.http"] = "lua/prefect/testing/http.lua",
         ["prefect.testing.loop"] = "lua/prefect/testing/loop.lua",
         ["prefect.testing.query"] = "lua/prefect/testing/query.lua",
         ["prefect.testing.server"] = "lua/prefect/testing/server.lua",
         ["prefect.transport"] = "lua/prefect/transport/init.lua",
         ["prefect.transport.curl"] = "lua/prefect/transport/curl.lua",
         ["prefect.transport.decoders"] = "lua/prefect/transport/decoders.lua",
         ["prefect.transport.ngx"] = "lua/prefect/transport/ngx.lua",
         ["prefect.transport.ngx_http"] = "lua/prefect/transport/ngx_http.lua",
      },
      lib = { ["prefect.core"] = "build/rock/prefect/core.so" },
      bin = { ["prefect-test-server"] = "bin/prefect-test-server" },
   },
}
