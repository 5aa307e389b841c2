package redisstore

import (
	"context"
	"strconv"
	"time"
)

// The replicas of a namespace each say they are there, every healthEvery, in the
// namespace's hash {ns}:replicas (replica id -> Redis's TIME in ms), so that any of
// them can count the others: those heard from within replicasHeard. The count costs
// O(replicas), and entries not heard from are dropped as it counts.
var scriptReplicas = plainFn("replicas", `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], now) end
local all, n = redis.call('HGETALL', KEYS[1]), 0
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) > now - tonumber(ARGV[1]) then n = n + 1 else redis.call('HDEL', KEYS[1], all[i]) end
end
return {n}
`)

// replicasHeard is how recently a replica must have said it is there to count: three
// of its beats, so that a late beat does not drop it.
func (s *Store) replicasHeard() int64 { return 3 * s.healthEvery.Milliseconds() }

// replicas runs scriptReplicas, saying this replica is there first if beat.
func (s *Store) replicas(ctx context.Context, beat bool) (int, error) {
	if err := s.refusing(); err != nil {
		return 0, err
	}
	me := ""
	if beat {
		me = s.replica
	}
	msgs, _, err := s.send(ctx, s.fn(s.scripts.replicas), []string{s.nsPrefix + "replicas"},
		[]string{strconv.FormatInt(s.replicasHeard(), 10), me}, false, false)
	if err != nil {
		return 0, s.unavailable(err, false, readOnly)
	}
	n, err := msgs[0].AsInt64()
	return int(n), err
}

// beat says this replica is there (the watcher, every healthEvery). A beat Redis does
// not take is no matter: the next one comes soon, and the count is only shown.
func (s *Store) beat() {
	ctx, cancel := context.WithTimeout(s.ctx, readyTimeout)
	defer cancel()
	_, _ = s.replicas(ctx, true)
}

// leave takes this replica out of the count as it closes; a Redis that does not answer
// at once is not waited for (the entry ages out).
func (s *Store) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	s.rdb.Do(ctx, s.rdb.B().Hdel().Key(s.nsPrefix+"replicas").Field(s.replica).Build())
}

// Replicas implements keystore.Backend: the replicas of the namespace heard from
// within three beats of the watcher, this one included.
func (s *Store) Replicas(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	return s.replicas(ctx, false)
}
