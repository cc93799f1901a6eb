--- A content handler that writes exact bytes on the raw downstream socket, so
-- spec/ngx_spec.lua can check the cosocket transport's HTTP/1.1 reader on
-- framings the test server never produces: GET /wire?case=<name>.
-- luacheck: globals ngx

local wire = {}

wire.CASES = {
    -- chunk extensions, a chunk boundary inside a value, and a trailer
    chunk_ext_trailer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        .. "Transfer-Encoding: chunked\r\n\r\n"
        .. "5;name=val\r\n[1,2,\r\n3\r\n3]\n\r\n0\r\nX-Trailer: yes\r\n\r\n",
    -- an interim 100 before the real response
    interim = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        .. "Content-Length: 7\r\n\r\n[1,2,3]",
    -- no length: the body ends when the connection does
    until_close = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[1,2,3]",
    bad_chunk_size = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "zz\r\n[1]\r\n0\r\n\r\n",
    short_body = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[1,2,3]",
    short_chunk = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "10\r\n[1,2",
    gzip_transfer_coding = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        .. "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    not_http = "HELLO THERE\r\n\r\n",
    -- a body with no head (HTTP/0.9) whose first line is longer than any head line may be
    http09_long = "[" .. string.rep("1,", 100000) .. "1]",
    -- past the 256 KiB head limit in lines that are each well under the line limit
    huge_head = "HTTP/1.1 200 OK\r\n"
        .. string.rep("X-Filler: " .. string.rep("x", 100) .. "\r\n", 3000) .. "\r\n",
    -- a final status of four digits, which a lax reader takes as 200
    four_digit_status = "HTTP/1.1 2000 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]",
    two_lengths = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
        .. "Content-Length: 7\r\n\r\n[1,2,3]",
}

-- Cases sent over time: name -> { unit, seconds between units, most seconds in all }.
wire.TRICKLES = {
    -- interim heads that never end, each one soon enough to beat any stall_timeout
    slow_continue = { "HTTP/1.1 100 Continue\r\n\r\n", 0.2, 20 },
}

local function trickle(sock, case)
    local unit, every, most = case[1], case[2], case[3]
    for _ = 1, math.floor(most / every) do
        if not sock:send(unit) then
            return
        end
        ngx.sleep(every)
    end
end

function wire.handle()
    local case = ngx.var.arg_case
    if wire.TRICKLES[case] then
        trickle(assert(ngx.req.socket(true)), wire.TRICKLES[case])
        return ngx.exit(444)
    end
    local bytes = wire.CASES[case]
    if not bytes then
        ngx.status = 404
        ngx.say("no such case")
        return
    end
    local sock = assert(ngx.req.socket(true))
    sock:send(bytes)
    -- 444: nginx closes the connection without writing anything of its own.
    ngx.exit(444)
end

return wire
