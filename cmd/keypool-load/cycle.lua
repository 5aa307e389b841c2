-- One acquire→unblock cycle after another on each connection, for wrk. Run with as many
-- threads as connections (-t N -c N), so that a thread's state is its connection's.
-- The first script argument names the target: graphql (keypool or the gqlgen floor),
-- rest, or plain (which answers a lease-shaped body and ignores what it is sent).
local target = "graphql"
local id, token
failed = 0 -- answers that were not what the cycle expects; a global, for done to read

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local json = { ["Content-Type"] = "application/json" }
local acquireGraphQL = '{"query":"mutation { acquireKey { token key { id } } }"}'

function init(args)
  target = args[1] or target
end

function request()
  if id == nil then
    if target == "graphql" then
      return wrk.format("POST", "/graphql", json, acquireGraphQL)
    elseif target == "rest" then
      return wrk.format("POST", "/v1/keys/acquire", json, "")
    end
    return wrk.format("POST", "/acquire", json, "")
  end
  local key, lease = id, token
  id, token = nil, nil
  if target == "graphql" then
    return wrk.format("POST", "/graphql", json,
      '{"query":"mutation($id: ID!, $token: ID) { unblockKey(id: $id, token: $token) { id } }","variables":{"id":"'
      .. key .. '","token":"' .. lease .. '"}}')
  elseif target == "rest" then
    return wrk.format("POST", "/v1/keys/" .. key .. "/unblock", json, '{"token":"' .. lease .. '"}')
  end
  return wrk.format("POST", "/unblock", json, '{"token":"' .. lease .. '"}')
end

-- An acquire's answer names the key and the lease; an unblock's names neither, or
-- only the key, and leaves the next request an acquire.
function response(status, headers, body)
  local t = body:match('"token":"([^"]+)"')
  if t and status == 200 then
    id, token = body:match('"id":"([^"]+)"'), t
  elseif status ~= 200 or body:find('"errors"', 1, true) then
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local wrong = 0
  for _, thread in ipairs(threads) do
    wrong = wrong + thread:get("failed")
  end
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"socket_errors":%d,"non2xx":%d,"wrong":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status, wrong,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
