-- POST /chatbot/{chatbot}/session: opening a chatbot session. It answers the user's `previous_messages` (the
-- last 50 of the user's conversation with the chatbot), and, as seed 004 defines it, also opens a new session and
-- closes the user's previous one: a read of the history plus one write transaction. Each request uses the next
-- user of BENCH_TOKENS (round robin).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

local tokens, next_index
local path = "/chatbot/" .. (os.getenv("BENCH_CHATBOT") or "assistant") .. "/session"

setup = common.setup

function init(args)
   tokens = common.lines_of("BENCH_TOKENS")
   next_index = (thread_id or 0) * 7919
end

function request()
   next_index = next_index + 1
   local headers = { ["Authorization"] = "Bearer " .. tokens[next_index % #tokens + 1] }
   return wrk.format("POST", path, headers, "")
end

-- Looking at every answer in Lua slows wrk down: only when debugging.
if os.getenv("BENCH_DEBUG") then
   response = common.response
end
done = common.done
