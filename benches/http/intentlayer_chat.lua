-- POST /api/v1/sessions/chat: each request on the next session of BENCH_SESSIONS (round robin), with one of the
-- seed's example messages, so the classifier, the components and the stored messages vary like real traffic.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

local messages = {
   "Je voudrais un formulaire de contact",
   "Show me a dashboard with statistics",
   "I need a navigation menu",
   "Create a registration form please",
   "Bonjour, comment ça va ?",
}

local sessions, next_index
local headers = { ["Content-Type"] = "application/json" }

setup = common.setup

function init(args)
   sessions = common.lines_of("BENCH_SESSIONS")
   next_index = (thread_id or 0) * 7919
end

function request()
   next_index = next_index + 1
   local session = sessions[next_index % #sessions + 1]
   local message = messages[next_index % #messages + 1]
   local body = '{"session_id":"' .. session .. '","message":"' .. message .. '","input_type":"text"}'
   return wrk.format("POST", "/api/v1/sessions/chat", headers, body)
end

-- Looking at every answer in Lua slows wrk down: only when debugging.
if os.getenv("BENCH_DEBUG") then
   response = common.response
end
done = common.done
