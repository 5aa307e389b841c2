package keystore

import (
	"math/rand/v2"
	"testing"
)

// TestBitset checks add, remove and next against a plain slice of booleans, over
// ranges that grow through one, two, three and four levels while members are in.
func TestBitset(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var b bitset
	var ref []bool
	nextRef := func(i int) int {
		for ; i < len(ref); i++ {
			if ref[i] {
				return i
			}
		}
		return -1
	}
	for _, n := range []int{1, 63, 64, 65, 4095, 4097, 300_000} {
		b.grow(n)
		ref = append(ref, make([]bool, n-len(ref))...)
		for range 3000 {
			// Mostly near the ends and in sparse runs, where the levels matter.
			i := rng.IntN(n)
			if rng.IntN(4) == 0 {
				i = n - 1 - rng.IntN(min(n, 70))
			}
			if rng.IntN(3) == 0 {
				b.remove(i)
				ref[i] = false
			} else {
				b.add(i)
				ref[i] = true
			}
			j := rng.IntN(n + 70)
			if got, want := b.next(j), nextRef(j); got != want {
				t.Fatalf("range %d: next(%d) = %d, want %d", n, j, got, want)
			}
		}
		// Every member in order, from the start.
		for i, want := 0, nextRef(0); ; i, want = want+1, nextRef(want+1) {
			if got := b.next(i); got != want {
				t.Fatalf("range %d: walking, next(%d) = %d, want %d", n, i, got, want)
			}
			if want < 0 {
				break
			}
		}
	}
	// Emptied, it has no member at all.
	for i := range ref {
		b.remove(i)
	}
	if got := b.next(0); got != -1 {
		t.Fatalf("empty set: next(0) = %d", got)
	}
}
