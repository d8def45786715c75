#!/bin/sh
# Prints, as shell assignments, what the package built here is tied to:
#   DOVECOT_ABI          the ABI string of the headers, as dovecot-core
#                        spells it in Provides (dovecot-abi-2.3.abiv19)
#   DOVECOT_SERIES       2.3 or 2.4: which conf.d snippet to install
#   DOVECOT_PKG_VERSION  the exact version of the dovecot-dev package
#                        (the same source as dovecot-core)
#   DOVECOT_VERSION_TAG  that version as a part of ours: no epoch, '-' as '.'
#                        (1:2.3.19.1+dfsg1-2.1+deb12u7 -> 2.3.19.1+dfsg1.2.1+deb12u7)
# Fails loudly when something does not agree, so that a package never
# claims an ABI it was not built against.
set -eu
config_h=${DOVECOT_CONFIG_H:-/usr/include/dovecot/config.h}
abi_file=/usr/share/dovecot/dovecot-abi

# #define DOVECOT_ABI_VERSION "2.3.ABIv19(2.3.19.1)"
abi=$(sed -n 's/^#define DOVECOT_ABI_VERSION "\([^"(]*\).*/\1/p' "$config_h" | tr 'A-Z' 'a-z')
case $abi in
[0-9]*.[0-9]*.abiv[0-9]*) ;;
*) echo "dovecot-vars.sh: no DOVECOT_ABI_VERSION in $config_h (got '$abi')" >&2; exit 1 ;;
esac
# Debian's dovecot-dev states the same string; both must agree
if [ -f "$abi_file" ] && [ "$(tr -d ' \n' <"$abi_file")" != "$abi" ]; then
	echo "dovecot-vars.sh: $config_h says $abi, $abi_file says $(cat "$abi_file")" >&2
	exit 1
fi
series=${abi%.abiv*}
case $series in
2.3 | 2.4) ;;
*) echo "dovecot-vars.sh: Dovecot $series is not supported (2.3 or 2.4)" >&2; exit 1 ;;
esac
version=$(dpkg-query -W -f='${Version}' dovecot-dev)
[ -n "$version" ] || { echo "dovecot-vars.sh: dovecot-dev is not installed" >&2; exit 1; }

echo "DOVECOT_ABI=$abi"
echo "DOVECOT_SERIES=$series"
echo "DOVECOT_PKG_VERSION=$version"
echo "DOVECOT_VERSION_TAG=$(printf '%s' "$version" | sed -e 's/^[0-9]*://' -e 's/-/./g')"
