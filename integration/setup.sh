#!/usr/bin/env bash
# setup.sh installs what the integration tests need on Debian: Postfix,
# Cyrus SASL (saslpasswd2 and the sasldb plugin), rbldnsd and m4; and it
# unpacks Sendmail beside Postfix. It is idempotent and starts no service:
# the Debian packages' own start-up is kept out by a policy-rc.d for the
# time of the install, and the tests start private instances themselves.
#
# Sendmail's packages conflict with postfix, so they are not installed:
# sendmail-bin and sendmail-cf are downloaded and unpacked with dpkg -x
# into $AUTHBL_IT_SENDMAIL_DIR (default /opt/authbl-it/sendmail), and only
# the libraries sendmail-bin needs are installed. Remove that folder to
# unpack a newer version.
#
# Run as root. Without root it only reports what is missing.
set -euo pipefail

# redis-server: the Redis account store's tests (go test ./action/...
# and others) start private instances of it; with CI=true they fail
# without it.
packages=(postfix sasl2-bin libsasl2-modules rbldnsd m4 redis-server)
sendmail_dir=${AUTHBL_IT_SENDMAIL_DIR:-/opt/authbl-it/sendmail}

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
	echo "setup.sh: all present: ${packages[*]}"
else
	if [[ $(id -u) -ne 0 ]]; then
		echo "setup.sh: not root; missing packages: ${missing[*]}" >&2
		exit 1
	fi

	# Refresh the package lists only when one of the packages has no
	# install candidate.
	for p in "${missing[@]}"; do
		cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
		if [[ -z "$cand" || "$cand" == "(none)" ]]; then
			apt-get update
			break
		fi
	done

	echo "postfix postfix/main_mailer_type select No configuration" |
		debconf-set-selections

	# Keep the maintainer scripts from starting services (there is no
	# systemd here, and the tests run their own instances). Leave an
	# existing policy-rc.d alone.
	policy=/usr/sbin/policy-rc.d
	own_policy=false
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		own_policy=true
	fi
	trap 'if [[ $own_policy == true ]]; then rm -f "$policy"; fi' EXIT

	# A stale package list (404 on a superseded version) gets one
	# refresh and one more try.
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; then
		apt-get update
		DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
	fi
fi

# smtpd (user postfix) reads a sasldb of group sasl, such as /etc/sasldb2,
# only when postfix is in that group; without it AUTH fails with 454. The
# tests' own sasldb belongs to postfix, but keep the usual set-up whole.
if [[ $(id -u) -eq 0 ]] && getent group sasl >/dev/null && id postfix >/dev/null 2>&1; then
	if ! id -nG postfix | tr ' ' '\n' | grep -qx sasl; then
		usermod -a -G sasl postfix
	fi
fi

# Sendmail, unpacked beside Postfix.
sendmail_bin=$sendmail_dir/usr/libexec/sendmail/sendmail
sendmail_cf=$sendmail_dir/usr/share/sendmail/cf/m4/cf.m4
if [[ ! -x $sendmail_bin || ! -f $sendmail_cf ]]; then
	if [[ $(id -u) -ne 0 ]]; then
		echo "setup.sh: not root; Sendmail is not unpacked in $sendmail_dir" >&2
		exit 1
	fi
	if ! apt-cache show sendmail-bin >/dev/null 2>&1; then
		apt-get update
	fi

	# The shared libraries sendmail-bin links with that are not installed
	# yet (such as liblockfile1 and libwrap0): plain library packages,
	# which Postfix does not mind. Installed ones are left alone, not
	# upgraded.
	libs=()
	for lib in $(apt-cache depends --no-recommends --no-suggests --no-conflicts \
		--no-breaks --no-replaces --no-enhances sendmail-bin |
		awk '$1 == "Depends:" && $2 ~ /^lib/ {print $2}'); do
		status=$(dpkg-query -W -f='${Status}' "$lib" 2>/dev/null || true)
		[[ "$status" == "install ok installed" ]] || libs+=("$lib")
	done
	if [[ ${#libs[@]} -gt 0 ]]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y "${libs[@]}"
	fi

	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"; if [[ ${own_policy:-false} == true ]]; then rm -f "$policy"; fi' EXIT
	chmod 755 "$tmp"
	if id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
	(cd "$tmp" && apt-get download sendmail-bin sendmail-cf)

	rm -rf "$sendmail_dir.new"
	mkdir -p "$sendmail_dir.new"
	for deb in "$tmp"/*.deb; do
		dpkg -x "$deb" "$sendmail_dir.new"
	done
	dpkg-deb -f "$tmp"/sendmail-bin_*.deb Version >"$sendmail_dir.new/VERSION"
	rm -rf "$sendmail_dir"
	mv "$sendmail_dir.new" "$sendmail_dir"
fi
if ! missing_libs=$(ldd "$sendmail_bin" | grep 'not found'); then
	missing_libs=""
fi
if [[ -n $missing_libs ]]; then
	echo "setup.sh: $sendmail_bin lacks libraries:" >&2
	echo "$missing_libs" >&2
	exit 1
fi

echo "setup.sh: ready: postfix $(dpkg-query -W -f='${Version}' postfix)," \
	"rbldnsd $(dpkg-query -W -f='${Version}' rbldnsd)," \
	"sendmail $(cat "$sendmail_dir/VERSION" 2>/dev/null || echo '?') in $sendmail_dir"
