-- wrk script of every wrk benchmark: send a pool of pre-built requests, count the answers.
--
-- Usage: wrk -t1 ... -s bench/wrk.lua URL -- POOL MODE [MARKER...]
-- POOL holds one request per line: method, path, body, then `Name: value` headers,
-- tab-separated (json.dumps never writes a tab). MODE `once` sends them in order,
-- each at most once while the pool lasts (the harness checks `sent` < `pool`);
-- `random` picks one at random each time. Each MARKER is counted in 2xx bodies.
-- done() prints `BENCH_RESULT {json}` for bench/harness.py.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   mode, markers, marks, pool = args[2], { (table.unpack or unpack)(args, 3) }, {}, {}
   for line in io.lines(args[1]) do
      local fields, headers = {}, {}
      for field in string.gmatch(line .. "\t", "([^\t]*)\t") do
         fields[#fields + 1] = field
      end
      for i = 4, #fields do
         local name, value = string.match(fields[i], "^([^:]+): (.*)$")
         headers[name] = value
      end
      pool[#pool + 1] = wrk.format(fields[1], fields[2], headers, fields[3] ~= "" and fields[3] or nil)
   end
   pool_size, calls, ok, non_2xx = #pool, 0, 0, 0
   for i = 1, #markers do
      marks[i] = 0
   end
   math.randomseed(1)
   collectgarbage()
   -- CPU spent so far went into loading the pool: not part of the run.
   loaded_cpu_s = os.clock()
end

function request()
   calls = calls + 1
   return pool[mode == "once" and (calls - 1) % pool_size + 1 or math.random(pool_size)]
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non_2xx = non_2xx + 1
      return
   end
   ok = ok + 1
   for i = 1, #markers do
      if string.find(body, markers[i], 1, true) then
         marks[i] = marks[i] + 1
      end
   end
end

-- done() runs in wrk's main Lua state: the counters live in the threads' states (-t1: one).
function done(summary, latency, requests)
   local t, e = threads[1], summary.errors
   io.write(string.format(
      'BENCH_RESULT {"duration_s": %.6f, "responses": %d, "ok": %d, "non_2xx": %d,'
         .. ' "socket_errors": %d, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f,'
         .. ' "sent": %d, "pool": %d, "run_cpu_s": %.3f, "marks": [%s]}\n',
      summary.duration / 1e6, summary.requests, t:get("ok"), t:get("non_2xx"),
      e.connect + e.read + e.write + e.timeout,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
      -- wrk calls request() once in the first thread to check the script: not sent.
      t:get("calls") - 1, t:get("pool_size"), os.clock() - t:get("loaded_cpu_s"),
      table.concat(t:get("marks"), ", ")))
end
