#!/bin/sh
# report.sh: an example report command for authbl-milter.
#
#   [notify]
#   command = ["/usr/local/bin/authbl-report.sh", "/var/log/authbl-milter/reports.log"]
#
# authbl-milter runs it, without a shell, once for each account's first
# detection. The facts are in environment variables only, never in the
# command line: AUTHBL_ACCOUNT, AUTHBL_CLIENT_IP, AUTHBL_CLIENT_NAME,
# AUTHBL_HELO, AUTHBL_SENDER, AUTHBL_SASL_METHOD, AUTHBL_REASON, AUTHBL_LIST,
# AUTHBL_RECIPIENT, AUTHBL_RECIPIENTS, AUTHBL_RECIPIENT_COUNT,
# AUTHBL_QUEUE_ID, AUTHBL_ACTION, AUTHBL_TIME, AUTHBL_HOST, and the original
# policy daemon's sasl_username, client_address, client_name, helo_name,
# sender, recipient, sasl_method and queue_id.
#
# Those values come from the SMTP client, that is from the attacker.
# authbl-milter strips control characters (so no newline), but anything
# else may be in them: $(...), backquotes, quotes, ';', '*', spaces, a
# leading '-'. So in a script like this one:
#   - quote every expansion: "$AUTHBL_ACCOUNT", never $AUTHBL_ACCOUNT;
#   - never eval them, nor hand them to sh -c, ssh or another command line;
#   - print them with printf '%s', not echo, which may take "-n" or "\c";
#   - put "--" before them where a command takes options.
#
# With a file as its argument it appends one line per detection to it;
# without, it sends the line to syslog. Its output and exit status end up
# in authbl-milter's log.
set -eu

line=$(printf 'time=%s host=%s account=%s client_ip=%s reason=%s list=%s recipient=%s recipients=%s queue_id=%s action=%s' \
	"${AUTHBL_TIME-}" "${AUTHBL_HOST-}" "${AUTHBL_ACCOUNT-}" "${AUTHBL_CLIENT_IP-}" \
	"${AUTHBL_REASON-}" "${AUTHBL_LIST-}" "${AUTHBL_RECIPIENT-}" \
	"${AUTHBL_RECIPIENT_COUNT-0}" "${AUTHBL_QUEUE_ID-}" "${AUTHBL_ACTION-}")

if [ $# -ge 1 ]; then
	printf '%s\n' "$line" >>"$1"
else
	logger -t authbl-report -- "$line"
fi

# Lock the account as well, for instance (a program of your own):
#   /usr/local/sbin/lock-mail-account -- "$AUTHBL_ACCOUNT"

printf 'reported %s\n' "${AUTHBL_ACCOUNT-}"
