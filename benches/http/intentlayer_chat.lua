-- POST /api/v1/sessions/chat: each request on the next session of BENCH_SESSIONS (round robin), with one of the
-- seed's example messages.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

common.install()

local next_session

function init(args)
   next_session = common.round_robin("BENCH_SESSIONS")
end

function request()
   return common.chat_request(next_session())
end
