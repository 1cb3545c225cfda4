#!/usr/bin/env bash
# setup.sh installs what the integration tests need on Debian: Postfix,
# Cyrus SASL (saslpasswd2 and the sasldb plugin) and rbldnsd. It is
# idempotent and starts no service: the Debian packages' own start-up is
# kept out by a policy-rc.d for the time of the install, and the tests
# start private instances themselves.
#
# Run as root. Without root it only reports what is missing.
set -euo pipefail

packages=(postfix sasl2-bin libsasl2-modules rbldnsd)

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

echo "setup.sh: ready: postfix $(dpkg-query -W -f='${Version}' postfix)," \
	"rbldnsd $(dpkg-query -W -f='${Version}' rbldnsd)"
