package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestExempt(t *testing.T) {
	c := Default()
	c.Lists = []List{{Name: "x", Kind: KindIP, Zone: "x.test"}}
	c.Exempt = Exempt{
		ClientNetworks: []string{"192.0.2.0/24", "2001:db8::1", "::ffff:198.51.100.7"},
		Recipients:     []string{"Postmaster@Example.COM", "@Example.org"},
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		ip   string
		want bool
	}{
		{"192.0.2.200", true}, {"192.0.3.1", false}, {"2001:db8::1", true},
		{"2001:db8::2", false}, {"198.51.100.7", true}, {"::ffff:192.0.2.9", true},
	} {
		if got := c.Exempt.ClientExempt(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("ClientExempt(%s) = %v", tt.ip, got)
		}
	}
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"postmaster@example.com", true}, {"other@example.com", false},
		{"anyone@example.org", true}, {"anyone@sub.example.org", false},
		{"anyone@badexample.org", false},
	} {
		if got := c.Exempt.RecipientExempt(tt.addr); got != tt.want {
			t.Errorf("RecipientExempt(%s) = %v", tt.addr, got)
		}
	}
}

func TestExemptErrorsNameTheKey(t *testing.T) {
	c := Default()
	c.Lists = []List{{Name: "x", Kind: KindIP, Zone: "x.test"}}
	c.Exempt = Exempt{
		ClientNetworks: []string{"192.0.2.0/33", "webmail"},
		Recipients:     []string{"nobody", "<a@b.c>"},
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, k := range []string{"exempt.client_networks[0]", "exempt.client_networks[1]",
		"exempt.recipients[0]", "exempt.recipients[1]"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error lacks %s:\n%v", k, err)
		}
	}
}
