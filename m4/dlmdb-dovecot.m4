dnl dovecot-lmdb's checks of the Dovecot it is built against (after DC_DOVECOT).

dnl DLMDB_DOVECOT_VERSION: the version of Dovecot's headers (config.h's
dnl DOVECOT_VERSION_*), AM_CONDITIONAL DOVECOT_24 for what the Makefiles
dnl choose per version (settings, doveadm argument parsing), and
dnl dlmdb_dovecot_version for the messages.  Only 2.3 and 2.4 are known.
AC_DEFUN([DLMDB_DOVECOT_VERSION], [
	dlmdb_old_CPPFLAGS=$CPPFLAGS
	CPPFLAGS="$CPPFLAGS $LIBDOVECOT_INCLUDE"
	AC_MSG_CHECKING([the Dovecot version of the headers])
	AC_COMPUTE_INT([dlmdb_dovecot_major], [DOVECOT_VERSION_MAJOR],
		[#include "config.h"], [dlmdb_dovecot_major=])
	AC_COMPUTE_INT([dlmdb_dovecot_minor], [DOVECOT_VERSION_MINOR],
		[#include "config.h"], [dlmdb_dovecot_minor=])
	CPPFLAGS=$dlmdb_old_CPPFLAGS
	AS_IF([test -z "$dlmdb_dovecot_major" || test -z "$dlmdb_dovecot_minor"], [
		AC_MSG_RESULT([unknown])
		AC_MSG_ERROR([no DOVECOT_VERSION_MAJOR/MINOR in Dovecot's config.h (include flags: $LIBDOVECOT_INCLUDE)])
	])
	dlmdb_dovecot_version="$dlmdb_dovecot_major.$dlmdb_dovecot_minor"
	AC_MSG_RESULT([$dlmdb_dovecot_version])
	AS_CASE([$dlmdb_dovecot_version],
		[2.3|2.4], [],
		[AC_MSG_ERROR([Dovecot $dlmdb_dovecot_version is not supported: dovecot-lmdb builds against Dovecot 2.3 and 2.4])])
	AM_CONDITIONAL([DOVECOT_24], [test "$dlmdb_dovecot_version" = 2.4])
])

dnl DLMDB_DOVECOT_EXACT_HEADERS: refuse headers that are not those of the
dnl installed Dovecot.  Distribution security updates change struct layouts
dnl (struct index_mail_data, which this storage embeds) without changing
dnl Dovecot's ABI string, so Dovecot's own module check does not notice and
dnl a module built against other headers corrupts memory at run time.
dnl Two checks, each only where it can tell:
dnl  - Debian: the package owning dovecot-config (dovecot-dev) must have the
dnl    version of the installed dovecot-core (dpkg-query);
dnl  - any system: config.h's DOVECOT_VERSION must be what the installed
dnl    dovecot binary says (dovecot --version).
dnl --disable-dovecot-version-check skips both (e.g. to build for another
dnl machine).
AC_DEFUN([DLMDB_DOVECOT_EXACT_HEADERS], [
	AC_ARG_ENABLE([dovecot-version-check],
		AS_HELP_STRING([--disable-dovecot-version-check],
			[build even if the headers are not those of the installed Dovecot]),
		[], [enable_dovecot_version_check=yes])
	AS_IF([test "$enable_dovecot_version_check" != no], [
		AC_PATH_PROG([DPKG_QUERY], [dpkg-query], [])
		AC_MSG_CHECKING([whether the Dovecot headers are Debian's of the installed dovecot-core])
		dlmdb_dev_pkg=
		AS_IF([test -n "$DPKG_QUERY"], [
			dlmdb_dev_pkg=`$DPKG_QUERY -S "$abs_dovecotdir/dovecot-config" 2>/dev/null | sed -n 's/:.*//p' | head -n1`
		])
		AS_IF([test -z "$dlmdb_dev_pkg"], [
			AC_MSG_RESULT([not a Debian package])
		], [
			dlmdb_dev_ver=`$DPKG_QUERY -W -f='${Version}' "$dlmdb_dev_pkg" 2>/dev/null`
			dlmdb_core_ver=`$DPKG_QUERY -W -f='${db:Status-Status} ${Version}' dovecot-core 2>/dev/null | sed -n 's/^installed //p'`
			AS_IF([test -z "$dlmdb_core_ver"], [
				AC_MSG_RESULT([cannot tell: dovecot-core is not installed])
			], [test "$dlmdb_dev_ver" = "$dlmdb_core_ver"], [
				AC_MSG_RESULT([yes ($dlmdb_dev_ver)])
			], [
				AC_MSG_RESULT([no])
				AC_MSG_ERROR([$dlmdb_dev_pkg $dlmdb_dev_ver does not match the installed dovecot-core $dlmdb_core_ver.
Debian's updates change Dovecot's structures without changing its ABI
string: modules built against these headers would corrupt the memory of
the installed Dovecot.  Install the matching headers and configure again:
    apt-get install $dlmdb_dev_pkg=$dlmdb_core_ver
(or upgrade both: apt-get install dovecot-core $dlmdb_dev_pkg).
--disable-dovecot-version-check builds anyway (for another machine).])
			])
		])

		AC_PATH_PROG([DOVECOT_BINARY], [dovecot], [], [$PATH:/usr/sbin:/usr/local/sbin])
		AC_MSG_CHECKING([whether the Dovecot headers are those of the installed dovecot])
		dlmdb_hdr_ver=
		for dlmdb_inc in $LIBDOVECOT_INCLUDE; do
			dlmdb_inc=`echo "$dlmdb_inc" | sed -n 's/^-I//p'`
			AS_IF([test -n "$dlmdb_inc" && test -f "$dlmdb_inc/config.h"], [
				dlmdb_hdr_ver=`sed -n 's/^#define DOVECOT_VERSION "\(.*\)"$/\1/p' "$dlmdb_inc/config.h"`
				break
			])
		done
		AS_IF([test -z "$DOVECOT_BINARY" || test -z "$dlmdb_hdr_ver"], [
			AC_MSG_RESULT([cannot tell (no dovecot binary or no version in config.h)])
		], [
			dlmdb_bin_ver=`"$DOVECOT_BINARY" --version 2>/dev/null | sed 's/ .*//'`
			AS_IF([test "$dlmdb_bin_ver" = "$dlmdb_hdr_ver"], [
				AC_MSG_RESULT([yes ($dlmdb_hdr_ver)])
			], [
				AC_MSG_RESULT([no])
				AC_MSG_ERROR([the headers in $dlmdb_inc are of Dovecot $dlmdb_hdr_ver but $DOVECOT_BINARY is $dlmdb_bin_ver.
Build against the development files of the Dovecot you run (--with-dovecot=DIR
names the directory of its dovecot-config), or install that Dovecot's.
--disable-dovecot-version-check builds anyway (for another machine).])
			])
		])
	])
])
