-- Shared by bench/reads.lua and bench/replay.lua (loaded with dofile): the
-- threads' bookkeeping and the JSON line done() prints for the harness.
--
-- Usage: local common = dofile(<this file>); setup = common.setup; then in
-- done(), common.report(summary, latency, { <the script's own fields> }).

local common = {}
local threads = {}

function common.setup(thread)
   table.insert(threads, thread)
end

local function latest(name)
   local value = 0
   for _, thread in ipairs(threads) do
      value = math.max(value, thread:get(name))
   end
   return value
end

function common.total(name)
   local sum = 0
   for _, thread in ipairs(threads) do
      sum = sum + thread:get(name)
   end
   return sum
end

-- Print `BENCH_RESULT {...}`: wrk's own figures, the pool size and the CPU
-- of the run (after the pool was loaded), then the script's `extra` fields.
function common.report(summary, latency, extra)
   local errors = summary.errors
   local fields = {
      string.format('"duration_us": %d', summary.duration),
      string.format('"requests": %d', summary.requests),
      string.format('"bytes": %d', summary.bytes),
      string.format('"errors_connect": %d', errors.connect),
      string.format('"errors_read": %d', errors.read),
      string.format('"errors_write": %d', errors.write),
      string.format('"errors_status": %d', errors.status),
      string.format('"errors_timeout": %d', errors.timeout),
      string.format('"latency_p50_us": %d', latency:percentile(50)),
      string.format('"latency_p99_us": %d', latency:percentile(99)),
      string.format('"latency_max_us": %d', latency.max),
      string.format('"pool": %d', common.total("pool_size")),
      string.format('"run_cpu_s": %.3f', os.clock() - latest("loaded_cpu_s")),
   }
   for _, field in ipairs(extra) do
      fields[#fields + 1] = field
   end
   io.write("BENCH_RESULT {" .. table.concat(fields, ", ") .. "}\n")
end

return common
