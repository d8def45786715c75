#!/bin/sh
# Regenerates the build system. dovecot.m4 comes from dovecot-dev.
set -e
cd "$(dirname "$0")"
mkdir -p m4
if [ -f /usr/share/aclocal/dovecot.m4 ]; then
	cp /usr/share/aclocal/dovecot.m4 m4/dovecot.m4
fi
autoreconf -fi
