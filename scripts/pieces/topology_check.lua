-- Piece topology_check, $1 = a group's topology hash (src/sharded/seal.rs): the local sealed
-- (set by the script beforehand) takes the hash's seal generation, or the script refuses with
-- TOPOLOGYUNSEALED, touching nothing, when there is none (the master lost its topology state:
-- restart without data, flush; or it is being sealed). Then reads the stored epoch and its
-- pinned digest: t = {epoch, digest}, stored = the epoch as a number (0 when none).
sealed = redis.call('HGET', $1, 'gen')
if not sealed then
  return redis.error_reply('TOPOLOGYUNSEALED topology state not sealed on this master')
end
local t = {redis.call('HGET', $1, 'epoch'), redis.call('HGET', $1, 'digest')}
local stored = tonumber(t[1] or '0')
