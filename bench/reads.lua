-- wrk script of the reads benchmark: entitlement GETs or checks of random workspaces.
--
-- Usage: wrk -t1 ... -s bench/reads.lua URL -- WORKSPACES_FILE MODE TOKEN
-- WORKSPACES_FILE holds one workspace id per line. MODE is `entitlements`
-- (GET /v1/workspaces/<id>/entitlements) or `check` (POST
-- /v1/workspaces/<id>/check with {"action": "ai_imports"}); both carry the
-- bearer TOKEN. Every request is formatted once in init(); request() picks
-- one of them at random. response() counts the answers; done() prints one
-- JSON line for the harness.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")
local total = common.total
setup = common.setup

function init(args)
   local file, mode, token = args[1], args[2], args[3]
   local method, suffix, body = "GET", "/entitlements", nil
   local headers = { ["Authorization"] = "Bearer " .. token }
   if mode == "check" then
      method, suffix, body = "POST", "/check", '{"action": "ai_imports"}'
      headers["Content-Type"] = "application/json"
   end
   pool = {}
   for workspace in io.lines(file) do
      pool[#pool + 1] = wrk.format(method, "/v1/workspaces/" .. workspace .. suffix, headers, body)
   end
   pool_size = #pool
   math.randomseed(1)
   collectgarbage()
   -- Process CPU time spent so far, loading the pool: not part of the run.
   loaded_cpu_s = os.clock()
   calls = 0
   ok = 0
   non_200 = 0
   allow = 0
   would_deny = 0
   as_of = 0
end

function request()
   calls = calls + 1
   return pool[math.random(pool_size)]
end

function response(status, headers, body)
   if status ~= 200 then
      non_200 = non_200 + 1
      return
   end
   ok = ok + 1
   if string.find(body, '"as_of_seq"', 1, true) then
      as_of = as_of + 1
   end
   if string.find(body, '"decision":"allow"', 1, true) then
      allow = allow + 1
   elseif string.find(body, '"decision":"would_deny"', 1, true) then
      would_deny = would_deny + 1
   end
end

function done(summary, latency, requests)
   common.report(summary, latency, {
      string.format('"ok": %d', total("ok")),
      string.format('"non_200": %d', total("non_200")),
      string.format('"as_of": %d', total("as_of")),
      string.format('"allow": %d', total("allow")),
      string.format('"would_deny": %d', total("would_deny")),
   })
end
