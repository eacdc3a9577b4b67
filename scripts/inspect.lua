-- Read a basic lock's holder and remaining time on one master, atomically (no expiry between
-- the two reads). Read-only.
-- KEYS[1] = lock key.
-- Returns {value or false, PTTL in ms}: the stored value (`<token>:<owner id>`) or nil when
-- the key is absent, and the key's PTTL (-2 absent, -1 no expiry).
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
