package lookup

import (
	"errors"
	"net/netip"
	"testing"
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestClassify(t *testing.T) {
	authbl := &List{Name: "authbl", Match: []netip.Prefix{netip.MustParsePrefix("127.0.0.4/32")}}
	def := &List{Name: "default"}
	wide := &List{Name: "wide", Match: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	timeout := errors.New("timeout")

	tests := []struct {
		name  string
		list  *List
		reply Reply
		err   error
		want  Result
	}{
		{"listed code", authbl, Reply{Rcode: RcodeSuccess, A: addrs("127.0.0.4")}, nil, Listed},
		{"undocumented code", authbl, Reply{Rcode: RcodeSuccess, A: addrs("127.0.0.2")}, nil, Unexpected},
		{"combined answer with one match", authbl,
			Reply{Rcode: RcodeSuccess, A: addrs("127.0.0.3", "127.0.0.4")}, nil, Listed},
		{"nxdomain", authbl, Reply{Rcode: RcodeNameError}, nil, Clean},
		{"no A records", authbl, Reply{Rcode: RcodeSuccess}, nil, Clean},
		{"servfail", authbl, Reply{Rcode: 2}, nil, Error},
		{"refused", authbl, Reply{Rcode: 5}, nil, Error},
		{"formerr", authbl, Reply{Rcode: 1}, nil, Error},
		{"transport error", authbl, Reply{}, timeout, Error},
		{"default match, 127.0.0.2", def, Reply{Rcode: RcodeSuccess, A: addrs("127.0.0.2")}, nil, Listed},
		{"default match, error code .254", def,
			Reply{Rcode: RcodeSuccess, A: addrs("127.255.255.254")}, nil, Unexpected},
		{"default match, error code .252", def,
			Reply{Rcode: RcodeSuccess, A: addrs("127.255.255.252")}, nil, Unexpected},
		{"default match, outside 127/8", def,
			Reply{Rcode: RcodeSuccess, A: addrs("192.0.2.1")}, nil, Unexpected},
		{"explicit 127/8 still skips error codes", wide,
			Reply{Rcode: RcodeSuccess, A: addrs("127.255.255.255")}, nil, Unexpected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.list.Classify(tt.reply, tt.err)
			if got != tt.want {
				t.Fatalf("Classify = %v (%v), want %v", got, err, tt.want)
			}
			if (got == Error) != (err != nil) {
				t.Fatalf("Classify = %v with error %v", got, err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	l := &List{Name: "abusix", Zone: "s3cr3tkey.authbl.mail.abusix.zone"}
	l.SetSecret("s3cr3tkey")
	name, _ := l.QueryName("192.0.2.1")
	if got := l.Redact(name); got != "1.2.0.192.REDACTED.authbl.mail.abusix.zone." {
		t.Fatalf("Redact = %s", got)
	}
}
