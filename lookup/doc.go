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
// Zones may hold a secret (the Abusix API key is the first label of its
// zones). Errors never contain query names, and the names that reach debug
// logs go through List.Redact.
package lookup
