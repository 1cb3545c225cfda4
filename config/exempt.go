package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// Exempt lists what is never taken as evidence against an account. Whole
// accounts are exempted by accounts.allow.
type Exempt struct {
	// ClientNetworks are client addresses (IPs or CIDRs) exempt from the
	// IP check only, such as webmail front ends that submit on behalf of
	// their users: their recipients are still checked.
	ClientNetworks []string `toml:"client_networks"`
	// Recipients are addresses, or "@domain" for every address of a
	// domain, never treated as dropboxes (never looked up).
	Recipients []string `toml:"recipients"`

	// Networks is ClientNetworks parsed; filled by Validate.
	Networks []netip.Prefix `toml:"-"`
}

func (e *Exempt) check(p *problems) {
	e.Networks = e.Networks[:0]
	for i, s := range e.ClientNetworks {
		key := fmt.Sprintf("exempt.client_networks[%d]", i)
		pfx, err := parsePrefix(s)
		if err != nil {
			p.add(key, "must be an IP address or CIDR, got %q", s)
			continue
		}
		e.Networks = append(e.Networks, pfx)
	}
	for i, r := range e.Recipients {
		key := fmt.Sprintf("exempt.recipients[%d]", i)
		r = strings.ToLower(strings.TrimSpace(r))
		at := strings.LastIndexByte(r, '@')
		if at < 0 || at == len(r)-1 || strings.ContainsAny(r, " \t<>") {
			p.add(key, `must be an address or "@domain", got %q`, e.Recipients[i])
			continue
		}
		e.Recipients[i] = r
	}
}

// parsePrefix parses a CIDR, or a bare IP as a single-address prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		return pfx.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// RecipientExempt reports whether a normalised (lowercase) address is
// exempt from the recipient check.
func (e *Exempt) RecipientExempt(addr string) bool {
	for _, r := range e.Recipients {
		if r == addr || (strings.HasPrefix(r, "@") && strings.HasSuffix(addr, r)) {
			return true
		}
	}
	return false
}

// ClientExempt reports whether ip is exempt from the IP check.
func (e *Exempt) ClientExempt(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, n := range e.Networks {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}
