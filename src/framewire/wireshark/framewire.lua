-- framewire: a Wireshark dissector for the framed JSON-header message protocol.
--
-- One message: a 2-byte big-endian header length H, H bytes of UTF-8 JSON
-- header (content-type, content-encoding, byteorder, content-length), then
-- content-length bytes of content. Messages are reassembled across TCP
-- segments with dissect_tcp_pdus; the total length is known only once the
-- JSON header is in, so the length function asks for more data until then.
--
-- Install: framewire wireshark --install (or copy this file to your personal
-- Lua plugins folder). Registered on TCP port 65432; other ports in
-- Preferences > Protocols > FRAMEWIRE, or "Decode As...".
-- Filter fields: framewire.header_length, framewire.content_type,
-- framewire.content_encoding, framewire.content_length, framewire.byteorder,
-- framewire.status, framewire.header, framewire.content, framewire.error.

local framewire = Proto("framewire", "framewire framed JSON messages")

local f = framewire.fields
f.header_length = ProtoField.uint16("framewire.header_length", "Header length", base.DEC)
f.header = ProtoField.string("framewire.header", "Header")
f.content_type = ProtoField.string("framewire.content_type", "Content type")
f.content_encoding = ProtoField.string("framewire.content_encoding", "Content encoding")
f.content_length = ProtoField.uint64("framewire.content_length", "Content length", base.DEC)
f.byteorder = ProtoField.string("framewire.byteorder", "Byte order")
f.status = ProtoField.string("framewire.status", "Status")
f.extension = ProtoField.string("framewire.extension", "Extension")
f.content = ProtoField.bytes("framewire.content", "Content")
f.text = ProtoField.string("framewire.text", "Content (text)")
f.error = ProtoField.string("framewire.error", "Protocol error")

local DEFAULT_PORTS = "65432"
framewire.prefs.ports = Pref.range("TCP ports", DEFAULT_PORTS, "TCP ports carrying framewire", 65535)

