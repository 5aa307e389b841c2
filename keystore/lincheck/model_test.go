package lincheck

import (
	"math"
	"testing"

	"github.com/anishathalye/porcupine"

	"github.com/keypool/keypool/keystore"
)

// op is a call of client c over [call, ret]; ret < 0 means it never returned.
func op(c int, call, ret int64, in Input, out Output) porcupine.Operation {
	if ret < 0 {
		ret = math.MaxInt64
	}
	return porcupine.Operation{ClientId: c, Input: in, Output: out, Call: call, Return: ret}
}

var (
	acquire    = Input{Kind: Acquire, Key: NoKey}
	leased     = func(k int, f int64) Output { return Output{Key: k, Blocked: true, Fence: f} }
	free       = func(k int) Output { return Output{Key: k} }
	code       = func(c keystore.Code) Output { return Output{Code: c} }
	unknown    = Output{Unknown: true}
	unblockKey = func(k int, f int64) Input { return Input{Kind: Unblock, Key: k, Fence: f, TokenKey: k} }
	getKey     = func(k int) Input { return Input{Kind: Get, Key: k} }
	acquireIn  = func(p uint8) Input { return Input{Kind: Acquire, Key: NoKey, Pool: p} }
	coolKey    = func(k int, f int64) Input { return Input{Kind: Unblock, Key: k, Fence: f, TokenKey: k, Cooldown: true} }
	failKey    = func(k int, f int64) Input { return Input{Kind: Unblock, Key: k, Fence: f, TokenKey: k, Failed: true} }
	held       = func(k int, h uint8) Output { return Output{Key: k, Held: h} }
)

