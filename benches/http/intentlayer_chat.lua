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

local headers = { ["Content-Type"] = "application/json" }
local next_session

common.install()

function init(args)
   next_session = common.round_robin("BENCH_SESSIONS")
end

function request()
   local session, index = next_session()
   local message = messages[index % #messages + 1]
   local body = '{"session_id":"' .. session .. '","message":"' .. message .. '","input_type":"text"}'
   return wrk.format("POST", "/api/v1/sessions/chat", headers, body)
end
