--- Nearest-key suggestion for misspelt names ("stat" -> "state").
-- Uses the optimal-string-alignment distance (Levenshtein plus adjacent
-- transpositions), case-insensitively, so "stae" and "Stat" both find "state".

local suggest = {}

--- Edit distance between two strings (insert, delete, substitute, swap two neighbours).
function suggest.distance(a, b)
   local la, lb = #a, #b
   if la == 0 then return lb end
   if lb == 0 then return la end
   local prev2, prev = {}, {}
   for j = 0, lb do prev[j] = j end
   for i = 1, la do
      local cur = { [0] = i }
      local ca = a:byte(i)
      for j = 1, lb do
         local cb = b:byte(j)
         local cost = (ca == cb) and 0 or 1
         local best = prev[j] + 1
         if cur[j - 1] + 1 < best then best = cur[j - 1] + 1 end
         if prev[j - 1] + cost < best then best = prev[j - 1] + cost end
         if i > 1 and j > 1 and ca == b:byte(j - 1) and a:byte(i - 1) == cb then
            if prev2[j - 2] + 1 < best then best = prev2[j - 2] + 1 end
         end
         cur[j] = best
      end
      prev2, prev = prev, cur
   end
   return prev[lb]
end

local function squash(s)
   return (s:lower():gsub("[_%-%s]", ""))
end

--- The candidate nearest to `word`, or nil when none is close enough.
-- Close enough: the same letters ignoring case and underscores, or an edit
-- distance of at most 2 that is also less than half the word's length.
-- Ties go to the alphabetically first candidate, so the answer never depends
-- on table order. `aliases` (optional) maps other names straight to a candidate
-- (e.g. Prefect's "start_time" to the friendly "started").
function suggest.nearest(word, candidates, aliases)
   if type(word) ~= "string" then return nil end
   if aliases and aliases[word] then return aliases[word] end
   local lower, squashed = word:lower(), squash(word)
   local sorted = {}
   for i = 1, #candidates do sorted[i] = candidates[i] end
   table.sort(sorted)
   local best, best_d
   for _, c in ipairs(sorted) do
      local d
      if squash(c) == squashed then
         d = 0
      else
         d = suggest.distance(lower, c:lower())
      end
      if d <= 2 and d * 2 < #word and (best_d == nil or d < best_d) then
         best, best_d = c, d
      end
   end
   return best
end

return suggest
