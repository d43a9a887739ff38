-- Reads with writes among them: each request on the next session of BENCH_SESSIONS (round robin), one in ten a
-- chat POST (an interaction, which makes the session's cached history pages stale) and the others a history read
-- of 20 messages. With 256 sessions, about one read in ten is the first since its session's last interaction.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

common.install()

local next_session

function init(args)
   next_session = common.round_robin("BENCH_SESSIONS")
end

function request()
   local session, index = next_session()
   if index % 10 == 0 then
      return common.chat_request(session, index)
   end
   return common.history_request(session)
end
