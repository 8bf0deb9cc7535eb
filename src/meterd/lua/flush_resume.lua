--[[ flush_resume.lua: lift a flush pause (flush_begin.lua) set by this caller.

KEYS[1]  flush pause
ARGV[1]  the caller's token: a pause another caller set since stays

Returns 1 if the pause was lifted, 0 if it was not this caller's (or had lapsed).
]]

if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
