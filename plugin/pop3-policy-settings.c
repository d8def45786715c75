/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The syntax of the pop3_policy_* values, the same on Dovecot 2.3 and 2.4.
   On 2.4 the config process checks values with these too (through
   pop3-policy-settings-info.c), so this file needs libdovecot only. */

#include "lib.h"
#include "unichar.h"
#include "dlmdb-compat.h"
#include "pop3-policy-settings.h"

int pop3_policy_parse_dele(const char *str, pool_t pool,
			   enum pop3_policy_dele *dele_r,
			   const char **mailbox_r)
{
	*mailbox_r = NULL;
	if (strcmp(str, "expunge") == 0)
		*dele_r = POP3_POLICY_DELE_EXPUNGE;
	else if (strcmp(str, "keep") == 0)
		*dele_r = POP3_POLICY_DELE_KEEP;
	else if (strcmp(str, "mark-read") == 0)
		*dele_r = POP3_POLICY_DELE_MARK_READ;
	else if (dlmdb_str_begins(str, "move:") && str[5] != '\0' &&
		 uni_utf8_str_is_valid(str + 5)) {
		*dele_r = POP3_POLICY_DELE_MOVE;
		*mailbox_r = p_strdup(pool, str + 5);
	} else {
		return -1;
	}
	return 0;
}

int pop3_policy_parse_login_delay(const char *str, unsigned int *secs_r,
				  const char **error_r)
{
	/* a bare number is seconds, as the setting is documented (Dovecot's
	   own time settings want a unit) */
	if (str_to_uint(str, secs_r) == 0)
		return 0;
	return dlmdb_parse_time(str, secs_r, error_r);
}

const char *pop3_policy_dele_to_str(const struct pop3_policy_settings *set)
{
	switch (set->dele) {
	case POP3_POLICY_DELE_EXPUNGE:
		return "expunge";
	case POP3_POLICY_DELE_KEEP:
		return "keep";
	case POP3_POLICY_DELE_MARK_READ:
		return "mark-read";
	case POP3_POLICY_DELE_MOVE:
		return t_strconcat("move:", set->dele_mailbox, NULL);
	}
	i_unreached();
}
