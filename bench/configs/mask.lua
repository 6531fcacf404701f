-- lua-mask: the peer every Envoy user has. Envoy's built-in Lua filter (LuaJIT) buffers the whole
-- request body and the whole response body and masks e-mail addresses and phone numbers in them
-- with `gsub`, the way such scripts are usually written: over the raw body text, no JSON parsing.
--
-- Phone candidates are digit runs with separators (+1 415 555 0100, (415) 555-0100); a candidate
-- is masked when it has 9 to 15 digits and a separator or a leading '+', so that plain numbers in
-- the JSON (timestamps, token counts) stay as they are.

local function mask_phone(candidate)
  local _, digits = candidate:gsub("%d", "")
  if digits < 9 or digits > 15 then
    return nil
  end
  if candidate:sub(1, 1) == "+" or candidate:find("[^%d]") then
    return "[PHONE]"
  end
  return nil
end

local function mask(text)
  text = text:gsub("[%w%._%%%+%-]+@[%w%-]+%.[%w%.%-]*%a", "[EMAIL]")
  text = text:gsub("%+?%(?%d[%d%s%-%.%(%)]*%d", mask_phone)
  return text
end

local function mask_body(handle)
  local body = handle:body()
  if body == nil then
    return
  end
  local length = body:length()
  if length == 0 then
    return
  end
  local original = body:getBytes(0, length)
  local masked = mask(original)
  -- Lua strings are interned: this compares pointers, not bytes.
  if masked ~= original then
    body:setBytes(masked)
    handle:headers():replace("content-length", tostring(#masked))
  end
end

function envoy_on_request(request_handle)
  mask_body(request_handle)
end

function envoy_on_response(response_handle)
  mask_body(response_handle)
end
