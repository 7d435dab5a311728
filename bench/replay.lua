-- wrk script of the ingest benchmark: replay pre-signed requests, each at most once.
--
-- Usage: wrk -t1 ... -s bench/replay.lua URL -- REQUESTS_FILE PATH
-- REQUESTS_FILE holds one request per line: the Stripe-Signature header, a tab,
-- then the JSON body (json.dumps never writes a newline). All requests are
-- formatted once in init(); request() hands them out in order (the harness
-- makes the pool larger than a round can send, and checks that it did).
-- response() sorts the answers; done() prints one JSON line for the harness.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")
local total = common.total
setup = common.setup

function init(args)
   local file, target = args[1], args[2]
   pool = {}
   for line in io.lines(file) do
      local tab = string.find(line, "\t", 1, true)
      local headers = {
         ["Content-Type"] = "application/json",
         ["Stripe-Signature"] = string.sub(line, 1, tab - 1),
      }
      pool[#pool + 1] = wrk.format("POST", target, headers, string.sub(line, tab + 1))
   end
   pool_size = #pool
   collectgarbage()
   -- Process CPU time spent so far, mostly loading the pool: not part of the run.
   loaded_cpu_s = os.clock()
   calls = 0
   accepted = 0
   duplicate = 0
   other_2xx = 0
   non_2xx = 0
end

function request()
   calls = calls + 1
   return pool[(calls - 1) % pool_size + 1]
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non_2xx = non_2xx + 1
   elseif string.find(body, '"accepted"', 1, true) then
      accepted = accepted + 1
   elseif string.find(body, '"duplicate"', 1, true) then
      duplicate = duplicate + 1
   else
      other_2xx = other_2xx + 1
   end
end

function done(summary, latency, requests)
   common.report(summary, latency, {
      -- wrk calls request() once, in the first thread, to check the script: not sent.
      string.format('"sent": %d', total("calls") - 1),
      string.format('"accepted": %d', total("accepted")),
      string.format('"duplicate": %d', total("duplicate")),
      string.format('"other_2xx": %d', total("other_2xx")),
      string.format('"non_2xx": %d', total("non_2xx")),
   })
end
