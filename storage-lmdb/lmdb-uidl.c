/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "var-expand.h"
#include "lmdb-records.h"
#include "lmdb-storage.h"
#include "lmdb-uidl.h"

int lmdb_uidl_check_format(const char *format, const char **error_r)
{
	const char *p;

	for (p = format; (p = strchr(p, '%')) != NULL; p++) {
		/* skip modifiers such as %08Xu */
		p++;
		while (*p != '\0' && strchr("0123456789XLU.-", *p) != NULL)
			p++;
		if (*p == 'm' || *p == 'f') {
			*error_r = t_strdup_printf(
				"pop3_uidl_format=%s uses %%%c, which the lmdb "
				"storage can't provide: use %%g (recommended) "
				"or %%u%%v", format, *p);
			return -1;
		}
		if (*p == '\0')
			break;
	}
	return 0;
}

void lmdb_uidl_assign(struct lmdb_mailbox *mbox, uint32_t uid_validity, pool_t pool,
		      ARRAY_TYPE(lmdb_save_mail) *mails)
{
	const char *format = mbox->box.storage->set->pop3_uidl_format;
	struct lmdb_save_mail *smail;
	string_t *str;
	const char *error;

	if (format == NULL || format[0] == '\0')
		return;
	str = t_str_new(64);
	array_foreach_modifiable(mails, smail) {
		if (smail->pop3_uidl != NULL && smail->pop3_uidl[0] != '\0')
			continue;
		const struct var_expand_table tab[] = {
			{ 'v', dec2str(uid_validity), "uidvalidity" },
			{ 'u', dec2str(smail->uid), "uid" },
			{ 'g', smail->guid, "guid" },
			{ '\0', NULL, NULL }
		};
		str_truncate(str, 0);
		if (var_expand(str, format, tab, &error) <= 0 ||
		    !lmdb_uidl_is_valid(str_c(str))) {
			/* leave it to the POP3 server's own formatting;
			   it will report the error to the client */
			continue;
		}
		smail->pop3_uidl = p_strdup(pool, str_c(str));
	}
}
