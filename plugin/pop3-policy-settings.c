/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "settings-parser.h"
#include "unichar.h"
#include "mail-user.h"
#include "pop3-policy-settings.h"

static int
pop3_policy_parse_dele(const char *str, struct pop3_policy_settings *set,
		       pool_t pool)
{
	if (strcmp(str, "expunge") == 0)
		set->dele = POP3_POLICY_DELE_EXPUNGE;
	else if (strcmp(str, "keep") == 0)
		set->dele = POP3_POLICY_DELE_KEEP;
	else if (strcmp(str, "mark-read") == 0)
		set->dele = POP3_POLICY_DELE_MARK_READ;
	else if (str_begins(str, "move:") && str[5] != '\0' &&
		 uni_utf8_str_is_valid(str + 5)) {
		set->dele = POP3_POLICY_DELE_MOVE;
		set->dele_mailbox = p_strdup(pool, str + 5);
	} else {
		return -1;
	}
	return 0;
}

int pop3_policy_settings_read(struct mail_user *user,
			      struct pop3_policy_settings *set_r,
			      const char **error_r)
{
	const char *str;

	i_zero(set_r);
	str = mail_user_plugin_getenv(user, "pop3_policy_dele");
	if (str != NULL && str[0] != '\0' &&
	    pop3_policy_parse_dele(str, set_r, user->pool) < 0) {
		*error_r = t_strdup_printf("Invalid pop3_policy_dele=%s: "
			"expected expunge, keep, mark-read or move:<mailbox>",
			str);
		return -1;
	}
	str = mail_user_plugin_getenv(user, "pop3_policy_keep_days");
	if (str != NULL && str[0] != '\0' &&
	    str_to_uint(str, &set_r->keep_days) < 0) {
		*error_r = t_strdup_printf("Invalid pop3_policy_keep_days=%s: "
					   "expected a number of days", str);
		return -1;
	}
	str = mail_user_plugin_getenv(user, "pop3_policy_quota_purge");
	if (str != NULL && str[0] != '\0') {
		if (strcmp(str, "yes") == 0)
			set_r->quota_purge = TRUE;
		else if (strcmp(str, "no") != 0) {
			*error_r = t_strdup_printf(
				"Invalid pop3_policy_quota_purge=%s: "
				"expected yes or no", str);
			return -1;
		}
	}
	str = mail_user_plugin_getenv(user, "pop3_policy_login_delay");
	if (str != NULL && str[0] != '\0') {
		const char *error;

		/* a bare number is seconds, as the setting is documented */
		if (str_to_uint(str, &set_r->login_delay_secs) < 0 &&
		    settings_get_time(str, &set_r->login_delay_secs,
				      &error) < 0) {
			*error_r = t_strdup_printf(
				"Invalid pop3_policy_login_delay=%s: %s",
				str, error);
			return -1;
		}
	}
	return 0;
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
