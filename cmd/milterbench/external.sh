#!/usr/bin/env bash
# Benchmark the real thing: authbl-milter serve, as its own process, with
# rbldnsd answering its lists, driven by milterbench through the milter
# protocol; the no-op go-milter baseline runs inside milterbench. All on
# loopback. Needs rbldnsd (Debian: apt-get install rbldnsd).
#
#   cmd/milterbench/external.sh [milterbench flags...]
#   cmd/milterbench/external.sh -n 20000 -c 8 -rounds 5
#   CACHE=0 cmd/milterbench/external.sh -unique -rcpts 10
#
# CACHE sets dns.cache_size (default 10000); SOA=0 leaves $SOA out of the
# zone files; KEEP=1 leaves the work directory (binaries, logs, zones) in
# place, so that perf can still read the binaries' symbols afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v rbldnsd >/dev/null || { echo "rbldnsd is not installed" >&2; exit 1; }
work=$(mktemp -d /tmp/milterbench-external.XXXXXX)
chmod 755 "$work" # rbldnsd reads its files as user rbldns
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ "${KEEP:-0}" = 1 ]; then
		echo "kept $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

go build -o "$work/authbl-milter" ./cmd/authbl-milter
go build -o "$work/milterbench" ./cmd/milterbench

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dns_port=$(free_port)
milter_port=$(free_port)
noop_port=$(free_port)

# The lists milterbench expects: 127.0.0.2 (its default -listed-ip)
# listed with 127.0.0.4, and one dropbox. Without $SOA, rbldnsd sends
# NXDOMAIN without an SOA record, which the cache keeps only for
# dns.cache_min_ttl: SOA=0 shows what that costs.
soa='$SOA 300 ns.bench.test. hostmaster.bench.test. 0 600 300 86400 300'
[ "${SOA:-1}" = 0 ] && soa='# no $SOA'
printf '%s\n:127.0.0.4:listed\n127.0.0.2\n' "$soa" >"$work/ip4.zone"
printf '%s\n:127.0.0.2:dropbox\n%s\n' "$soa" \
	"$(printf 'dropbox@evil.bench.test' | sha1sum | cut -d' ' -f1)" >"$work/rcpt.zone"
chmod 644 "$work"/*.zone

cat >"$work/config.toml" <<EOF
[milter]
listen = "inet:127.0.0.1:$milter_port"
[dns]
servers = ["127.0.0.1:$dns_port"]
cache_size = ${CACHE:-10000}
[accounts]
path = "$work/accounts.db"
[log]
level = "info"
format = "json"
[[list]]
name = "authbl"
kind = "ip"
zone = "authbl.bench.test"
match = ["127.0.0.4"]
test_point = "127.0.0.2"
test_expect = "127.0.0.4"
[[list]]
name = "authbl-rcpt"
kind = "recipient"
zone = "authbl-rcpt.bench.test"
EOF

rbldnsd -n -b "127.0.0.1/$dns_port" -w "$work" -t 60 \
	authbl.bench.test:ip4set:ip4.zone authbl-rcpt.bench.test:dnset:rcpt.zone \
	>"$work/rbldnsd.log" 2>&1 &
pids+=($!)
sleep 0.5

"$work/authbl-milter" serve -config "$work/config.toml" 2>"$work/milter.log" &
milter_pid=$!
pids+=("$milter_pid")
for _ in $(seq 50); do
	grep -q '"listening"' "$work/milter.log" 2>/dev/null && break
	sleep 0.1
done
grep -q '"listening"' "$work/milter.log" || { cat "$work/milter.log" >&2; exit 1; }

# The baseline runs in a process of its own too, so that both milters pay
# the same for being another process than the client.
"$work/milterbench" -noop "inet:127.0.0.1:$noop_port" >/dev/null &
noop_pid=$!
pids+=("$noop_pid")
sleep 0.3

echo "rbldnsd on 127.0.0.1:$dns_port, authbl-milter serve (pid $milter_pid) on" \
	"127.0.0.1:$milter_port, no-op milter (pid $noop_pid) on 127.0.0.1:$noop_port"
"$work/milterbench" -addr "inet:127.0.0.1:$milter_port" -pid "$milter_pid" \
	-baseline -baseline-addr "inet:127.0.0.1:$noop_port" -baseline-pid "$noop_pid" "$@"
