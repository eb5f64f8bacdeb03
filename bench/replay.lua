-- wrk script: replay the pre-signed requests bench/ wrote, each exactly once.
--
-- usage: wrk -t T -c C -d D -s bench/replay.lua URL -- <requests file> <T> [close|keepalive]
-- The file has one request per line: METHOD <tab> PATH [<tab> JSON body]. Thread k of T
-- takes lines k, k+T, k+2T, ... in file order, so every request (and its nonce) is sent
-- once and each thread sends its nonces in increasing order. A file with a single line
-- (unsigned GETs) is shared by every thread and repeated. `wrapped` counts how often a
-- thread ran out of signed requests and started over (replayed nonces then fail: the
-- run is too short of requests and bench/ retries it with more).
-- Like the Ocean Provider, every request says `Connection: close` (one TCP connection per
-- request) unless the third argument is `keepalive`.
-- done() prints one line, BENCH_JSON {...}, that bench/ parses.

local requests = {}
local count = 0
local index = 0
wrapped = 0
non2xx = 0
sent = 0
codes = {}

local threads = {}
local created = 0

function setup(thread)
   thread:set("thread_id", created)
   created = created + 1
   table.insert(threads, thread)
end

function init(args)
   local path = args[1]
   local nthreads = tonumber(args[2])
   local close = args[3] ~= "keepalive"
   local plain = {}
   local json = { ["Content-Type"] = "application/json" }
   if close then
      plain["Connection"] = "close"
      json["Connection"] = "close"
   end
   local lines = {}
   for line in io.lines(path) do
      if line ~= "" then
         lines[#lines + 1] = line
      end
   end
   local shared = #lines == 1
   for n, line in ipairs(lines) do
      if shared or (n - 1) % nthreads == thread_id then
         local method, target, body = line:match("^(%u+)\t([^\t]*)\t?(.*)$")
         if body == "" then
            requests[#requests + 1] = wrk.format(method, target, plain)
         else
            requests[#requests + 1] = wrk.format(method, target, json, body)
         end
      end
   end
   count = #requests
   if shared then
      wrapped = -1  -- not counted: repeating an unsigned request is the point
   end
end

function request()
   index = index + 1
   if index > count then
      index = 1
      if wrapped >= 0 then
         wrapped = wrapped + 1
      end
   end
   sent = sent + 1
   return requests[index]
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      codes[status] = (codes[status] or 0) + 1
   end
end

function done(summary, latency, requests)
   local bad, wraps, issued = 0, 0, 0
   local by_code = {}
   for _, thread in ipairs(threads) do
      bad = bad + thread:get("non2xx")
      local w = thread:get("wrapped")
      if w > 0 then
         wraps = wraps + w
      end
      issued = issued + thread:get("sent")
      for status, n in pairs(thread:get("codes")) do
         by_code[status] = (by_code[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(by_code) do
      parts[#parts + 1] = string.format('"%d": %d', status, n)
   end
   -- The latency at every 0.1 % of the requests, so that bench/ can merge the percentiles
   -- of several runs (the slices of one scenario).
   local grid = {}
   for k = 1, 1000 do
      grid[k] = string.format("%d", latency:percentile(k / 10))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
         .. '"write": %d, "status": %d, "timeout": %d, "non2xx": %d, "wrapped": %d, "sent": %d, '
         .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, "codes": {%s}, "grid_us": [%s]}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, bad, wraps, issued, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean, table.concat(parts, ", "), table.concat(grid, ", ")))
end
