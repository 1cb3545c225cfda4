package config

import (
	"os"
	"path/filepath"
	"strings"
)

// EnvAbusixKey is the environment variable Load reads the Abusix key from
// when the file sets neither api_key nor api_key_file.
const EnvAbusixKey = "AUTHBL_ABUSIX_API_KEY"

// Names of the lists that [abusix] adds.
const (
	AbusixListName     = "abusix-authbl"
	AbusixRcptListName = "abusix-authbl-rcpt"
)

// abusixKey finds the key: api_key, else api_key_file, else the
// environment. It returns "" when there is none or it is unusable; the
// problem, if any, goes to p without the key in it.
func (l loader) abusixKey(a Abusix, p *problems) string {
	var key, where, from string
	switch {
	case a.APIKey != "" && a.APIKeyFile != "":
		p.add("abusix.api_key_file", "set api_key or api_key_file, not both")
		return ""
	case a.APIKey != "":
		key, where = a.APIKey, "abusix.api_key"
	case a.APIKeyFile != "":
		where = "abusix.api_key_file"
		path := a.APIKeyFile
		if !filepath.IsAbs(path) && l.dir != "" {
			path = filepath.Join(l.dir, path)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			p.add(where, "%v", err) // names the file, not its contents
			return ""
		}
		key = string(data)
		if strings.TrimSpace(key) == "" {
			p.add(where, "%s is empty", path)
			return ""
		}
	default:
		key, where = l.getenv(EnvAbusixKey), "abusix.api_key"
		from = "the key in $" + EnvAbusixKey + " is "
		if strings.TrimSpace(key) == "" {
			return ""
		}
	}

	key = strings.TrimSpace(key)
	if !validLabel(key, false) {
		p.add(where, "%snot a valid key: want letters, digits and hyphens,"+
			" at most 63 characters (a DNS label)", from)
		return ""
	}
	return strings.ToLower(key)
}

// abusixLists returns the two Abusix lists for key, valid and complete.
// The codes are the ones Abusix documents: authbl answers
// 127.0.0.4 for a listing, and its test point 127.0.0.2 always answers so.
func abusixLists(key string) []List {
	return []List{
		{
			Name:          AbusixListName,
			Kind:          KindIP,
			Zone:          key + ".authbl.mail.abusix.zone",
			Match:         []string{"127.0.0.4"},
			TestPoint:     "127.0.0.2",
			TestExpect:    "127.0.0.4",
			Secret:        key,
			MatchPrefixes: mustPrefixes("127.0.0.4/32"),
		},
		{
			Name:          AbusixRcptListName,
			Kind:          KindRecipient,
			Zone:          key + ".authbl-rcpt.mail.abusix.zone",
			Secret:        key,
			MatchPrefixes: DefaultMatchPrefixes(),
		},
	}
}
