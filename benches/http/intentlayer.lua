-- The IntentLayer requests of scripts/bench-http, each on the next session of BENCH_SESSIONS (round robin).
-- BENCH_ENDPOINT says which:
--   chat     POST /api/v1/sessions/chat, with one of the seed's example messages, so the classifier, the
--            components and the stored messages vary like real traffic
--   info     GET /api/v1/sessions/info/{session_id}
--   history  GET /api/v1/sessions/history/{session_id}?limit=20: the 20 newest messages
--   mixed    history, with a chat POST as one request in ten (an interaction, which makes the session's cached
--            history pages stale); with 256 sessions about one read in ten is the first since its session's
--            last interaction
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

local messages = {
   "Je voudrais un formulaire de contact",
   "Show me a dashboard with statistics",
   "I need a navigation menu",
   "Create a registration form please",
   "Bonjour, comment ça va ?",
}
local json_headers = { ["Content-Type"] = "application/json" }

local function chat(session, index)
   local message = messages[index % #messages + 1]
   local body = '{"session_id":"' .. session .. '","message":"' .. message .. '","input_type":"text"}'
   return wrk.format("POST", "/api/v1/sessions/chat", json_headers, body)
end

local function info(session)
   return wrk.format("GET", "/api/v1/sessions/info/" .. session)
end

local function history(session)
   return wrk.format("GET", "/api/v1/sessions/history/" .. session .. "?limit=20")
end

local function mixed(session, index)
   if index % 10 == 0 then
      return chat(session, index)
   end
   return history(session)
end

local endpoint = os.getenv("BENCH_ENDPOINT")
local build = ({ chat = chat, info = info, history = history, mixed = mixed })[endpoint]
if build == nil then
   error("BENCH_ENDPOINT must be chat, info, history or mixed, not " .. tostring(endpoint))
end

common.install()

local next_session

function init(args)
   next_session = common.round_robin("BENCH_SESSIONS")
end

function request()
   return build(next_session())
end
