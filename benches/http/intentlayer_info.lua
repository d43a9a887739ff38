-- GET /api/v1/sessions/info/{session_id}: each request on the next session of BENCH_SESSIONS (round robin).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

common.install()

local next_session

function init(args)
   next_session = common.round_robin("BENCH_SESSIONS")
end

function request()
   return wrk.format("GET", "/api/v1/sessions/info/" .. next_session())
end
