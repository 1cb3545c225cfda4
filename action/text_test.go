package action

import "testing"

func TestStripControl(t *testing.T) {
	for in, want := range map[string]string{
		"plain@example.com":       "plain@example.com",
		"evil\r\nX-Injected: yes": "evilX-Injected: yes",
		"tab\there\x1b[31m":       "tabhere[31m",
		"next\u0085line\u2028sep": "nextlinesep",
		"del\x7f":                 "del",
		"bad\xffutf8":             "bad\uFFFDutf8",
		"Jörg@example.com":        "Jörg@example.com",
		"":                        "",
	} {
		if got := StripControl(in); got != want {
			t.Errorf("StripControl(%q) = %q, want %q", in, got, want)
		}
	}
}
