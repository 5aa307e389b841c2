package keystore

import "math/bits"

// bitsets is a family of sets of small integers, each of which finds its next member
// from any point in O(log64 n): level 0 has a bit per integer, and each level above a
// bit per word of the level below, set while that word is not zero. Four levels cover
// 16 million members; adding, removing and searching touch a word per level.
//
// The sets' words for the same 64 integers sit side by side (word w of set s is at
// w*sets+s in its level), so an integer that moves from one set to another, as a key
// moves between states, touches one cache line per level, not one per set and level.
// It costs a bit and a fraction per integer of its range and set, and holds no
// pointers the GC follows.
type bitsets struct {
	sets   int
	levels [][]uint64 // the top level has one word per set
}

func newBitsets(sets int) bitsets { return bitsets{sets: sets} }

// reset empties every set and lets their memory go.
func (b *bitsets) reset() { b.levels = nil }

// grow makes room for members below n.
func (b *bitsets) grow(n int) {
	for l := 0; ; l++ {
		words := max(1, (n+63)/64)
		if l == len(b.levels) {
			// A new top: its first bit stands for the old top's only word.
			top := make([]uint64, b.sets)
			for s := range top {
				if l > 0 && b.levels[l-1][s] != 0 { // word 0 of set s
					top[s] = 1
				}
			}
			b.levels = append(b.levels, top)
		}
		if k := len(b.levels[l]) / b.sets; k < words {
			b.levels[l] = append(b.levels[l], make([]uint64, (words-k)*b.sets)...)
		}
		if words == 1 {
			return
		}
		n = words
	}
}

// add puts i, below the n of the last grow, in set s.
func (b *bitsets) add(s, i int) {
	for _, level := range b.levels {
		w := i >> 6
		was := level[w*b.sets+s]
		level[w*b.sets+s] = was | 1<<(i&63)
		if was != 0 {
			return // the levels above know of the word already
		}
		i = w
	}
}

// remove takes i out of set s.
func (b *bitsets) remove(s, i int) {
	for _, level := range b.levels {
		w := i >> 6
		word := &level[w*b.sets+s]
		*word &^= 1 << (i & 63)
		if *word != 0 {
			return
		}
		i = w
	}
}

// next returns the least member of set s at or after i, or -1 if there is none.
func (b *bitsets) next(s, i int) int {
	l := 0
	for ; ; l++ {
		if l == len(b.levels) || i>>6 >= len(b.levels[l])/b.sets {
			return -1
		}
		w := i >> 6
		if rest := b.levels[l][w*b.sets+s] & (^uint64(0) << (i & 63)); rest != 0 {
			i = w<<6 | bits.TrailingZeros64(rest)
			break
		}
		i = w + 1 // none left in word w: the next non-zero word, from the level above
	}
	for ; l > 0; l-- {
		i = i<<6 | bits.TrailingZeros64(b.levels[l-1][i*b.sets+s])
	}
	return i
}