// TestModel: the model accepts the histories a correct pool can give and refuses the
// others, so that a store's check can fail.
func TestModel(t *testing.T) {
	cases := []struct {
		name    string
		initial []int
		ops     []porcupine.Operation
		ok      bool
	}{
		{"a lease, freed, leased again", []int{0}, []porcupine.Operation{
			op(0, 0, 1, acquire, leased(0, 1)),
			op(0, 2, 3, unblockKey(0, 1), free(0)),
			op(1, 4, 5, acquire, leased(0, 2)),
		}, true},
		{"one key leased twice", []int{0}, []porcupine.Operation{
			op(0, 0, 1, acquire, leased(0, 1)),
			op(1, 2, 3, acquire, leased(0, 2)),
		}, false},
		{"a fence that does not grow", []int{0, 1}, []porcupine.Operation{
			op(0, 0, 1, acquire, leased(0, 2)),
			op(1, 2, 3, acquire, leased(1, 1)),
		}, false},
		{"concurrent acquires may take their fences in either order", []int{0, 1}, []porcupine.Operation{
			op(0, 0, 3, acquire, leased(0, 2)),
			op(1, 1, 2, acquire, leased(1, 1)),
		}, true},
		{"NOT_FOUND while a key is free", []int{0, 1}, []porcupine.Operation{
			op(0, 0, 1, acquire, leased(0, 1)),
			op(1, 2, 3, acquire, code(keystore.ENOTFOUND)),
		}, false},
		{"an unblock with a stale token frees the key", []int{0}, []porcupine.Operation{
			op(0, 0, 1, acquire, leased(0, 1)),
			op(0, 2, 3, unblockKey(0, 1), free(0)),
			op(1, 4, 5, acquire, leased(0, 2)),
			op(0, 6, 7, unblockKey(0, 1), free(0)),
		}, false},
		{"NOT_BLOCKED from a leased key", []int{0}, []porcupine.Operation{
			op(0, 0, 1, acquire, leased(0, 1)),
			op(1, 2, 3, unblockKey(0, NoToken), code(keystore.ENOTBLOCKED)),
		}, false},
		{"a deleted key is found", []int{0}, []porcupine.Operation{
			op(0, 0, 1, Input{Kind: Delete, Key: 0}, Output{}),
			op(1, 2, 3, getKey(0), free(0)),
		}, false},
		{"an acquire of unknown outcome, then the key is freed for it", []int{0}, []porcupine.Operation{
			op(0, 0, -1, acquire, unknown),
			op(1, 2, 3, acquire, code(keystore.ENOTFOUND)),
			op(-1, 4, 5, Input{Kind: Release, Key: 0, Fence: 1}, Output{}),
			op(1, 6, 7, acquire, leased(0, 2)),
		}, true},
		{"an acquire of unknown outcome may not have run", []int{0}, []porcupine.Operation{
			op(0, 0, -1, acquire, unknown),
			op(1, 2, 3, acquire, leased(0, 1)),
		}, true},
		{"a release of a lease someone holds", []int{0}, []porcupine.Operation{
			op(0, 0, 1, acquire, leased(0, 1)),
			op(-1, 2, 3, Input{Kind: Release, Key: 0, Fence: 1}, Output{}),
		}, false},
		{"keys from a generate of unknown outcome", []int{}, []porcupine.Operation{
			op(0, 0, -1, Input{Kind: Generate, Count: 1}, unknown),
			op(1, 2, 3, acquire, leased(7, 1)),
			op(1, 4, 5, getKey(7), leased(7, 1)),
		}, true},
		{"an acquire of pool 1 given a key of pool 0", []int{0}, []porcupine.Operation{
			op(0, 0, 1, Input{Kind: Generate, Count: 1, Pool: 1}, Output{Keys: []int{1}}),
			op(1, 2, 3, acquireIn(1), leased(0, 1)),
		}, false},
		{"each pool counts its own fences", []int{0}, []porcupine.Operation{
			op(0, 0, 1, Input{Kind: Generate, Count: 1, Pool: 1}, Output{Keys: []int{1}}),
			op(1, 2, 3, acquireIn(0), leased(0, 1)),
			op(1, 4, 5, acquireIn(1), leased(1, 1)),
		}, true},
		{"NOT_FOUND in a pool while another pool has keys free", []int{0}, []porcupine.Operation{
			op(1, 2, 3, acquireIn(1), code(keystore.ENOTFOUND)),
			op(1, 4, 5, acquireIn(0), leased(0, 1)),
		}, true},
		{"a token of another pool's lease of the same fence frees a key", []int{0}, []porcupine.Operation{
			op(0, 0, 1, Input{Kind: Generate, Count: 1, Pool: 1}, Output{Keys: []int{1}}),
			op(1, 2, 3, acquireIn(0), leased(0, 1)),
			op(1, 4, 5, acquireIn(1), leased(1, 1)),
			op(1, 6, 7, Input{Kind: Unblock, Key: 1, Fence: 1, TokenKey: 0}, free(1)),
		}, false},
		{"a token of another pool's lease of the same fence is refused", []int{0}, []porcupine.Operation{
			op(0, 0, 1, Input{Kind: Generate, Count: 1, Pool: 1}, Output{Keys: []int{1}}),
			op(1, 2, 3, acquireIn(0), leased(0, 1)),
			op(1, 4, 5, acquireIn(1), leased(1, 1)),
			op(1, 6, 7, Input{Kind: Unblock, Key: 1, Fence: 1, TokenKey: 0}, code(keystore.ELEASEMISMATCH)),
		}, true},
		{"a key of a generate of unknown outcome into another pool", []int{}, []porcupine.Operation{
			op(0, 0, -1, Input{Kind: Generate, Count: 1, Pool: 1}, unknown),
			op(1, 2, 3, acquireIn(0), leased(7, 1)),
		}, false},
		{"a COOLING key is not handed out", []int{0}, []porcupine.Operation{
			op(0, 0, 1, acquire, leased(0, 1)),
			op(0, 2, 3, coolKey(0, 1), held(0, cooling)),
			op(1, 4, 5, acquire, leased(0, 2)),
		}, false},
		{"NOT_FOUND while the only key cools; restored, it is handed out", []int{0}, []porcupine.Operation{
			op(0, 0, 1, acquire, leased(0, 1)),
			op(0, 2, 3, coolKey(0, 1), held(0, cooling)),
			op(1, 4, 5, acquire, code(keystore.ENOTFOUND)),
			op(1, 6, 7, Input{Kind: Restore, Key: 0}, free(0)),
			op(1, 8, 9, acquire, leased(0, 2)),
		}, true},
		{"quarantined at the second failure in a row, not the first", []int{0}, []porcupine.Operation{
			op(0, 0, 1, acquire, leased(0, 1)),
			op(0, 2, 3, failKey(0, 1), free(0)),
			op(0, 4, 5, acquire, leased(0, 2)),
			op(0, 6, 7, failKey(0, 2), held(0, quarantined)),
			op(1, 8, 9, getKey(0), held(0, quarantined)),
		}, true},
		{"quarantined at the first failure", []int{0}, []porcupine.Operation{
			op(0, 0, 1, acquire, leased(0, 1)),
			op(0, 2, 3, failKey(0, 1), held(0, quarantined)),
		}, false},
		{"an unblock without a failure resets the count", []int{0}, []porcupine.Operation{
			op(0, 0, 1, acquire, leased(0, 1)),
			op(0, 2, 3, failKey(0, 1), free(0)),
			op(0, 4, 5, acquire, leased(0, 2)),
			op(0, 6, 7, unblockKey(0, 2), free(0)),
			op(0, 8, 9, acquire, leased(0, 3)),
			op(0, 10, 11, failKey(0, 3), held(0, quarantined)),
		}, false},
		{"restore of a free key is NOT_HELD_BACK", []int{0}, []porcupine.Operation{
			op(0, 0, 1, Input{Kind: Restore, Key: 0}, code(keystore.ENOTHELDBACK)),
			op(1, 2, 3, Input{Kind: Restore, Key: 0}, free(0)),
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			initial := make([]Seeded, len(c.initial))
			for i, k := range c.initial {
				initial[i] = Seeded{Key: k} // pool 0
			}
			got := porcupine.CheckOperations(Model(initial), c.ops)
			if got != c.ok {
				t.Fatalf("linearizable = %v, want %v", got, c.ok)
			}
		})
	}
}
