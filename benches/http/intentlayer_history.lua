-- GET /api/v1/sessions/history/{session_id}?limit=20: each request on the next session of BENCH_SESSIONS (round
-- robin), the 20 newest messages of its conversation.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

common.install()

local next_session

function init(args)
   next_session = common.round_robin("BENCH_SESSIONS")
end

function request()
   return common.history_request(next_session())
end
