package keystore

import (
	"math/rand/v2"
	"testing"
)

// TestBitsets checks add, remove and next of three sets against plain slices of
// booleans, over ranges that grow through one, two, three and four levels while
// members are in; an integer moves between the sets as a key moves between states.
func TestBitsets(t *testing.T) {
	const sets = 3
	rng := rand.New(rand.NewPCG(1, 2))
	b := newBitsets(sets)
	var ref [sets][]bool
	nextRef := func(s, i int) int {
		for ; i < len(ref[s]); i++ {
			if ref[s][i] {
				return i
			}
		}
		return -1
	}
	for _, n := range []int{1, 63, 64, 65, 4095, 4097, 300_000} {
		b.grow(n)
		for s := range ref {
			ref[s] = append(ref[s], make([]bool, n-len(ref[s]))...)
		}
		for range 6000 {
			// Mostly near the ends and in sparse runs, where the levels matter.
			i := rng.IntN(n)
			if rng.IntN(4) == 0 {
				i = n - 1 - rng.IntN(min(n, 70))
			}
			s := rng.IntN(sets)
			switch rng.IntN(3) {
			case 0:
				b.remove(s, i)
				ref[s][i] = false
			case 1: // moves to set s
				for from := range sets {
					b.remove(from, i)
					ref[from][i] = false
				}
				fallthrough
			default:
				b.add(s, i)
				ref[s][i] = true
			}
			j, s := rng.IntN(n+70), rng.IntN(sets)
			if got, want := b.next(s, j), nextRef(s, j); got != want {
				t.Fatalf("range %d: next(%d, %d) = %d, want %d", n, s, j, got, want)
			}
		}
		// Every member of each set in order, from the start.
		for s := range sets {
			for i, want := 0, nextRef(s, 0); ; i, want = want+1, nextRef(s, want+1) {
				if got := b.next(s, i); got != want {
					t.Fatalf("range %d: walking set %d, next(%d) = %d, want %d", n, s, i, got, want)
				}
				if want < 0 {
					break
				}
			}
		}
	}
	// Emptied, no set has a member at all.
	for s := range sets {
		for i := range ref[s] {
			b.remove(s, i)
		}
		if got := b.next(s, 0); got != -1 {
			t.Fatalf("empty set %d: next(0) = %d", s, got)
		}
	}
}
