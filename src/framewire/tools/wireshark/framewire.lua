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
-- Preferences > Protocols > FRAMEWIRE, or "Decode As...". Over TLS: list the
-- port under "TLS ports" (tshark: -o framewire.tls_ports:7443) and give
-- Wireshark the key log file the client or server wrote when run with
-- SSLKEYLOGFILE set (-o tls.keylog_file:keys.log).
-- Filter fields: framewire.header_length, framewire.content_type,
-- framewire.content_encoding, framewire.content_length, framewire.byteorder,
-- framewire.status, framewire.header, framewire.content, framewire.error,
-- framewire.id, framewire.stream, framewire.cancel, framewire.unordered,
-- framewire.dropped.

-- Loaded once, whichever way it is given: with an installed copy (a
-- personal plugin), `-X lua_script:framewire.lua` would register a second
-- Proto of the same name, which fails ("there cannot be two protocols with
-- the same description"). The first one loaded serves; its dissector is
-- registered by then.
local loaded_ok, loaded = pcall(Dissector.get, "framewire")
if loaded_ok and loaded then return end

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
f.id = ProtoField.string("framewire.id", "Request id")
f.stream = ProtoField.string("framewire.stream", "Stream position")
f.cancel = ProtoField.string("framewire.cancel", "Cancels request")
f.unordered = ProtoField.bool("framewire.unordered", "Unordered")
f.dropped = ProtoField.string("framewire.dropped", "Events dropped before this one")
f.content = ProtoField.bytes("framewire.content", "Content")
f.text = ProtoField.string("framewire.text", "Content (text)")
f.error = ProtoField.string("framewire.error", "Protocol error")

local DEFAULT_PORTS = "65432"
framewire.prefs.ports = Pref.range("TCP ports", DEFAULT_PORTS, "TCP ports carrying framewire", 65535)
framewire.prefs.tls_ports = Pref.range("TLS ports", "", "TCP ports carrying framewire inside TLS", 65535)

-- A small JSON reader: enough for a header object. Values that are objects
-- or arrays (and null) are kept as tables holding their raw text.
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

-- The JSON grammar of RFC 8259, checked as strictly as the server's parser
-- (orjson) checks it: the dissector accepts exactly the headers the server
-- accepts, and marks the rest bad-header.
local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
local MAX_DEPTH = 1024  -- orjson's limit

local function hex4(s, j)
    local digits = s:sub(j, j + 3)
    if not digits:match("^%x%x%x%x$") then return nil end
    return tonumber(digits, 16)
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
            if e == "u" then
                local code = hex4(s, j + 2)
                if not code then return nil end
                j = j + 6
                if code >= 0xDC00 and code <= 0xDFFF then return nil end  -- a lone low surrogate
                if code >= 0xD800 and code <= 0xDBFF then
                    local low = s:sub(j, j + 1) == "\\u" and hex4(s, j + 2)
                    if not low or low < 0xDC00 or low > 0xDFFF then return nil end  -- a lone high one
                    code = 0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)
                    j = j + 6
                end
                out[#out + 1] = utf8_char(code)
            elseif ESCAPES[e] then
                out[#out + 1] = ESCAPES[e]
                j = j + 2
            else
                return nil
            end
        elseif c:byte() < 0x20 then
            return nil  -- control characters must be escaped
        else
            out[#out + 1] = c
            j = j + 1
        end
    end
    return nil
end

local read_value

-- Strict UTF-8, as the server requires of a header: no overlong forms, no
-- surrogates, nothing past U+10FFFF.
local function valid_utf8(s)
    local i, n = 1, #s
    while i <= n do
        local c = s:byte(i)
        if c < 0x80 then
            i = i + 1
        else
            local len, min
            if c >= 0xC2 and c <= 0xDF then len, min = 2, 0x80
            elseif c >= 0xE0 and c <= 0xEF then len, min = 3, 0x800
            elseif c >= 0xF0 and c <= 0xF4 then len, min = 4, 0x10000
            else return false end
            if i + len - 1 > n then return false end
            local code = c % (2 ^ (7 - len))
            for k = 1, len - 1 do
                local b = s:byte(i + k)
                if b < 0x80 or b > 0xBF then return false end
                code = code * 64 + (b - 0x80)
            end
            if code < min or code > 0x10FFFF or (code >= 0xD800 and code <= 0xDFFF) then return false end
            i = i + len
        end
    end
    return true
end

-- An array or object, checked through; its raw text is the value.
local function read_nested(s, i, depth)
    if depth > MAX_DEPTH then return nil end
    local open = s:sub(i, i)
    local close = open == "{" and "}" or "]"
    local j = skip_ws(s, i + 1)
    if s:sub(j, j) == close then return s:sub(i, j), j + 1 end
    while true do
        if open == "{" then
            if s:sub(j, j) ~= '"' then return nil end
            local _, after = read_string(s, j)
            if not after then return nil end
            j = skip_ws(s, after)
            if s:sub(j, j) ~= ":" then return nil end
            j = skip_ws(s, j + 1)
        end
        local _, after = read_value(s, j, depth + 1)
        if not after then return nil end
        j = skip_ws(s, after)
        local c = s:sub(j, j)
        if c == close then return s:sub(i, j), j + 1 end
        if c ~= "," then return nil end
        j = skip_ws(s, j + 1)
    end
end

read_value = function(s, i, depth)
    local c = s:sub(i, i)
    if c == '"' then return read_string(s, i) end
    if c == "{" or c == "[" then
        local text, after = read_nested(s, i, depth or 1)
        if not text then return nil end
        return { text = text }, after
    end
    for word, value in pairs({ ["true"] = true, ["false"] = false, ["null"] = { text = "null" } }) do
        if s:sub(i, i + #word - 1) == word then return value, i + #word end
    end
    -- A JSON number: no hex, no leading zeros, no bare point, no "inf" or "nan".
    local int = s:match("^%-?0", i) or s:match("^%-?[1-9]%d*", i)
    if not int then return nil end
    local token = int .. (s:match("^%.%d+", i + #int) or "")
    token = token .. (s:match("^[eE][%+%-]?%d+", i + #token) or "")
    local number = tonumber(token)
    if number == nil or number ~= number or number == math.huge or number == -math.huge then
        if not token:find("[%.eE]") then return { huge = token }, i + #token end
        return nil
    end
    if token:find("[%.eE]") then return { fraction = token }, i + #token end
    -- Past 2^53 a Lua number is no longer exact: larger than any content limit.
    if number > 2 ^ 53 or number < -(2 ^ 53) then return { huge = token }, i + #token end
    return number, i + #token
end

-- Returns a table of key -> value (and the keys in order), or nil and a reason.
local function parse_header(s)
    if not valid_utf8(s) then return nil, "not valid UTF-8" end
    local i = skip_ws(s, 1)
    if s:sub(i, i) ~= "{" then return nil, "not a JSON object" end
    local header, order = {}, {}
    i = skip_ws(s, i + 1)
    if s:sub(i, i) == "}" then
        if skip_ws(s, i + 1) <= #s then return nil, "bad JSON: text after the object" end
        return header, order
    end
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
        if c == "}" then
            if skip_ws(s, i + 1) <= #s then return nil, "bad JSON: text after the object" end
            return header, order
        end
        if c ~= "," then return nil, "bad JSON" end
        i = skip_ws(s, i + 1)
    end
end

local function content_length_of(header)
    local n = header["content-length"]
    if type(n) ~= "number" or n < 0 or n ~= math.floor(n) then return nil end
    return n
end

-- The most one message may span and still be reassembled: TCP reassembly
-- counts in 32 bits, and a longer length would wrap and show the content
-- as further messages that never were.
local MAX_MESSAGE = 0x7FFFFFFF

-- Per direction of a TCP stream, the frame from which its bytes are no
-- longer framewire messages (a message too large to follow: the server
-- refuses it with content-too-large and closes).
local framing_lost = {}
local function direction_key(pinfo)
    return tostring(pinfo.src) .. ":" .. pinfo.src_port .. ">" .. tostring(pinfo.dst) .. ":" .. pinfo.dst_port
end

-- The length of the message starting at offset. While its header is
-- incomplete that is the length and header together: the 2-byte length
-- says how much to wait for, so reassembly asks for exactly the bytes
-- missing, not one more segment at a time (which re-parses everything so
-- far at each segment: quadratic).
local function get_message_length(tvb, pinfo, offset)
    local available = tvb:len() - offset
    if available < 2 then return 0 end
    local hlen = tvb(offset, 2):uint()
    if available < 2 + hlen then return 2 + hlen end
    local header = parse_header(tvb(offset + 2, hlen):raw())
    local length = header and content_length_of(header)
    if not length then return 2 + hlen end  -- a broken header: show it alone
    if 2 + hlen + length > MAX_MESSAGE then return available end  -- shown as too large, below
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
    local header, why = parse_header(header_tvb:raw())
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
    local _, order = parse_header(header_tvb:raw())
    for _, key in ipairs(order) do
        if key ~= "content-type" and key ~= "content-encoding" and key ~= "content-length"
            and key ~= "byteorder" then
            local value = header[key]
            if type(value) == "table" then value = value.fraction or value.huge or value.text end
            fields:add(f.extension, header_tvb, key .. " = " .. tostring(value))
        end
    end
    local info = string.format("%s %s", tostring(ctype), length and (length .. " bytes") or "?")
    if header.status == "error" then info = info .. " [error]" end
    -- What the extensions say of the exchange: the id, a stream's position, a cancel.
    local function shown(value)
        if type(value) == "table" then return value.fraction or value.huge or value.text end
        return tostring(value)
    end
    local ident = header["framewire-id"]
    if ident ~= nil then
        fields:add(f.id, header_tvb, shown(ident))
        info = info .. " id=" .. shown(ident)
    end
    local position = header["framewire-stream"]
    if position ~= nil then
        local text = position == true and "requested" or shown(position)
        fields:add(f.stream, header_tvb, text)
        info = info .. " stream=" .. text
    end
    local cancelled = header["framewire-cancel"]
    if cancelled ~= nil then
        fields:add(f.cancel, header_tvb, shown(cancelled))
        info = info .. " cancel=" .. shown(cancelled)
    end
    if header["framewire-unordered"] == true then
        fields:add(f.unordered, header_tvb, true)
        info = info .. " unordered"
    end
    local dropped = header["framewire-dropped"]
    if dropped ~= nil then
        local text = dropped == true and "unknown" or shown(dropped)
        fields:add(f.dropped, header_tvb, text)
        info = info .. " dropped=" .. text
    end
    pinfo.cols.info:append(" " .. info .. ";")
    -- The server's checks, in its order: every required key present, then each value.
    for _, key in ipairs({ "byteorder", "content-type", "content-encoding", "content-length" }) do
        if header[key] == nil then
            subtree:add(f.error, header_tvb, "missing-header-key: " .. key)
            return tvb:len()
        end
    end
    if not length then
        local n = header["content-length"]
        if type(n) == "table" and n.huge and n.huge:sub(1, 1) ~= "-" then
            subtree:add(f.error, header_tvb, "content-too-large: content-length")
            framing_lost[direction_key(pinfo)] = pinfo.number
        else
            subtree:add(f.error, header_tvb, "bad-header-value: content-length")
        end
        return tvb:len()
    end
    if 2 + hlen + length > MAX_MESSAGE then
        subtree:add(f.error, header_tvb, "content-too-large: content-length " .. string.format("%.0f", length)
            .. " (what follows in this direction is not decoded)")
        framing_lost[direction_key(pinfo)] = pinfo.number
        return tvb:len()
    end
    for _, key in ipairs({ "content-type", "content-encoding" }) do
        if type(header[key]) ~= "string" or header[key] == "" then
            subtree:add(f.error, header_tvb, "bad-header-value: " .. key)
            return tvb:len()
        end
    end
    if header.byteorder ~= "little" and header.byteorder ~= "big" then
        subtree:add(f.error, header_tvb, "bad-header-value: byteorder")
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
    local lost_at = framing_lost[direction_key(pinfo)]
    if lost_at and pinfo.number > lost_at then
        -- After a message too large to follow: content, not messages.
        pinfo.cols.protocol = "FRAMEWIRE"
        pinfo.cols.info:set("content of a message too large to follow (not decoded)")
        tree:add(framewire, tvb(), "framewire: content of the too-large message of frame " .. lost_at)
        return tvb:len()
    end
    pinfo.cols.info:clear()
    dissect_tcp_pdus(tvb, tree, 2, get_message_length, dissect_message)
    return tvb:len()
end

-- Plain ports: TCP carries framewire. TLS ports: TCP carries TLS (the
-- "tls" dissector), and TLS's application data is framewire; Wireshark
-- decrypts it with the key log a client or server wrote (SSLKEYLOGFILE),
-- given as the tls.keylog_file preference.
local registered = {}
local function each_port(range, fn)
    for lo, hi in tostring(range or ""):gmatch("(%d+)%-?(%d*)") do
        local first, last = tonumber(lo), tonumber(hi ~= "" and hi or lo)
        for port = first, last do fn(port) end
    end
end

local function register_ports()
    local tcp_port = DissectorTable.get("tcp.port")
    local tls_port = DissectorTable.get("tls.port")
    local tls = Dissector.get("tls")
    for _, entry in ipairs(registered) do entry[1]:remove(entry[2], entry[3]) end
    registered = {}
    local function add(table_, port, dissector)
        table_:add(port, dissector)
        registered[#registered + 1] = {table_, port, dissector}
    end
    each_port(framewire.prefs.ports or DEFAULT_PORTS, function(port) add(tcp_port, port, framewire) end)
    each_port(framewire.prefs.tls_ports, function(port)
        add(tcp_port, port, tls)
        add(tls_port, port, framewire)
    end)
end

function framewire.prefs_changed()
    register_ports()
end

register_ports()
