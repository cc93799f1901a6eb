--- gzip for the test server: compressing response bodies, and "gzip bombs" (a small gzip stream that
-- inflates to a huge document) built without ever holding the inflated bytes.
-- @module prefect.testing.gzip

local zlib = require("zlib")

local gzip = {}

local GZIP_WINDOW = 31 -- 15 bits of window, +16: gzip header and trailer
local RAW_WINDOW = -15 -- raw deflate: the bomb writes its own header and trailer
local UNIT = 1048576   -- inflated bytes per repeated block of a bomb

--- Compresses a body given as a string or an array of strings. Returns an array of pieces and their
-- total length.
function gzip.compress(body, level)
   local stream = zlib.deflate(level or 6, GZIP_WINDOW)
   local out, length = {}, 0
   local function add(piece)
      if #piece > 0 then
         out[#out + 1] = piece
         length = length + #piece
      end
   end
   if type(body) == "string" then
      add(stream(body, "finish"))
   else
      for _, piece in ipairs(body) do add(stream(piece)) end
      add(stream("", "finish"))
   end
   return out, length
end

--- Inflates a gzip string (for tests and for the helper's client).
function gzip.decompress(data)
   return (zlib.inflate(GZIP_WINDOW)(data))
end

local function le32(n)
   n = n % 4294967296
   local b = {}
   for i = 1, 4 do
      b[i] = string.char(n % 256)
      n = math.floor(n / 256)
   end
   return table.concat(b)
end

local bombs = {}

-- The document a bomb inflates to: "[" .. spaces .. "]", exactly n bytes (valid JSON from n = 2).
local function build_bomb(n)
   local raw = zlib.deflate(9, RAW_WINDOW)
   local crc = zlib.crc32()
   local opening = n >= 1 and "[" or ""
   local closing = n >= 2 and "]" or ""
   local spaces = math.max(n - 2, 0)
   local count = math.floor(spaces / UNIT)
   local rest = spaces - count * UNIT

   local head = "\31\139\8\0\0\0\0\0\0\3" .. raw(opening, "full")
   crc(opening)

   -- After a full flush the compressor starts afresh, so the same input gives the same bytes and the
   -- block can be repeated as often as needed without compressing it again.
   local unit_spaces = string.rep(" ", UNIT)
   local unit = raw(unit_spaces, "full")
   assert(raw(unit_spaces, "full") == unit, "prefect.testing.gzip: deflate blocks are not repeatable")
   local unit_crc = zlib.crc32()
   unit_crc(unit_spaces)
   for _ = 1, count do crc(unit_crc) end

   local last = string.rep(" ", rest) .. closing
   local checksum = crc(last)
   local tail = raw(last, "finish") .. le32(math.floor(checksum)) .. le32(n)
   return {
      head = head,
      unit = unit,
      count = count,
      tail = tail,
      length = #head + count * #unit + #tail,
   }
end

--- A gzip stream that inflates to `n` bytes ("[" + spaces + "]"). Returns its length and an iterator
-- over its pieces; the pieces are computed once per `n` and stay small (about 1 KB per inflated MB).
function gzip.bomb(n)
   local bomb = bombs[n]
   if not bomb then
      bomb = build_bomb(n)
      bombs[n] = bomb
   end
   local i = -1
   return bomb.length, function()
      i = i + 1
      if i == 0 then return bomb.head end
      if i <= bomb.count then return bomb.unit end
      if i == bomb.count + 1 then return bomb.tail end
      return nil
   end
end

return gzip
