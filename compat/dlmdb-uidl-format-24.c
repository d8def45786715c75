/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* pop3_uidl_format on Dovecot 2.4: %{uid | hex(8)} and friends, expanded
   by the var-expand program of lib-var-expand. The variables are those
   of Dovecot's POP3 server (pop3_get_uid()). */

#include "lib.h"
#include "str.h"
#include "var-expand.h"
#include "dlmdb-compat.h"

static const char *const dlmdb_uidl_vars24[] = {
	[DLMDB_UIDL_VAR_UID] = "uid",
	[DLMDB_UIDL_VAR_UIDVALIDITY] = "uidvalidity",
	[DLMDB_UIDL_VAR_GUID] = "guid",
	[DLMDB_UIDL_VAR_MD5] = "md5",
	[DLMDB_UIDL_VAR_FILENAME] = "filename",
};

bool dlmdb_uidl_format_uses(const char *format, enum dlmdb_uidl_var var)
{
	struct var_expand_program *prog;
	const char *const *used, *error;
	bool found;

	if (var_expand_program_create(format, &prog, &error) < 0)
		return FALSE;
	used = var_expand_program_variables(prog);
	found = used != NULL && str_array_find(used, dlmdb_uidl_vars24[var]);
	var_expand_program_free(&prog);
	return found;
}

int dlmdb_uidl_format_expand(string_t *dest, const char *format,
			     const struct dlmdb_uidl_vars *vars,
			     const char **error_r)
{
	const struct var_expand_table table[] = {
		/* decimal: the format's hex(8) filter formats it */
		{ .key = "uidvalidity", .value = dec2str(vars->uid_validity) },
		{ .key = "uid", .value = dec2str(vars->uid) },
		{ .key = "md5", .value = vars->md5 },
		{ .key = "filename", .value = vars->filename },
		{ .key = "guid", .value = vars->guid },
		VAR_EXPAND_TABLE_END
	};
	const struct var_expand_params params = {
		.table = table,
	};

	return var_expand(dest, format, &params, error_r) < 0 ? -1 : 0;
}

const char *dlmdb_uidl_var_name(enum dlmdb_uidl_var var)
{
	return t_strdup_printf("%%{%s}", dlmdb_uidl_vars24[var]);
}
