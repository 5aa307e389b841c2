package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/keypool/keypool/keystore"
)

// TestReplicasCounted: each replica of a namespace counts the others that said they
// are there within three beats: a replica that closes leaves the count at once, and one
// not heard from (a stale entry: a replica killed, or paused) drops out of it. Another
// namespace's replicas are not counted.
func TestReplicasCounted(t *testing.T) {
	srv := startRedis(t)
	clock := newFakeClock()
	ns := fmt.Sprintf("pool%d", namespaces.Add(1))
	beat := withHealthEvery(50 * time.Millisecond) // real time: the beats, not a TTL rule
	a := openNamespace(t, srv, clock, keystore.Options{}, ns, beat)
	b := openNamespace(t, srv, clock, keystore.Options{}, ns, beat)
	openNamespace(t, srv, clock, keystore.Options{}, fmt.Sprintf("pool%d", namespaces.Add(1)), beat)
	ctx := context.Background()
	count := func(s testStore) int { return must(s.Replicas(ctx))(t) }
	waitFor(t, func() bool { return count(a) == 2 && count(b) == 2 })

	// A replica last heard from long ago: not counted, and its entry dropped.
	admin := srv.client()
	defer admin.Close()
	long := strconv.FormatInt(time.Now().Add(-time.Hour).UnixMilli(), 10)
	if err := admin.do("HSET", "{"+ns+"}:replicas", "gone", long).Error(); err != nil {
		t.Fatal(err)
	}
	if n := count(a); n != 2 {
		t.Fatalf("%d replicas counted with a stale one, want 2", n)
	}
	if n := must(admin.do("HEXISTS", "{"+ns+"}:replicas", "gone").AsInt64())(t); n != 0 {
		t.Fatal("the stale replica's entry is still there")
	}

	b.Close()
	if n := count(a); n != 1 {
		t.Fatalf("%d replicas counted after one closed, want 1", n)
	}
}
