-- authctl forward auth for HAProxy >= 2.5, written by `authctl proxy-snippet haproxy`.
--
-- It uses only HAProxy's built-in Lua httpclient (core.httpclient), so neither
-- haproxy-lua-http nor haproxy-auth-request is needed (no package registry ships them).
--
-- Use:  http-request lua.authctl_auth <authctl>/api/authz/auth-request
--
-- It asks authctl with the original URL and method (X-Original-URL, X-Original-Method), the
-- client address (X-Forwarded-For) and the client's credentials (Cookie, Authorization,
-- Proxy-Authorization), and sets:
--   txn.authctl_status    authctl's status: 200 allow, 401 sign in first, 403 forbidden;
--                         0 when authctl could not be asked (the config then refuses)
--   txn.authctl_location  where to sign in (the portal with rd=), on 401
--   txn.authctl_challenge authctl's WWW-Authenticate (a refused token or Basic login)
-- Client-sent Remote-* headers are removed in any case; on 2xx authctl's replace them.
--
-- The judged URL is built from validated parts only: the one Host header when it is exactly
-- host[:port] (a raw `Host: app:8443/static/x?` once made authctl judge /static/x while
-- HAProxy routed /admin), and HAProxy's own path and query. A Host it cannot judge sets
-- status 400; an absolute-form target (or h2 :authority) naming another host sets 421.

local IDENTITY = { "remote-user", "remote-groups", "remote-name", "remote-email" }
local CREDENTIALS = { "authorization", "proxy-authorization", "accept", "x-requested-with" }
local TIMEOUT_MS = 5000

-- HAProxy header tables are indexed from 0
local function first(values)
  if values == nil then return nil end
  return values[0] or values[1]
end

local function all(values)
  local out = {}
  if values == nil then return out end
  for i = 0, #values do
    if values[i] ~= nil then out[#out + 1] = values[i] end
  end
  return out
end

-- The one Host header if it is exactly host[:port], else nil.
local function valid_host(values)
  local hosts = all(values)
  if #hosts ~= 1 then return nil end
  local host = hosts[1]
  if host:match("^[%w%.%-]+$") or host:match("^[%w%.%-]+:%d+$") then return host end
  return nil
end

-- The host name of a Host value or an authority, lowercased, without the port.
local function host_name(text)
  return (text:match("^[^:]*")):lower()
end

core.register_action("authctl_auth", { "http-req" }, function(txn, auth_url)
  local hdrs = txn.http:req_get_headers()
  local ssl = txn.f:ssl_fc()
  local scheme = (ssl == true or ssl == 1) and "https" or "http"
  local host = valid_host(hdrs["host"])
  if host == nil then
    txn:set_var("txn.authctl_status", 400)
    return
  end
  -- absolute-form (and HTTP/2, whose target HAProxy keeps as an absolute URI): the target's
  -- authority must name the same host, or the app could get a host authctl did not judge
  local authority = txn.sf:url():match("^%a[%w+.-]*://([^/?#]*)")
  if authority ~= nil and host_name(authority) ~= host_name(host) then
    txn:set_var("txn.authctl_status", 421)
    return
  end
  local pathq = txn.sf:pathq()
  local method = txn.sf:method()
  -- only what HAProxy built: the client's own forwarding headers are never copied
  local request = {
    ["X-Original-URL"] = { scheme .. "://" .. host .. pathq },
    ["X-Original-Method"] = { method },
    ["X-Forwarded-Proto"] = { scheme },
    ["X-Forwarded-Host"] = { host },
    ["X-Forwarded-Uri"] = { pathq },
    ["X-Forwarded-Method"] = { method },
    ["X-Forwarded-For"] = { txn.sf:src() },
  }
  local cookies = all(hdrs["cookie"])
  if #cookies > 0 then request["Cookie"] = { table.concat(cookies, "; ") } end
  for _, name in ipairs(CREDENTIALS) do
    local value = first(hdrs[name])
    if value ~= nil then request[name] = { value } end
  end

  -- never let client-supplied identity headers through, whatever authctl says
  for _, name in ipairs(IDENTITY) do
    txn.http:req_del_header(name)
    txn.http:req_del_header((name:gsub("-", "_")))
  end

  local ok, res = pcall(function()
    return core.httpclient():get{ url = auth_url, headers = request, timeout = TIMEOUT_MS }
  end)
  if not ok or res == nil or res.status == nil then
    txn:set_var("txn.authctl_status", 0)
    return
  end
  txn:set_var("txn.authctl_status", res.status)
  if res.status >= 200 and res.status < 300 then
    for _, name in ipairs(IDENTITY) do
      local value = first(res.headers[name])
      if value ~= nil and value ~= "" then txn.http:req_set_header(name, value) end
    end
  else
    local location = first(res.headers["location"])
    if location ~= nil then txn:set_var("txn.authctl_location", location) end
    -- a refused token or Basic login: the script gets authctl's challenge with the 401
    local challenge = first(res.headers["www-authenticate"])
    if challenge ~= nil and challenge ~= "" then
      txn:set_var("txn.authctl_challenge", challenge)
    end
  end
end, 1)
