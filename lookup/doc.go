// Package lookup asks DNS blocklists about client addresses and
// recipients, the way authbl-style lists for authenticated mail expect.
//
// An IP list (kind ip) is queried with the client address reversed under
// the list's zone: the four octets of an IPv4 address, or the 32 nibbles
// of the fully expanded IPv6 address (RFC 5782, section 2.4). An
// IPv4-mapped IPv6 address is an IPv4 client. A recipient list (kind
// recipient) is queried with the lowercase hex SHA-1 of the normalised
// address, as Abusix's authbl-rcpt expects.
//
// Every answer is classified into one of four results (see Result): only
// A records inside the list's match set are a listing; NXDOMAIN is clean;
// A records outside it, such as the 127.255.255.x error codes, are
// unexpected; and timeouts, SERVFAIL, REFUSED and malformed replies are
// errors, which never count as clean nor as listed.
//
// Answers come from a Resolver: the DNSClient (miekg/dns, several servers
// in turn, EDNS0, TCP after a truncated reply), usually behind a Cache that
// keeps answers for their TTL (RFC 2308 for negative ones) and merges
// identical queries in flight; or, for a list served from a local file in
// an rbldnsd format, a FileSource (package zonefile), which answers the
// same query names from memory, so that classification is one path.
//
// The self-test asks each list about a test point it must list and about
// 127.0.0.1, which no sane list lists. It runs at start and then in the
// background (Checker.RunHealth); a list found listing everything has its
// listings turned into errors until it recovers (List.Health).
//
// Zones may hold a secret (the Abusix API key is the first label of its
// zones). Errors never contain query names, and the names that reach debug
// logs go through List.Redact.
package lookup
