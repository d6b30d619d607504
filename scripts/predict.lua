-- wrk script for steward's POST /v1/predict (used by scripts/load.sh).
--
--   wrk -t2 -c64 -d30s --latency -s scripts/predict.lua URL/v1/predict -- datasets/penguins.csv
--
-- With a CSV argument, every row of the Palmer penguins data becomes one
-- `{"features": {..}}` body (empty cells as null, the label column left out) and
-- the requests rotate through them, each wrk thread starting at a different row.
-- A second argument N > 1 sends batches instead: `{"instances": [..]}` bodies of
-- N consecutive rows (wrapping around), one starting at each row.
-- Without one, a few built-in bodies are used. `done()` prints the status counts
-- and a one-line machine-readable summary ("steward-load: key=value ...") that
-- load.sh reads.

-- Rows (feature objects) used without a CSV.
local fallback = {
  '{"island":"Torgersen","bill_length_mm":39.1,"bill_depth_mm":18.7,"flipper_length_mm":181,"body_mass_g":3750,"sex":"male"}',
  '{"island":"Dream","bill_length_mm":46.5,"bill_depth_mm":17.9,"flipper_length_mm":192,"body_mass_g":3500,"sex":"female"}',
  '{"island":"Biscoe","bill_length_mm":46.1,"bill_depth_mm":13.2,"flipper_length_mm":211,"body_mass_g":4500,"sex":"female"}',
  '{"island":"Biscoe","bill_length_mm":50,"bill_depth_mm":16.3,"flipper_length_mm":230,"body_mass_g":5700,"sex":"male"}',
  '{"island":"Torgersen","bill_length_mm":37.8,"bill_depth_mm":17.3,"flipper_length_mm":180,"body_mass_g":3700,"sex":null}',
}

local threads = {}
local next_id = 0

-- Runs in the main Lua state once per thread, before the thread starts.
function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local function split(line)
  local cells = {}
  for cell in (line .. ","):gmatch("([^,]*),") do
    table.insert(cells, cell)
  end
  return cells
end

local function json_value(cell)
  if cell == "" then
    return "null"
  elseif tonumber(cell) ~= nil then
    return cell
  else
    return '"' .. cell:gsub('[%c"\\]', "") .. '"'
  end
end

local function bodies_from_csv(path)
  local f = io.open(path, "r")
  if f == nil then
    return nil
  end
  local header = nil
  local bodies = {}
  for line in f:lines() do
    line = line:gsub("\r$", "")
    if header == nil then
      header = split(line)
    elseif line ~= "" then
      local cells = split(line)
      local parts = {}
      for i, name in ipairs(header) do
        if name ~= "label" then
          table.insert(parts, '"' .. name .. '":' .. json_value(cells[i] or ""))
        end
      end
      table.insert(bodies, '{' .. table.concat(parts, ",") .. '}')
    end
  end
  f:close()
  return bodies
end

-- Runs in each thread's own Lua state.
function init(args)
  local rows = nil
  if args[1] ~= nil and args[1] ~= "" then
    rows = bodies_from_csv(args[1])
    if rows == nil or #rows == 0 then
      io.stderr:write("predict.lua: cannot read rows from " .. args[1] .. "\n")
      os.exit(2)
    end
  else
    rows = fallback
  end
  batch = tonumber(args[2] or "1")
  if batch == nil or batch < 1 then
    io.stderr:write("predict.lua: the batch size must be a number >= 1, got " .. tostring(args[2]) .. "\n")
    os.exit(2)
  end
  local bodies = {}
  for i = 1, #rows do
    if batch == 1 then
      bodies[i] = '{"features":' .. rows[i] .. '}'
    else
      local instances = {}
      for k = 0, batch - 1 do
        instances[k + 1] = rows[(i - 1 + k) % #rows + 1]
      end
      bodies[i] = '{"instances":[' .. table.concat(instances, ",") .. ']}'
    end
  end
  local headers = { ["Content-Type"] = "application/json" }
  requests = {}
  for i, body in ipairs(bodies) do
    -- nil path: wrk's own, i.e. the URL's path (/v1/predict).
    requests[i] = wrk.format("POST", nil, headers, body)
  end
  index = (thread_id or 0) * 37 % #requests
  statuses = {}
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    if s ~= nil then
      for status, n in pairs(s) do
        counts[status] = (counts[status] or 0) + n
      end
    end
  end
  local ok = 0
  local codes = {}
  for status, n in pairs(counts) do
    if status >= 200 and status < 300 then
      ok = ok + n
    end
    table.insert(codes, status)
  end
  table.sort(codes)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write("------------------------------------------------------------\n")
  io.write("Responses by status:\n")
  for _, status in ipairs(codes) do
    io.write(string.format("  %d: %d\n", status, counts[status]))
  end
  io.write(string.format("Latency: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000, latency.max / 1000))
  io.write(string.format("Throughput: %.1f req/s (%d requests in %.2f s)\n",
    summary.requests / secs, summary.requests, secs))
  local batch = threads[1] and threads[1]:get("batch") or 1
  io.write(string.format("Predictions: %.1f /s (batches of %d)\n", summary.requests * batch / secs, batch))
  io.write(string.format(
    "steward-load: batch=%d requests=%d ok=%d non2xx=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f\n",
    batch, summary.requests, ok, e.status, e.connect, e.read, e.write, e.timeout, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
