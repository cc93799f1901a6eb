-- A busted output handler: busted's plainTerminal output, plus the totals
-- written to the file named by $PREFECT_TALLY_FILE ("passed failed errors
-- pending") and, on the lines after it, the name and place of each failure and
-- error, so tools/test.sh never has to pick them out of the output, where a
-- spec's own messages may look alike, and can name them in its closing lines.
return function(options)
   local busted = require("busted")
   local handler = require("busted.outputHandlers.plainTerminal")(options)

   busted.subscribe({ "suite", "end" }, function()
      local path = os.getenv("PREFECT_TALLY_FILE")
      if path then
         local f = assert(io.open(path, "w"))
         f:write(string.format("%d %d %d %d\n", handler.successesCount, handler.failuresCount,
            handler.errorsCount, handler.pendingsCount))
         for _, list in ipairs({ handler.failures, handler.errors }) do
            for _, failure in ipairs(list) do
               local trace = failure.trace or {}
               local where = trace.short_src and (trace.short_src .. ":" .. tostring(trace.currentline))
               local name = (failure.name or "?"):gsub("\n", " ")
               f:write(name, " (", where or "?", ")\n")
            end
         end
         f:close()
      end
      return nil, true
   end)

   return handler
end
