-- A busted output handler: busted's plainTerminal output, plus the totals
-- written to the file named by $PREFECT_TALLY_FILE ("passed failed errors
-- pending"), so tools/test.sh never has to pick them out of the output, where
-- a spec's own messages may look alike.
return function(options)
   local busted = require("busted")
   local handler = require("busted.outputHandlers.plainTerminal")(options)

   busted.subscribe({ "suite", "end" }, function()
      local path = os.getenv("PREFECT_TALLY_FILE")
      if path then
         local f = assert(io.open(path, "w"))
         f:write(string.format("%d %d %d %d\n", handler.successesCount, handler.failuresCount,
            handler.errorsCount, handler.pendingsCount))
         f:close()
      end
      return nil, true
   end)

   return handler
end
