/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* pop3_uidl_format on Dovecot 2.3: one-letter variables (%u, %08Xu) or
   long ones (%{uid}), expanded by var_expand() with a table. */

#include "lib.h"
#include "str.h"
#include "var-expand.h"
#include "dlmdb-compat.h"

static const struct {
	char key;
	const char *long_key;
} dlmdb_uidl_vars23[] = {
	[DLMDB_UIDL_VAR_UID] = { 'u', "uid" },
	[DLMDB_UIDL_VAR_UIDVALIDITY] = { 'v', "uidvalidity" },
	[DLMDB_UIDL_VAR_GUID] = { 'g', "guid" },
	[DLMDB_UIDL_VAR_MD5] = { 'm', "md5" },
	[DLMDB_UIDL_VAR_FILENAME] = { 'f', "filename" },
};

bool dlmdb_uidl_format_uses(const char *format, enum dlmdb_uidl_var var)
{
	return var_has_key(format, dlmdb_uidl_vars23[var].key,
			   dlmdb_uidl_vars23[var].long_key);
}

int dlmdb_uidl_format_expand(string_t *dest, const char *format,
			     const struct dlmdb_uidl_vars *vars,
			     const char **error_r)
{
	const struct var_expand_table tab[] = {
		{ 'v', dec2str(vars->uid_validity), "uidvalidity" },
		{ 'u', dec2str(vars->uid), "uid" },
		{ 'm', vars->md5, "md5" },
		{ 'f', vars->filename, "filename" },
		{ 'g', vars->guid, "guid" },
		{ '\0', NULL, NULL }
	};

	/* 0 is an unknown variable: the POP3 server would show it as is,
	   but a UIDL must not depend on what this version leaves out */
	if (var_expand(dest, format, tab, error_r) <= 0)
		return -1;
	return 0;
}

const char *dlmdb_uidl_var_name(enum dlmdb_uidl_var var)
{
	return t_strdup_printf("%%%c", dlmdb_uidl_vars23[var].key);
}
