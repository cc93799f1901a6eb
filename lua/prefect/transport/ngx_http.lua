--- HTTP/1.1 framing for the cosocket transport: the request's bytes, the
-- response head, and a body reader that hands out slices as they arrive
-- (Content-Length, chunked, or read until close).
--
-- It works on any object with `receive(pattern_or_size)` and
-- `receiveany(max)` (an `ngx.socket.tcp`), and knows nothing of Prefect,
-- TLS, pools or errors objects: failures come back as
-- `nil, message, class` where class is "timeout", "closed", "io" or
-- "protocol", and the caller turns them into its own error kinds.
-- @module prefect.transport.ngx_http

local M = {}

--- Largest response head accepted, in bytes, and most header lines.
M.MAX_HEAD_BYTES = 64 * 1024
M.MAX_HEAD_LINES = 200

--- Largest slice handed out by a body reader (bytes).
M.SLICE = 64 * 1024

local function classify(err)
    if err == "timeout" then
        return "timeout"
    elseif err == "closed" then
        return "closed"
    end
    return "io"
end

local function has_ctl(s)
    return s:find("[%z\r\n]") ~= nil
end

--- The request's bytes, or nil and a message when a header name or value
-- would break the framing (CR, LF or NUL; a name with ':' or spaces).
-- `headers` maps names to values; Host, Content-Length and Connection are
-- set here and must not be given.
function M.build_request(method, host_header, target, headers, body)
    local lines = { method .. " " .. target .. " HTTP/1.1", "Host: " .. host_header }
    local names = {}
    for name in pairs(headers) do
        names[#names + 1] = name
    end
    -- A stable order keeps the bytes on the wire reproducible.
    table.sort(names)
    for _, name in ipairs(names) do
        local value = tostring(headers[name])
        if type(name) ~= "string" or name == "" or name:find("[%c%s:]") then
            return nil, "invalid header name " .. string.format("%q", tostring(name))
        end
        if has_ctl(value) then
            return nil, "header " .. name .. " has a CR, LF or NUL in its value"
        end
        local lower = name:lower()
        if lower ~= "host" and lower ~= "content-length" and lower ~= "connection"
            and lower ~= "transfer-encoding" then
            lines[#lines + 1] = name .. ": " .. value
        end
    end
    if body then
        lines[#lines + 1] = "Content-Length: " .. #body
    elseif method == "POST" or method == "PUT" or method == "PATCH" then
        lines[#lines + 1] = "Content-Length: 0"
    end
    lines[#lines + 1] = "Connection: keep-alive"
    lines[#lines + 1] = ""
    lines[#lines + 1] = body or ""
    return table.concat(lines, "\r\n")
end

--- Reads the status line and headers. Returns a head table
-- `{ status = n, version = "1.1", headers = { lowercase = value } }`
-- (repeated headers joined with ", "), or nil, message, class.
-- 1xx interim responses are skipped. `got_bytes` in the failure's fourth
-- value tells whether anything at all arrived (a reused connection that the
-- server had already closed delivers nothing).
function M.read_head(sock)
    local total, count = 0, 0
    local got_bytes = false
    while true do
        local line, err = sock:receive("*l")
        if not line then
            return nil, "reading the response head: " .. err, classify(err), got_bytes
        end
        got_bytes = true
        local version, status = line:match("^HTTP/(%d%.%d) (%d%d%d)")
        if not version then
            return nil, "not an HTTP/1.x status line: " .. line:sub(1, 60), "protocol", true
        end
        local headers = {}
        while true do
            local h, herr = sock:receive("*l")
            if not h then
                return nil, "reading the response headers: " .. herr, classify(herr), true
            end
            if h == "" then
                break
            end
            total, count = total + #h + 2, count + 1
            if total > M.MAX_HEAD_BYTES or count > M.MAX_HEAD_LINES then
                return nil, "response head larger than " .. M.MAX_HEAD_BYTES .. " bytes or "
                    .. M.MAX_HEAD_LINES .. " lines", "protocol", true
            end
            local name, value = h:match("^([^:%s]+):[ \t]*(.-)[ \t]*$")
            if not name then
                return nil, "malformed header line: " .. h:sub(1, 60), "protocol", true
            end
            name = name:lower()
            local prev = headers[name]
            headers[name] = prev and (prev .. ", " .. value) or value
        end
        status = tonumber(status)
        if status >= 200 or status == 101 then
            return { status = status, version = version, headers = headers }
        end
    end
end

local function token_list_has(value, token)
    if not value then
        return false
    end
    for item in value:gmatch("[^,]+") do
        if item:match("^%s*(.-)%s*$"):lower() == token then
            return true
        end
    end
    return false
end

--- A reader for the body of the response described by `head`:
-- `reader:read()` returns the next slice (a non-empty string), false at
-- the clean end of the body, or nil, message, class.
-- `reader.length` is the announced Content-Length (or nil);
-- `reader.reusable` becomes true when the body ended cleanly on a
-- connection the server keeps open.
function M.body_reader(sock, head, method)
    local headers = head.headers
    local reader = { length = nil, reusable = false, received = 0 }
    local keep = head.version == "1.1" and not token_list_has(headers["connection"], "close")

    local mode
    if method == "HEAD" or head.status == 204 or head.status == 304 then
        mode = "none"
    elseif headers["transfer-encoding"] then
        -- Only chunked alone: another coding (gzip, chunked) would hand out coded bytes.
        local te = headers["transfer-encoding"]:lower():gsub("%s", "")
        if te ~= "chunked" then
            return nil, "unsupported Transfer-Encoding: " .. headers["transfer-encoding"], "protocol"
        end
        mode = "chunked"
    elseif headers["content-length"] then
        local n = headers["content-length"]:match("^%d+$") and tonumber(headers["content-length"])
        if not n then
            return nil, "bad Content-Length: " .. headers["content-length"], "protocol"
        end
        reader.length = n
        mode = n == 0 and "none" or "length"
    else
        mode = "close"
        keep = false
    end

    local remaining = reader.length -- bytes left in the body (length) or chunk (chunked)
    local finished = false

    local function done()
        finished = true
        reader.reusable = keep
        return false
    end

    local function read_some(max)
        local data, err = sock:receiveany(max)
        if not data then
            return nil, err
        end
        reader.received = reader.received + #data
        return data
    end

    local function read_chunk_size()
        local line, err = sock:receive("*l")
        if not line then
            return nil, "reading a chunk size: " .. err, classify(err)
        end
        local hex = line:match("^%s*(%x+)%s*[;]?")
        if not hex or #hex > 15 then
            return nil, "bad chunk size line: " .. line:sub(1, 40), "protocol"
        end
        return tonumber(hex, 16)
    end

    function reader.read()
        if finished then
            return false
        end
        if mode == "none" then
            return done()
        elseif mode == "length" then
            local data, err = read_some(remaining < M.SLICE and remaining or M.SLICE)
            if not data then
                if err == "closed" then
                    return nil, string.format("connection closed after %d of %d body bytes",
                        reader.received, reader.length), "protocol"
                end
                return nil, "reading the body: " .. err, classify(err)
            end
            remaining = remaining - #data
            if remaining == 0 then
                finished = true
                reader.reusable = keep
            end
            return data
        elseif mode == "close" then
            local data, err = read_some(M.SLICE)
            if not data then
                if err == "closed" then
                    return done()
                end
                return nil, "reading the body: " .. err, classify(err)
            end
            return data
        end
        -- chunked
        if not remaining or remaining == 0 then
            if remaining == 0 then
                local crlf, err = sock:receive(2)
                if crlf ~= "\r\n" then
                    return nil, err and ("reading a chunk end: " .. err) or "chunk not followed by CRLF",
                        err and classify(err) or "protocol"
                end
            end
            local size, err, class = read_chunk_size()
            if not size then
                return nil, err, class
            end
            if size == 0 then
                -- Trailers, up to the empty line that ends the message.
                local lines = 0
                while true do
                    local t, terr = sock:receive("*l")
                    if not t then
                        return nil, "reading the trailers: " .. terr, classify(terr)
                    end
                    if t == "" then
                        return done()
                    end
                    lines = lines + 1
                    if lines > M.MAX_HEAD_LINES then
                        return nil, "too many trailer lines", "protocol"
                    end
                end
            end
            remaining = size
        end
        local data, err = read_some(remaining < M.SLICE and remaining or M.SLICE)
        if not data then
            if err == "closed" then
                return nil, "connection closed inside a chunk", "protocol"
            end
            return nil, "reading the body: " .. err, classify(err)
        end
        remaining = remaining - #data
        return data
    end

    return reader
end

-- gzip/deflate content coding through zlib, which every nginx links, reached
-- with LuaJIT's FFI. Loaded on first use; nil when unavailable.
local zlib

local Z_OK, Z_STREAM_END, Z_BUF_ERROR = 0, 1, -5
local INFLATE_CHUNK = 64 * 1024

local function load_zlib()
    if zlib ~= nil then
        return zlib or nil
    end
    zlib = false
    local ok_ffi, ffi = pcall(require, "ffi")
    if not ok_ffi then
        return nil
    end
    -- Names of our own (the asm labels give the real symbols), so that another
    -- library's declarations of z_stream or inflate cannot clash with these.
    local ok = pcall(ffi.cdef, [[
        typedef struct prefect_z_stream {
            const unsigned char *next_in; unsigned int avail_in; unsigned long total_in;
            unsigned char *next_out; unsigned int avail_out; unsigned long total_out;
            const char *msg; void *state; void *zalloc; void *zfree; void *opaque;
            int data_type; unsigned long adler; unsigned long reserved;
        } prefect_z_stream;
        int prefect_inflateInit2_(prefect_z_stream *, int, const char *, int) __asm__("inflateInit2_");
        int prefect_inflate(prefect_z_stream *, int) __asm__("inflate");
        int prefect_inflateEnd(prefect_z_stream *) __asm__("inflateEnd");
        const char *prefect_zlibVersion(void) __asm__("zlibVersion");
    ]])
    if not ok then
        return nil
    end
    -- Through ffi.C, never ffi.load: a library object may be unloaded at
    -- lua_close before the finalizers that still call into it. nginx links zlib,
    -- so its symbols are usually there already; else dlopen it for good.
    local lib = ffi.C
    if not pcall(function()
        return lib.prefect_inflate
    end) then
        pcall(ffi.cdef, "void *dlopen(const char *, int);")
        local RTLD_NOW, RTLD_GLOBAL = 2, 0x100
        local dok, handle = pcall(function()
            return lib.dlopen("libz.so.1", RTLD_NOW + RTLD_GLOBAL)
        end)
        if not dok or handle == nil then
            return nil
        end
    end
    local fns = {}
    for _, fname in ipairs({ "inflateInit2_", "inflate", "inflateEnd", "zlibVersion" }) do
        local fok, fn = pcall(function()
            return lib["prefect_" .. fname]
        end)
        if not fok then
            return nil
        end
        fns[fname] = fn
    end
    fns.ffi = ffi
    zlib = fns
    return zlib
end

--- True when responses can be gzip-decoded here (so Accept-Encoding may be sent).
function M.can_inflate()
    return load_zlib() ~= nil
end

--- An inflater for a gzip or zlib-deflate body, or nil, message.
-- `inflater:feed(bytes, sink)` calls sink(piece) for each decoded piece
-- (at most 64 KiB, so a compression bomb never sits in memory at once) and
-- returns true, or nil, message; a sink returning nil, message stops it.
-- `inflater.ended` is true once the compressed stream is complete.
function M.inflater()
    local z = load_zlib()
    if not z then
        return nil, "zlib is not available to LuaJIT's FFI"
    end
    local ffi = z.ffi
    local stream = ffi.new("prefect_z_stream[1]")
    -- 15 + 32: the largest window, with gzip or zlib header detected.
    if z.inflateInit2_(stream, 15 + 32, z.zlibVersion(), ffi.sizeof("prefect_z_stream")) ~= Z_OK then
        return nil, "inflateInit2 failed"
    end
    stream = ffi.gc(stream, function(st)
        z.inflateEnd(st)
    end)
    local out = ffi.new("unsigned char[?]", INFLATE_CHUNK)
    local self = { ended = false }
    function self.feed(_, bytes, sink)
        if self.ended then
            return true -- what follows a complete stream is ignored, as zlib-based clients do
        end
        local st = stream[0]
        st.next_in = bytes
        st.avail_in = #bytes
        repeat
            st.next_out = out
            st.avail_out = INFLATE_CHUNK
            local rc = z.inflate(stream, 0)
            if rc ~= Z_OK and rc ~= Z_STREAM_END and rc ~= Z_BUF_ERROR then
                local msg = st.msg ~= nil and ffi.string(st.msg) or ("zlib error " .. rc)
                return nil, "bad compressed body: " .. msg
            end
            local produced = INFLATE_CHUNK - st.avail_out
            if produced > 0 then
                local ok, err = sink(ffi.string(out, produced))
                if not ok then
                    return nil, err
                end
            end
            if rc == Z_STREAM_END then
                self.ended = true
                break
            end
            if rc == Z_BUF_ERROR and st.avail_in == 0 then
                break
            end
        until st.avail_out ~= 0 and st.avail_in == 0
        -- `bytes` stays referenced by this frame until zlib is done with it.
        st.next_in = nil
        return true
    end
    return self
end

return M
