-- Shared by the scripts/bench-http wrk scripts: per-thread ids, id lists from files, and one machine-readable
-- result line that scripts/bench-http turns into its table.

local common = {}

local thread_count = 0

-- wrk calls setup() once per thread in the main Lua state: give each thread its number, so threads start at
-- different places in the id list instead of hammering the same rows in lockstep.
function common.setup(thread)
   thread:set("thread_id", thread_count)
   thread_count = thread_count + 1
end

-- Sets wrk's global hooks every script shares: setup, done, and (only with BENCH_DEBUG: looking at every
-- answer in Lua slows wrk down) response.
function common.install()
   setup = common.setup
   done = common.done
   if os.getenv("BENCH_DEBUG") then
      response = common.response
   end
end

-- A function giving the lines of the file named by environment variable `var` one after another, round robin,
-- this thread starting at its own place. Call it from init(), once wrk has set the thread's number.
function common.round_robin(var)
   local lines = common.lines_of(var)
   local index = (thread_id or 0) * 7919
   return function()
      index = index + 1
      return lines[index % #lines + 1], index
   end
end

-- The non-empty lines of the file named by environment variable `var`.
function common.lines_of(var)
   local path = os.getenv(var)
   if path == nil or path == "" then
      error(var .. " is not set")
   end
   local file = assert(io.open(path, "r"))
   local lines = {}
   for line in file:lines() do
      if line ~= "" then
         lines[#lines + 1] = line
      end
   end
   file:close()
   if #lines == 0 then
      error(path .. " is empty")
   end
   return lines
end

-- With BENCH_DEBUG set: counts answers that are not 2xx and shows the first few. (summary.errors.status in
-- done() counts the answers with a status >= 400 in every run.)
common.non_2xx = 0
function common.response(status, headers, body)
   if status < 200 or status > 299 then
      common.non_2xx = common.non_2xx + 1
      if common.non_2xx <= 3 then
         io.stderr:write("non-2xx answer " .. status .. ": " .. string.sub(body or "", 1, 200) .. "\n")
      end
   end
end

-- One line for scripts/bench-http: rate, latency percentiles in milliseconds, and every kind of failure.
function common.done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "BENCH_RESULT requests=%d seconds=%.2f rps=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f " ..
      "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d status_errors=%d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
      latency.max / 1000, e.connect, e.read, e.write, e.timeout, e.status))
end

return common
