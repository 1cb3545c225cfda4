package zonefile

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

func parseAddr6(s string) ([16]byte, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return [16]byte{}, fmt.Errorf("not IPv6: %q", s)
	}
	return a.As16(), nil
}

// answer renders values as a case's want string.
func answer(vals []Value) string {
	var s []string
	for _, v := range vals {
		s = append(s, v.A.String())
	}
	slices.Sort(s)
	return strings.Join(slices.Compact(s), ",")
}
