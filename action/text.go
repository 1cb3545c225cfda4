package action

import (
	"strings"
	"unicode"
)

// StripControl returns s without control characters (C0, DEL, C1, and
// the Unicode line and paragraph separators), with invalid UTF-8 replaced
// by U+FFFD. Logins and recipients come from SMTP clients: whatever hands
// them to something else (a quarantine reason, a report command's
// environment, a webhook) passes them through this first.
func StripControl(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}
