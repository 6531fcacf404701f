-- wrk script for `make bench`: POST the file named after `--` as an application/json body,
-- the same request on every connection.
--   wrk -t1 -c16 -d5s --latency -s bench/configs/wrk-post.lua URL -- BODY_FILE
function init(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.body = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
