-- Run an Argo CD health script on an object, the way Argo CD does, and print
-- "<status>\t<message>" on one line.
--
--   lua5.4 gitops/argocd/run_health.lua [--open-libs] SCRIPT.lua OBJECT.json
--
-- OBJECT.json is the object as the API server returns it (kubectl get -o json). A
-- fixture of the form {"object": {...}, "expect": {...}} is accepted too: its
-- "object" is used.
--
-- What Argo CD does (util/lua/lua.go), and this driver imitates:
--   * the object becomes the global `obj`, a table with the JSON's shape: JSON
--     numbers are numbers, null members are absent, null array elements are
--     dropped (gopher-lua's Append ignores nil);
--   * scripts from argocd-cm run in a sandbox with the base and table libraries
--     only (plus a reduced os): no string, math, io or debug library, and strings
--     have no methods. --open-libs lifts that, as
--     resource.customizations.useOpenLibs.<group>_<kind>: "true" does;
--   * the script must return a table; a status other than Healthy, Progressing,
--     Degraded, Suspended, Missing or Unknown becomes
--     Unknown "Lua returned an invalid health status".
-- Newlines, tabs and backslashes in the message are printed as \n, \t and \\.
--
-- Works with Lua 5.1 (Argo CD's gopher-lua is a Lua 5.1) and Lua 5.4.
-- Exit codes: 0 printed a status, 2 usage or input error, 3 the script failed.

local byte, char, sub, find, format = string.byte, string.char, string.sub, string.find, string.format
local floor = math.floor
local concat = table.concat

local function fail(code, message)
  io.stderr:write("run_health: ", message, "\n")
  os.exit(code)
end

---------------------------------------------------------------------------- JSON

local function decode_json(text)
  local pos = 1
  local len = #text

  local function err(what)
    error({ json = format("invalid JSON at byte %d: %s", pos, what) }, 0)
  end

  local function skip_ws()
    while pos <= len do
      local b = byte(text, pos)
      if b == 32 or b == 9 or b == 10 or b == 13 then
        pos = pos + 1
      else
        return
      end
    end
  end

  local function utf8(cp)
    if cp < 0x80 then
      return char(cp)
    elseif cp < 0x800 then
      return char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40)
    elseif cp < 0x10000 then
      return char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
    end
    return char(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
      0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end

  local function hex4()
    local digits = sub(text, pos, pos + 3)
    if #digits ~= 4 or not find(digits, "^%x%x%x%x$") then
      err("\\u must be followed by four hex digits")
    end
    pos = pos + 4
    return tonumber(digits, 16)
  end

  local escapes = {
    [34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f",
    [110] = "\n", [114] = "\r", [116] = "\t",
  }

  local function parse_string()
    -- pos is on the opening quote
    pos = pos + 1
    local parts = {}
    local start = pos
    while true do
      if pos > len then
        err("unterminated string")
      end
      local b = byte(text, pos)
      if b == 34 then
        parts[#parts + 1] = sub(text, start, pos - 1)
        pos = pos + 1
        return concat(parts)
      elseif b == 92 then
        parts[#parts + 1] = sub(text, start, pos - 1)
        local e = byte(text, pos + 1)
        if e == 117 then
          pos = pos + 2
          local cp = hex4()
          if cp >= 0xD800 and cp <= 0xDBFF then
            -- a high surrogate must be followed by \u + low surrogate
            if sub(text, pos, pos + 1) == "\\u" then
              local save = pos
              pos = pos + 2
              local low = hex4()
              if low >= 0xDC00 and low <= 0xDFFF then
                cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
              else
                -- lone high surrogate: U+FFFD, as Go's encoding/json does; reread the next escape
                cp = 0xFFFD
                pos = save
              end
            else
              cp = 0xFFFD
            end
          elseif cp >= 0xDC00 and cp <= 0xDFFF then
            cp = 0xFFFD
          end
          parts[#parts + 1] = utf8(cp)
        elseif e ~= nil and escapes[e] then
          parts[#parts + 1] = escapes[e]
          pos = pos + 2
        else
          pos = pos + 1
          err("invalid escape")
        end
        start = pos
      elseif b < 32 then
        err("control character in string")
      else
        pos = pos + 1
      end
    end
  end

  local function parse_number()
    local s, e = find(text, "^-?%d+", pos)
    if not s then
      err("invalid number")
    end
    local int = sub(text, s, e)
    if find(int, "^-?0%d") then
      err("leading zero in number")
    end
    local stop = e
    local fs, fe = find(text, "^%.%d+", stop + 1)
    if fs then
      stop = fe
    elseif sub(text, stop + 1, stop + 1) == "." then
      pos = stop + 1
      err("digits expected after the decimal point")
    end
    local es, ee = find(text, "^[eE][+-]?%d+", stop + 1)
    if es then
      stop = ee
    elseif find(text, "^[eE]", stop + 1) then
      pos = stop + 1
      err("digits expected in the exponent")
    end
    local literal = sub(text, pos, stop)
    pos = stop + 1
    local n = tonumber(literal)
    -- Argo CD holds every number as a float64, whose text has no ".0" for whole
    -- values; in Lua 5.4 keep whole values as integers so they print the same.
    if math.type ~= nil and math.type(n) == "float" and n == floor(n) and n > -2 ^ 53 and n < 2 ^ 53 then
      n = math.tointeger(n)
    end
    return n
  end

  local parse_value

  local function parse_array()
    pos = pos + 1
    local out, n = {}, 0
    skip_ws()
    if byte(text, pos) == 93 then
      pos = pos + 1
      return out
    end
    while true do
      skip_ws()
      local value = parse_value()
      if value ~= nil then
        n = n + 1
        out[n] = value
      end
      skip_ws()
      local b = byte(text, pos)
      if b == 44 then
        pos = pos + 1
      elseif b == 93 then
        pos = pos + 1
        return out
      else
        err("',' or ']' expected")
      end
    end
  end

  local function parse_object()
    pos = pos + 1
    local out = {}
    skip_ws()
    if byte(text, pos) == 125 then
      pos = pos + 1
      return out
    end
    while true do
      skip_ws()
      if byte(text, pos) ~= 34 then
        err("member name expected")
      end
      local key = parse_string()
      skip_ws()
      if byte(text, pos) ~= 58 then
        err("':' expected")
      end
      pos = pos + 1
      skip_ws()
      -- null members are absent; a repeated name keeps the last value, as in Go
      out[key] = parse_value()
      skip_ws()
      local b = byte(text, pos)
      if b == 44 then
        pos = pos + 1
      elseif b == 125 then
        pos = pos + 1
        return out
      else
        err("',' or '}' expected")
      end
    end
  end

  parse_value = function()
    local b = byte(text, pos)
    if b == 123 then
      return parse_object()
    elseif b == 91 then
      return parse_array()
    elseif b == 34 then
      return parse_string()
    elseif b == 45 or (b ~= nil and b >= 48 and b <= 57) then
      return parse_number()
    elseif sub(text, pos, pos + 3) == "true" then
      pos = pos + 4
      return true
    elseif sub(text, pos, pos + 4) == "false" then
      pos = pos + 5
      return false
    elseif sub(text, pos, pos + 3) == "null" then
      pos = pos + 4
      return nil
    elseif b == nil then
      err("unexpected end of input")
    end
    err("unexpected character")
  end

  local ok, result = pcall(function()
    -- a UTF-8 byte order mark is not JSON
    skip_ws()
    local value = parse_value()
    skip_ws()
    if pos <= len then
      err("trailing characters")
    end
    return value
  end)
  if ok then
    return result
  end
  if type(result) == "table" and result.json then
    return nil, result.json
  end
  error(result, 0)
end

------------------------------------------------------------------------- driver

local open_libs = false
local positional = {}
for i = 1, #arg do
  if arg[i] == "--open-libs" then
    open_libs = true
  else
    positional[#positional + 1] = arg[i]
  end
end
if #positional ~= 2 then
  fail(2, "usage: run_health.lua [--open-libs] SCRIPT.lua OBJECT.json")
end
local script_path, object_path = positional[1], positional[2]

local function read_file(path)
  local f, e = io.open(path, "rb")
  if not f then
    fail(2, e)
  end
  local content = f:read("*a")
  f:close()
  return content
end

local source = read_file(script_path)
local document, jerr = decode_json(read_file(object_path))
if jerr then
  fail(2, object_path .. ": " .. jerr)
end
if type(document) ~= "table" then
  fail(2, object_path .. ": the object must be a JSON object")
end
local object = document
if document.apiVersion == nil and type(document.object) == "table" then
  object = document.object
end

local env
if open_libs then
  env = setmetatable({}, { __index = _G })
else
  env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, print = print, rawequal = rawequal, rawget = rawget, rawset = rawset,
    select = select, setmetatable = setmetatable, getmetatable = getmetatable,
    tonumber = tonumber, tostring = tostring, type = type, xpcall = xpcall,
    unpack = unpack or table.unpack, _VERSION = _VERSION,
    table = {
      concat = table.concat, insert = table.insert, remove = table.remove,
      sort = table.sort, maxn = table.maxn,
    },
    os = { time = os.time, date = os.date, clock = os.clock },
  }
end
env.obj = object
env._G = env

local chunk, lerr
if setfenv ~= nil then -- Lua 5.1
  chunk, lerr = loadstring(source, "@" .. script_path)
  if chunk then
    setfenv(chunk, env)
  end
else
  chunk, lerr = load(source, "@" .. script_path, "t", env)
end
if not chunk then
  fail(3, lerr)
end

-- Without the string library gopher-lua strings have no methods: ("x"):find fails.
local string_mt = getmetatable("")
local string_index = string_mt and string_mt.__index
if not open_libs and string_mt then
  string_mt.__index = nil
end
local ok, result = pcall(chunk)
if string_mt then
  string_mt.__index = string_index
end
if not ok then
  fail(3, tostring(result))
end
if type(result) ~= "table" then
  fail(3, "expect table output from Lua script, not " .. type(result))
end

local VALID = { Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true, Unknown = true }
local status, message = result.status, result.message
if type(status) ~= "string" or not VALID[status] then
  status, message = "Unknown", "Lua returned an invalid health status"
end
if message == nil then
  message = ""
end
message = tostring(message)
local escaped = {}
for i = 1, #message do
  local c = sub(message, i, i)
  if c == "\\" then
    c = "\\\\"
  elseif c == "\n" then
    c = "\\n"
  elseif c == "\t" then
    c = "\\t"
  end
  escaped[#escaped + 1] = c
end
io.stdout:write(status, "\t", concat(escaped), "\n")
