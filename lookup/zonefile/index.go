package zonefile

// prefixIndex narrows a binary search in a large sorted array to the
// entries that share the key's first 16 bits: start[k] is the first entry
// whose top 16 bits are k or more. It costs 256 KiB, so only arrays of at
// least indexMin entries get one; it saves most of the cache misses of a
// search in an array of millions.
type prefixIndex []uint32

const indexMin = 1 << 14

// newPrefixIndex builds the index of n sorted entries whose top 16 bits
// top(i) returns, or nil for a small array.
func newPrefixIndex(n int, top func(i int) uint16) prefixIndex {
	if n < indexMin {
		return nil
	}
	idx := make(prefixIndex, 1<<16+1)
	k := 0
	for i := range n {
		for t := int(top(i)); k <= t; k++ {
			idx[k] = uint32(i)
		}
	}
	for ; k <= 1<<16; k++ {
		idx[k] = uint32(n)
	}
	return idx
}

// bounds returns the part of the array to search for a key whose top 16
// bits are t: all of it when there is no index.
func (x prefixIndex) bounds(t uint16, n int) (lo, hi int) {
	if x == nil {
		return 0, n
	}
	return int(x[t]), int(x[int(t)+1])
}
