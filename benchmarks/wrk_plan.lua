-- wrk script for benchmarks/loadgen.py: cycles through a plan of requests (one per line:
-- METHOD<TAB>PATH<TAB>JSON-BODY-or-empty), stops each thread after its share of requests,
-- counts 4xx/5xx by class, and prints one JSON summary line. wrk's own duration is the -d limit even
-- when every thread stopped early, so each thread clocks its run (two `date` calls) for the throughput, and
-- prints "wrk_plan: thread done" when it has its share: the caller (benchmarks/loadgen.py) then ends wrk's wait
-- with a SIGINT (wrk's own handler: it still joins its threads, reports and calls done()) instead of idling out
-- the -d limit.
-- usage: wrk -t1 -cN -dSs -s wrk_plan.lua URL -- PLAN.tsv MAX_REQUESTS_PER_THREAD

local threads = {}

local function now()
  local handle = io.popen("date +%s%N")
  local ns = handle:read("*n")
  handle:close()
  return ns / 1e9
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  requests = {}
  for line in io.lines(args[1]) do
    local method, path, body = line:match("^([^\t]*)\t([^\t]*)\t?(.*)$")
    local headers = {}
    if body ~= nil and body ~= "" then
      headers["Content-Type"] = "application/json"
    else
      body = nil
    end
    requests[#requests + 1] = wrk.format(method, path, headers, body)
  end
  limit = tonumber(args[2])
  counter = 0
  started = now()
  elapsed = -1
  done_count = 0
  client_errors = 0
  server_errors = 0
end

function request()
  counter = counter + 1
  return requests[(counter - 1) % #requests + 1]
end

function response(status, headers, body)
  done_count = done_count + 1
  if status >= 500 then
    server_errors = server_errors + 1
  elseif status >= 400 then
    client_errors = client_errors + 1
  end
  if done_count == limit then
    elapsed = now() - started
    wrk.thread:stop()
    io.write("wrk_plan: thread done\n")
    io.flush()
  end
end

function done(summary, latency, requests)
  local c4, c5, longest = 0, 0, 0
  for _, thread in ipairs(threads) do
    c4 = c4 + thread:get("client_errors")
    c5 = c5 + thread:get("server_errors")
    local t = thread:get("elapsed")
    if t < 0 then  -- stopped by the time limit, not the request bound
      longest = summary.duration / 1e6
    elseif t > longest then
      longest = t
    end
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"http_4xx": %d, "http_5xx": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, math.min(summary.duration, longest * 1e6), e.connect, e.read, e.write, e.timeout, c4, c5,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
