-- wrk script of the gateway suite: GETs round-robin over the paths in BENCH_PATHS (comma
-- separated) with the Authorization and X-Purpose headers from the environment, and one
-- machine-readable summary line at the end (latencies in microseconds).

local paths = {}
for path in string.gmatch(os.getenv("BENCH_PATHS") or "/", "[^,]+") do
  paths[#paths + 1] = path
end

local authorization = os.getenv("BENCH_AUTHORIZATION") or ""
local purpose = os.getenv("BENCH_PURPOSE") or ""
if authorization ~= "" then wrk.headers["Authorization"] = authorization end
if purpose ~= "" then wrk.headers["X-Purpose"] = purpose end

local counter = 0

function request()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect_errors": %d, '
      .. '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, '
      .. '"p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max))
end
