package redisstore

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
	"github.com/keypool/keypool/keystore/lincheck"
)

// startCluster starts a Redis Cluster of three primaries on loopback ports, joined
// with redis-cli --cluster create, and waits until it serves every slot.
func startCluster(t *testing.T) []*tcpRedis {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed: apt-get install redis-server redis-tools", bin)
		}
	}
	dir, err := os.MkdirTemp("", "cluster")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var nodes []*tcpRedis
	create := []string{"--cluster", "create"}
	ports := freePorts(t, 6)
	for i := range 3 {
		// A bus port of its own: the default, the port plus 10000, may not exist.
		n := startTCPRedis(t, dir, "node"+strconv.Itoa(i), ports[2*i], "--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", "--cluster-port", strconv.Itoa(ports[2*i+1]), "--cluster-node-timeout", "5000")
		nodes = append(nodes, n)
		create = append(create, n.addr())
	}
	out, err := exec.Command("redis-cli", append(create, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	waitUntil(t, 30*time.Second, "the cluster serves every slot", func() bool {
		for _, n := range nodes {
			info, err := n.do("CLUSTER", "INFO").ToString()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		return true
	})
	return nodes
}

// clusterURL is the store URL of a cluster: a node as the host, the others as addr
// parameters (seeds: any one would do).
func clusterURL(nodes []*tcpRedis) string {
	return fmt.Sprintf("redis://%s/0?addr=%s&addr=%s", nodes[0].addr(), nodes[1].addr(), nodes[2].addr())
}

// shardsOf returns, for each pool of namespace ns, the node that holds its keys.
func shardsOf(t *testing.T, nodes []*tcpRedis, ns string) map[string]string {
	t.Helper()
	shards := map[string]string{}
	tag := regexp.MustCompile(`^\{` + ns + `:([^}]*)\}:meta$`)
	for _, n := range nodes {
		for _, key := range must(n.do("KEYS", "*").AsStrSlice())(t) {
			if m := tag.FindStringSubmatch(key); m != nil {
				shards[m[1]] = n.addr()
			}
		}
	}
	return shards
}

// TestClusterPoolsOnShards: on a three-primary Redis Cluster, the pools of one
// namespace land on different shards (a hash tag each), and two replicas share them:
// a pool made on one is found by the other, its keys leased there, and its events
// (read per shard) reach the other's subscribers.
func TestClusterPoolsOnShards(t *testing.T) {
	nodes := startCluster(t)
	ctx := context.Background()
	a := openAt(t, clusterURL(nodes), clockwork.NewRealClock(), keystore.Options{}, "cl")
	b := openAt(t, clusterURL(nodes), clockwork.NewRealClock(), keystore.Options{}, "cl")
	require.True(t, a.b.cluster, "the store did not detect the cluster")

	pools := []string{"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"}
	for _, pool := range pools {
		must(a.Generate(ctx, pool, 2))(t)
	}
	shards := shardsOf(t, nodes, "cl")
	require.Len(t, shards, len(pools))
	used := map[string]bool{}
	for _, addr := range shards {
		used[addr] = true
	}
	require.GreaterOrEqual(t, len(used), 2, "every pool on one shard: %v", shards)

	sub := must(b.Subscribe(ctx, keystore.SubscribeOptions{Pool: "p5"}))(t)
	for _, pool := range pools {
		k := must(b.Acquire(ctx, keystore.AcquireOptions{Pool: pool}))(t)
		must(a.Unblock(ctx, k.ID, k.Lease.Token))(t)
	}
	require.Equal(t, keystore.Stats{Total: 2, Available: 2}, must(b.Stats(ctx, "p3"))(t))
	listed := must(b.Pools(ctx))(t)
	require.Len(t, listed, len(pools)+1) // and the default pool, never made
	for _, p := range listed[1:] {
		require.Equal(t, keystore.Stats{Total: 2, Available: 2}, p.Stats, p.Name)
	}
	ev := nextEvent(t, sub)
	require.Equal(t, keystore.EventAcquired, ev.Type, "%+v", ev)
	ev = nextEvent(t, sub)
	require.Equal(t, keystore.EventUnblocked, ev.Type, "%+v", ev) // applied by a, read by b

	// A replica that waits for a key of a pool on another shard is served when the
	// other frees one.
	held := []keystore.Key{must(a.Acquire(ctx, keystore.AcquireOptions{Pool: "p2"}))(t), must(a.Acquire(ctx, keystore.AcquireOptions{Pool: "p2"}))(t)}
	got := make(chan keystore.Key, 1)
	go func() {
		k, err := b.Acquire(ctx, keystore.AcquireOptions{Pool: "p2", Wait: 10 * time.Second})
		if err == nil {
			got <- k
		}
		close(got)
	}()
	waitFor(t, func() bool { return b.b.lanes.Made("p2").Waiters.Len() == 1 })
	must(a.Unblock(ctx, held[0].ID, held[0].Lease.Token))(t)
	k, ok := <-got
	require.True(t, ok, "the waiting acquire was not served")
	require.Equal(t, held[0].ID, k.ID)
}

// TestClusterLinearizable records a short history of 4 clients on two replicas of
// pools on a cluster and checks it with the porcupine model.
func TestClusterLinearizable(t *testing.T) {
	nodes := startCluster(t)
	h := lincheck.NewHistory()
	replicas := linReplicasAt(t, []string{clusterURL(nodes), clusterURL(nodes)}, h)
	h.Run(t, lincheck.Config{Stores: asStores(replicas), Clients: 4, Calls: 200, Keys: 4,
		Pools: []string{keystore.DefaultPool, "b"}, Seed: 5, Held: true})
	res := h.Check(t, time.Minute)
	t.Logf("%s", h.Summary())
	require.Equal(t, porcupine.Ok, res)
}

// TestREADMEClusterExample opens a store with the -store URL of docs/redis.md's Cluster
// example, its ports swapped for the test cluster's, and leases a key through it.
func TestREADMEClusterExample(t *testing.T) {
	readme, err := os.ReadFile("../../docs/redis.md")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?s)### Redis Cluster\n.*?-store '(redis://[^']*)'`).FindStringSubmatch(string(readme))
	require.NotNil(t, m, "docs/redis.md has no Cluster example")
	nodes := startCluster(t)
	example := m[1]
	for i, port := range []string{"7000", "7001", "7002"} {
		require.Contains(t, example, "127.0.0.1:"+port)
		example = strings.Replace(example, "127.0.0.1:"+port, nodes[i].addr(), 1)
	}
	require.Equal(t, clusterURL(nodes), example)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := New(ctx, example+"&namespace=readme", clockwork.NewRealClock(), keystore.Options{})
	require.NoError(t, err)
	defer pool.Close()
	must(pool.Generate(ctx, "", 1))(t)
	key := must(pool.Acquire(ctx, keystore.AcquireOptions{}))(t)
	must(pool.Unblock(ctx, key.ID, key.Lease.Token))(t)
}
