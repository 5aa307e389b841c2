package keystore

import "math/bits"

// bitset is a set of small integers that finds its next member from any point in
// O(log64 n): level 0 has a bit per integer, and each level above a bit per word of
// the level below, set while that word is not zero. Four levels cover 16 million
// members; adding, removing and searching touch a word per level. It costs a bit
// and a fraction per integer of its range, and holds no pointers the GC follows.
type bitset struct {
	levels [][]uint64 // the top level has one word
}

// grow makes room for members below n.
func (b *bitset) grow(n int) {
	for l := 0; ; l++ {
		words := max(1, (n+63)/64)
		if l == len(b.levels) {
			// A new top: its first bit stands for the old top's only word.
			b.levels = append(b.levels, []uint64{0})
			if l > 0 && b.levels[l-1][0] != 0 {
				b.levels[l][0] = 1
			}
		}
		if k := len(b.levels[l]); k < words {
			b.levels[l] = append(b.levels[l], make([]uint64, words-k)...)
		}
		if words == 1 {
			return
		}
		n = words
	}
}

// add puts i, below the n of the last grow, in the set.
func (b *bitset) add(i int) {
	for _, level := range b.levels {
		w := i >> 6
		was := level[w]
		level[w] = was | 1<<(i&63)
		if was != 0 {
			return // the levels above know of the word already
		}
		i = w
	}
}

// remove takes i out of the set.
func (b *bitset) remove(i int) {
	for _, level := range b.levels {
		w := i >> 6
		level[w] &^= 1 << (i & 63)
		if level[w] != 0 {
			return
		}
		i = w
	}
}

// next returns the least member at or after i, or -1 if there is none.
func (b *bitset) next(i int) int {
	l := 0
	for ; ; l++ {
		if l == len(b.levels) || i>>6 >= len(b.levels[l]) {
			return -1
		}
		w := i >> 6
		if rest := b.levels[l][w] & (^uint64(0) << (i & 63)); rest != 0 {
			i = w<<6 | bits.TrailingZeros64(rest)
			break
		}
		i = w + 1 // none left in word w: the next non-zero word, from the level above
	}
	for ; l > 0; l-- {
		i = i<<6 | bits.TrailingZeros64(b.levels[l-1][i])
	}
	return i
}
