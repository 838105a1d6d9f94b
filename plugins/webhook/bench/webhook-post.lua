-- wrk script: one alert per POST to the webhook's /api/v1/alerts, over keep-alive connections.
-- TOKEN: the bearer token (default bench-token).
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "bench-token")
request = function()
  n = n + 1
  local body = string.format(
    '{"subject":"wrk load alert %d","severity":"critical",' ..
    '"labels":{"alertname":"WrkBench","instance":"host-%d","job":"wrk"}}',
    n, n % 1000)
  return wrk.format(nil, "/api/v1/alerts", nil, body)
end
