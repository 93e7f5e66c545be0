-- wrk script for bench/bench.py. WORKLOAD selects the request; BENCH_TOKEN is the client token
-- (X-Vault-Token); BENCH_CIPHERTEXT a transit ciphertext for transit_decrypt. The same script and
-- settings drive cofferd and OpenBao. done() prints one line "JSON {...}" that bench.py reads.
local workload = os.getenv("WORKLOAD") or "kv_read"
local token = os.getenv("BENCH_TOKEN") or ""
local ciphertext = os.getenv("BENCH_CIPHERTEXT") or ""
local headers = { ["X-Vault-Token"] = token, ["Content-Type"] = "application/json" }
local secret = '{"data": {"username": "service-account", "password": "' .. string.rep("p", 64) .. '"}}'
local plaintext = string.rep("YWFh", 21) .. "YQ=="  -- base64 of 64 bytes
local counter = 0

request = function()
  counter = counter + 1
  if workload == "kv_read" then
    return wrk.format("GET", "/v1/secret/data/bench/hot", headers)
  elseif workload == "kv_write" then
    return wrk.format("POST", "/v1/secret/data/bench/w" .. (counter % 100), headers, secret)
  elseif workload == "token_lookup" then
    return wrk.format("GET", "/v1/auth/token/lookup-self", headers)
  elseif workload == "transit_encrypt" then
    return wrk.format("POST", "/v1/transit/encrypt/bench", headers, '{"plaintext": "' .. plaintext .. '"}')
  elseif workload == "transit_decrypt" then
    return wrk.format("POST", "/v1/transit/decrypt/bench", headers, '{"ciphertext": "' .. ciphertext .. '"}')
  elseif workload == "static" then
    return wrk.format("GET", "/v1/secret/data/bench/hot")
  end
  error("unknown WORKLOAD " .. workload)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
