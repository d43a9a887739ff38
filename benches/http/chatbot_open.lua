-- POST /chatbot/{chatbot}/session: opening a chatbot session. It answers the user's `previous_messages` (the
-- last 50 of the user's conversation with the chatbot), and, as seed 004 defines it, also opens a new session and
-- closes the user's previous one: a read of the history plus one write transaction. Each request uses the next
-- user of BENCH_TOKENS (round robin).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

local path = "/chatbot/" .. (os.getenv("BENCH_CHATBOT") or "assistant") .. "/session"
local next_token

common.install()

function init(args)
   next_token = common.round_robin("BENCH_TOKENS")
end

function request()
   return wrk.format("POST", path, { ["Authorization"] = "Bearer " .. next_token() }, "")
end
