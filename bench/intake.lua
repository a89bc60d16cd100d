-- wrk script: POST /api/v1/conversions with a random existing click and a unique txn_id.
-- args: <click-ids file> <advertiser api key>
local ids = {}
local counter = 0
local prefix = ""

function init(args)
  for line in io.lines(args[1]) do ids[#ids + 1] = line end
  wrk.headers["Authorization"] = "Bearer " .. args[2]
  wrk.headers["Content-Type"] = "application/json"
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  prefix = string.format("%x", math.random(1, 2147483647))
end

function request()
  counter = counter + 1
  local body = string.format('{"click_id":"%s","txn_id":"b-%s-%d","payout":"1.25"}',
    ids[math.random(#ids)], prefix, counter)
  return wrk.format("POST", "/api/v1/conversions", nil, body)
end