-- A small JSON reader: enough for a header object. Values that are objects
-- or arrays are kept as their raw text.
local function skip_ws(s, i)
    return s:find("[^ \t\r\n]", i) or (#s + 1)
end

-- A code point as UTF-8 (Lua 5.2 has no utf8 library).
local function utf8_char(code)
    if code < 0x80 then return string.char(code) end
    if code < 0x800 then
        return string.char(0xC0 + math.floor(code / 0x40), 0x80 + code % 0x40)
    end
    if code < 0x10000 then
        return string.char(0xE0 + math.floor(code / 0x1000), 0x80 + math.floor(code / 0x40) % 0x40,
            0x80 + code % 0x40)
    end
    return string.char(0xF0 + math.floor(code / 0x40000), 0x80 + math.floor(code / 0x1000) % 0x40,
        0x80 + math.floor(code / 0x40) % 0x40, 0x80 + code % 0x40)
end

local function read_string(s, i)
    -- s:sub(i, i) == '"'
    local out, j = {}, i + 1
    while j <= #s do
        local c = s:sub(j, j)
        if c == '"' then
            return table.concat(out), j + 1
        elseif c == "\\" then
            local e = s:sub(j + 1, j + 1)
            local map = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
            if e == "u" then
                local code = tonumber(s:sub(j + 2, j + 5), 16)
                if not code then return nil end
                j = j + 6
                if code >= 0xD800 and code <= 0xDBFF and s:sub(j, j + 1) == "\\u" then
                    local low = tonumber(s:sub(j + 2, j + 5), 16)
                    if low and low >= 0xDC00 and low <= 0xDFFF then
                        code = 0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)
                        j = j + 6
                    end
                end
                out[#out + 1] = utf8_char(code)
            else
                out[#out + 1] = map[e] or e
                j = j + 2
            end
        else
            out[#out + 1] = c
            j = j + 1
        end
    end
    return nil
end

local function skip_nested(s, i)
    local depth, j = 0, i
    while j <= #s do
        local c = s:sub(j, j)
        if c == '"' then
            local _, after = read_string(s, j)
            if not after then return nil end
            j = after
        else
            if c == "{" or c == "[" then depth = depth + 1 end
            if c == "}" or c == "]" then
                depth = depth - 1
                if depth == 0 then return s:sub(i, j), j + 1 end
            end
            j = j + 1
        end
    end
    return nil
end

local function read_value(s, i)
    local c = s:sub(i, i)
    if c == '"' then return read_string(s, i) end
    if c == "{" or c == "[" then return skip_nested(s, i) end
    local token = s:match("^[%w%.%+%-]+", i)
    if not token then return nil end
    if token == "true" then return true, i + 4 end
    if token == "false" then return false, i + 5 end
    if token == "null" then return "null", i + 4 end
    local number = tonumber(token)
    if number == nil then return nil end
    if token:find("[%.eE]") then return { fraction = token }, i + #token end
    return number, i + #token
end

-- Returns a table of key -> value (and the keys in order), or nil and a reason.
local function parse_header(s)
    local i = skip_ws(s, 1)
    if s:sub(i, i) ~= "{" then return nil, "not a JSON object" end
    local header, order = {}, {}
    i = skip_ws(s, i + 1)
    if s:sub(i, i) == "}" then return header, order end
    while true do
        if s:sub(i, i) ~= '"' then return nil, "bad JSON" end
        local key, after = read_string(s, i)
        if not key then return nil, "bad JSON string" end
        i = skip_ws(s, after)
        if s:sub(i, i) ~= ":" then return nil, "bad JSON" end
        i = skip_ws(s, i + 1)
        local value, next_i = read_value(s, i)
        if next_i == nil then return nil, "bad JSON value" end
        if header[key] == nil then order[#order + 1] = key end
        header[key] = value  -- a key given twice keeps its last value
        i = skip_ws(s, next_i)
        local c = s:sub(i, i)
        if c == "}" then return header, order end
        if c ~= "," then return nil, "bad JSON" end
        i = skip_ws(s, i + 1)
    end
end

local function content_length_of(header)
    local n = header["content-length"]
    if type(n) ~= "number" or n < 0 or n ~= math.floor(n) then return nil end
    return n
end

-- The length of the message starting at offset, or 0 while the header is incomplete.
local function get_message_length(tvb, pinfo, offset)
    local available = tvb:len() - offset
    if available < 2 then return 0 end
    local hlen = tvb(offset, 2):uint()
    if available < 2 + hlen then return 0 end
    local header = parse_header(tvb(offset + 2, hlen):string())
    local length = header and content_length_of(header)
    if not length then return 2 + hlen end  -- a broken header: show it alone
    return 2 + hlen + length
end

local function dissect_message(tvb, pinfo, tree)
    local hlen = tvb(0, 2):uint()
    pinfo.cols.protocol = "FRAMEWIRE"
    local subtree = tree:add(framewire, tvb(), "framewire message")
    subtree:add(f.header_length, tvb(0, 2))
    local header_tvb = tvb(2, hlen)
    local text = header_tvb:string(ENC_UTF_8)
    local header_item = subtree:add(f.header, header_tvb, text)
    if hlen < 2 then
        subtree:add(f.error, tvb(0, 2), "bad-header-length")
        return tvb:len()
    end
    local header, why = parse_header(text)
    if not header then
        subtree:add(f.error, header_tvb, "bad-header: " .. why)
        pinfo.cols.info:append(" [bad header]")
        return tvb:len()
    end
    local fields = header_item
    local ctype = header["content-type"]
    local cenc = header["content-encoding"]
    local length = content_length_of(header)
    if type(ctype) == "string" then fields:add(f.content_type, header_tvb, ctype) end
    if type(cenc) == "string" then fields:add(f.content_encoding, header_tvb, cenc) end
    if length then fields:add(f.content_length, header_tvb, UInt64(length)) end
    if type(header.byteorder) == "string" then fields:add(f.byteorder, header_tvb, header.byteorder) end
    if type(header.status) == "string" then fields:add(f.status, header_tvb, header.status) end
    local _, order = parse_header(text)
    for _, key in ipairs(order) do
        if key ~= "content-type" and key ~= "content-encoding" and key ~= "content-length"
            and key ~= "byteorder" then
            local value = header[key]
            if type(value) == "table" then value = value.fraction end
            fields:add(f.extension, header_tvb, key .. " = " .. tostring(value))
        end
    end
    local info = string.format("%s %s", tostring(ctype), length and (length .. " bytes") or "?")
    if header.status == "error" then info = info .. " [error]" end
    pinfo.cols.info:append(" " .. info .. ";")
    if not length then
        subtree:add(f.error, header_tvb, "bad-header-value: content-length")
        return tvb:len()
    end
    if length > 0 and tvb:len() >= 2 + hlen + length then
        local content_tvb = tvb(2 + hlen, length)
        local content_item = subtree:add(f.content, content_tvb)
        if type(ctype) == "string" and ctype:sub(1, 5) == "text/" and (cenc == "utf-8" or cenc == "utf8") then
            content_item:add(f.text, content_tvb, content_tvb:string(ENC_UTF_8))
            if ctype == "text/json" then
                local json = Dissector.get("json")
                if json then pcall(function() json:call(content_tvb:tvb(), pinfo, content_item) end) end
            end
        end
    end
    return tvb:len()
end

function framewire.dissector(tvb, pinfo, tree)
    pinfo.cols.info:clear()
    dissect_tcp_pdus(tvb, tree, 2, get_message_length, dissect_message)
    return tvb:len()
end

local registered = {}
local function register_ports()
    local tcp_port = DissectorTable.get("tcp.port")
    for _, port in ipairs(registered) do tcp_port:remove(port, framewire) end
    registered = {}
    local range = framewire.prefs.ports or DEFAULT_PORTS
    for lo, hi in tostring(range):gmatch("(%d+)%-?(%d*)") do
        local first, last = tonumber(lo), tonumber(hi ~= "" and hi or lo)
        for port = first, last do
            tcp_port:add(port, framewire)
            registered[#registered + 1] = port
        end
    end
end

function framewire.prefs_changed()
    register_ports()
end

register_ports()
