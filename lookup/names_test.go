package lookup

import (
	"errors"
	"strings"
	"testing"
)

func TestParseClientAddr(t *testing.T) {
	tests := []struct {
		name, in, want string
		bad            bool
	}{
		{name: "ipv4", in: "192.0.2.7", want: "192.0.2.7"},
		{name: "ipv6", in: "2001:db8::1", want: "2001:db8::1"},
		{name: "ipv4-mapped ipv6", in: "::ffff:192.0.2.1", want: "192.0.2.1"},
		{name: "sendmail prefix", in: "IPv6:2001:db8::1", want: "2001:db8::1"},
		{name: "sendmail prefix lowercase", in: "ipv6:2001:db8::1", want: "2001:db8::1"},
		{name: "sendmail prefix, mapped", in: "IPv6:::ffff:192.0.2.1", want: "192.0.2.1"},
		{name: "brackets", in: "[192.0.2.7]", want: "192.0.2.7"},
		{name: "brackets and prefix", in: "[IPv6:2001:db8::2]", want: "2001:db8::2"},
		{name: "zone dropped", in: "fe80::1%eth0", want: "fe80::1"},
		{name: "spaces", in: " 192.0.2.7 ", want: "192.0.2.7"},
		{name: "empty", in: "", bad: true},
		{name: "hostname", in: "mail.example.com", bad: true},
		{name: "prefix only", in: "IPv6:", bad: true},
		{name: "garbage", in: "\x00\xff", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseClientAddr(tt.in)
			if tt.bad {
				if !errors.Is(err, ErrBadAddress) {
					t.Fatalf("ParseClientAddr(%q) = %v, %v; want ErrBadAddress", tt.in, got, err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("ParseClientAddr(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestIPQueryName(t *testing.T) {
	v6 := "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
	tests := []struct{ name, ip, zone, want string }{
		{"ipv4", "192.0.2.7", "authbl.example.test", "7.2.0.192.authbl.example.test."},
		{"zone with trailing dot", "192.0.2.7", "authbl.example.test.", "7.2.0.192.authbl.example.test."},
		{"ipv6 all 32 nibbles", "2001:db8::1", "z.test", v6 + ".z.test."},
		{"ipv6 full", "2001:db8:1234:5678:9abc:def0:1234:5678", "z.test",
			"8.7.6.5.4.3.2.1.0.f.e.d.c.b.a.9.8.7.6.5.4.3.2.1.8.b.d.0.1.0.0.2.z.test."},
		{"ipv4-mapped as ipv4", "::ffff:192.0.2.1", "z.test", "1.2.0.192.z.test."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip, err := ParseClientAddr(tt.ip)
			if err != nil {
				t.Fatal(err)
			}
			if got := IPQueryName(ip, tt.zone); got != tt.want {
				t.Fatalf("IPQueryName(%s) = %s; want %s", tt.ip, got, tt.want)
			}
		})
	}
}

func TestNormalizeRecipient(t *testing.T) {
	tests := []struct {
		name, in, want string
		bad            bool
	}{
		{name: "plain", in: "user@example.com", want: "user@example.com"},
		{name: "brackets and case", in: "<User@Example.COM>", want: "user@example.com"},
		{name: "esmtp parameters", in: "<user@example.com> NOTIFY=NEVER ORCPT=rfc822;x@y",
			want: "user@example.com"},
		{name: "parameters without brackets", in: "user@example.com NOTIFY=NEVER",
			want: "user@example.com"},
		{name: "plus tag kept", in: "User+Tag@example.com", want: "user+tag@example.com"},
		{name: "dots kept", in: "first.last@example.com", want: "first.last@example.com"},
		{name: "quoted local part with space", in: `<"John Doe"@Example.com>`,
			want: `"john doe"@example.com`},
		{name: "quoted local part with >", in: `<"a>b"@example.com>`, want: `"a>b"@example.com`},
		{name: "quoted, unbracketed", in: `"a b"@example.com SIZE=1`, want: `"a b"@example.com`},
		{name: "no domain", in: "<postmaster>", want: "postmaster"},
		{name: "empty", in: "", bad: true},
		{name: "null path", in: "<>", bad: true},
		{name: "unclosed bracket", in: "<user@example.com", bad: true},
		{name: "newline", in: "<a\nb@example.com>", bad: true},
		{name: "nul", in: "a\x00b@example.com", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeRecipient(tt.in)
			if tt.bad {
				if !errors.Is(err, ErrBadAddress) {
					t.Fatalf("NormalizeRecipient(%q) = %q, %v; want ErrBadAddress", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeRecipient(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestRecipientQueryName(t *testing.T) {
	got := RecipientQueryName("user@example.com", "authbl-rcpt.example.test")
	want := "63a710569261a24b3766275b7000ce8d7b32e2f7.authbl-rcpt.example.test."
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestErrorsClipLongInput(t *testing.T) {
	_, err := ParseClientAddr(strings.Repeat("x", 5000))
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("error not clipped: %d bytes", len(err.Error()))
	}
}

// The cases of shared/cases/CASES.md about query names and recipients.

func TestCase3IPv6QueryNameHas32Nibbles(t *testing.T) {
	ip, _ := ParseClientAddr("2001:db8::1")
	name := IPQueryName(ip, "authbl.example.test")
	labels := strings.Split(strings.TrimSuffix(name, ".authbl.example.test."), ".")
	if len(labels) != 32 {
		t.Fatalf("%d nibble labels in %s, want 32", len(labels), name)
	}
	want := "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.authbl.example.test."
	if name != want {
		t.Fatalf("got %s, want %s", name, want)
	}
}

func TestCase4MappedIPv4QueriedAsIPv4(t *testing.T) {
	ip, err := ParseClientAddr("::ffff:192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	if got := IPQueryName(ip, "zone.test"); got != "1.2.0.192.zone.test." {
		t.Fatalf("got %s", got)
	}
}

func TestCase5SendmailIPv6Prefix(t *testing.T) {
	ip, _ := ParseClientAddr("IPv6:2001:db8::1")
	want6 := "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zone.test."
	if got := IPQueryName(ip, "zone.test"); got != want6 {
		t.Fatalf("IPv6:2001:db8::1 -> %s, want %s", got, want6)
	}
	ip, _ = ParseClientAddr("IPv6:::ffff:192.0.2.1")
	if got := IPQueryName(ip, "zone.test"); got != "1.2.0.192.zone.test." {
		t.Fatalf("IPv6:::ffff:192.0.2.1 -> %s", got)
	}
}

func TestCase7RecipientHash(t *testing.T) {
	n, err := NormalizeRecipient("<User@Example.COM>")
	if err != nil {
		t.Fatal(err)
	}
	if n != "user@example.com" {
		t.Fatalf("normalised to %q", n)
	}
	if h := RecipientHash(n); h != "63a710569261a24b3766275b7000ce8d7b32e2f7" {
		t.Fatalf("sha1 %s", h)
	}
}

func TestNormalizeRecipientKeepsEightBitBytes(t *testing.T) {
	a, errA := NormalizeRecipient("J\xf6rg@example.com")
	b, errB := NormalizeRecipient("J\xfcrg@example.com")
	if errA != nil || errB != nil || a == b || a != "j\xf6rg@example.com" {
		t.Fatalf("%q %v, %q %v: distinct 8-bit addresses must stay distinct", a, errA, b, errB)
	}
}
