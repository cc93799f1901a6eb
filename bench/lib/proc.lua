--- What a benchmark reads about its own process: CPU time and resident memory.
--   cpu_seconds()  user + system CPU time of this process, all its threads (libcurl's included)
--   rss_kb()       VmRSS now;   peak_rss_kb()  VmHWM: the peak since the process started
local proc = {}

local function read_all(path)
   local f = io.open(path, "rb")
   if not f then return nil end
   local s = f:read("*a")
   f:close()
   return s
end

-- os.clock() is clock(3): the process's CPU time in microseconds, where /proc/self/stat's
-- utime + stime only moves in 10 ms ticks.
function proc.cpu_seconds()
   return os.clock()
end

local function status_kb(name)
   local status = read_all("/proc/self/status")
   if not status then return nil end
   return tonumber(status:match(name .. ":%s*(%d+) kB"))
end

function proc.rss_kb() return status_kb("VmRSS") end
function proc.peak_rss_kb() return status_kb("VmHWM") end

--- The median of a list of numbers (the list is sorted in place).
function proc.median(list)
   table.sort(list)
   local n = #list
   if n == 0 then return nil end
   if n % 2 == 1 then return list[(n + 1) / 2] end
   return (list[n / 2] + list[n / 2 + 1]) / 2
end

function proc.read_all(path) return read_all(path) end

return proc
