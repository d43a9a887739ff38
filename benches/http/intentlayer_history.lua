-- GET /api/v1/sessions/history/{session_id}?limit=20: each request on the next session of BENCH_SESSIONS (round
-- robin), the 20 newest messages of its conversation.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

local sessions, next_index

setup = common.setup

function init(args)
   sessions = common.lines_of("BENCH_SESSIONS")
   next_index = (thread_id or 0) * 7919
end

function request()
   next_index = next_index + 1
   return wrk.format("GET", "/api/v1/sessions/history/" .. sessions[next_index % #sessions + 1] .. "?limit=20")
end

-- Looking at every answer in Lua slows wrk down: only when debugging.
if os.getenv("BENCH_DEBUG") then
   response = common.response
end
done = common.done
