//! The Lua scripts behind `RedisStore`: each store operation is one script, so it costs one round
//! trip and runs atomically on the server (no read-modify-write race between backends).
//!
//! Layout of a session key (a Redis hash):
//! - `m:v` version (bumped by every save), `m:c` creation time (ms), `m:d` absolute deadline
//!   (ms since the epoch, `0` = none);
//! - `d:<key>` one field per session key, holding its serialized value.
//!
//! Times come from the Redis server's clock (`TIME`), so backends with skewed clocks agree.
//! The key's TTL is always set (`PEXPIREAT` = min(now + idle, deadline)): nothing lives forever.

/// Shared Lua helpers, prepended to the scripts that set expiry.
macro_rules! lua_prelude {
    () => {
        r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function expire(key, now, idle, deadline)
  local at = now + idle
  if deadline > 0 and deadline < at then at = deadline end
  redis.call('PEXPIREAT', key, string.format('%.0f', at))
end
"
    };
}

/// KEYS[1] session; ARGV[1] version the caller holds, or ''.
/// Returns nil (missing), `{version}` (unchanged), or the whole hash as a flat list.
pub(super) const LOAD: &str = r"
local v = redis.call('HGET', KEYS[1], 'm:v')
if not v then return false end
if ARGV[1] ~= '' and ARGV[1] == v then return {v} end
return redis.call('HGETALL', KEYS[1])
";

/// KEYS[1] session; ARGV[1] idle ms, ARGV[2] absolute ms (0 = none), then field/value pairs
/// (already prefixed). Returns 1 if created, 0 if the key exists.
pub(super) const CREATE: &str = concat!(
    lua_prelude!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = now_ms()
local abs = tonumber(ARGV[2])
local deadline = 0
if abs > 0 then deadline = now + abs end
redis.call('HSET', KEYS[1], 'm:v', 1, 'm:c', string.format('%.0f', now),
  'm:d', string.format('%.0f', deadline))
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
expire(KEYS[1], now, tonumber(ARGV[1]), deadline)
return 1
"
);

/// KEYS[1] session; ARGV[1] idle ms, ARGV[2] '1' to clear all data first, ARGV[3] number of
/// pairs to set, then the pairs, then the fields to remove (all prefixed).
/// Returns the new version, or nil if the session is gone (never resurrects it).
pub(super) const SAVE: &str = concat!(
    lua_prelude!(),
    r"
local d = redis.call('HGET', KEYS[1], 'm:d')
if not d then return false end
local deadline = tonumber(d)
local now = now_ms()
if deadline > 0 and deadline <= now then return false end
if ARGV[2] == '1' then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(f, 1, 2) == 'd:' then redis.call('HDEL', KEYS[1], f) end
  end
end
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
local v = redis.call('HINCRBY', KEYS[1], 'm:v', 1)
expire(KEYS[1], now, tonumber(ARGV[1]), deadline)
return v
"
);

/// KEYS[1] session; ARGV[1] idle ms. Returns 1 if extended, 0 if the session is gone.
pub(super) const TOUCH: &str = concat!(
    lua_prelude!(),
    r"
local d = redis.call('HGET', KEYS[1], 'm:d')
if not d then return 0 end
expire(KEYS[1], now_ms(), tonumber(ARGV[1]), tonumber(d))
return 1
"
);

/// Field prefix for session data (metadata uses `m:`), so user keys can never collide with it.
pub(super) const DATA_PREFIX: &str = "d:";
