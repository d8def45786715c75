/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* Dovecot 2.4's declaration of the pop3_policy_* settings. The config
   process (doveconf) checks them with it, so a bad value stops Dovecot
   at start with a line naming the setting; a bad userdb field fails the
   user's sessions with that line. Every process validates that its copy
   of these defines matches the config's, key by key: the plugins and the
   settings module compile this same file. */

#include "lib.h"
#include "settings-parser.h"
#include "pop3-policy-settings-info.h"

#undef DEF
#define DEF(type, name) \
	SETTING_DEFINE_STRUCT_##type(#name, name, \
				     struct pop3_policy_config_settings)

static const struct setting_define pop3_policy_setting_defines[] = {
	/* no %variables: a move:<mailbox> name may contain '%' */
	DEF(STR_NOVARS, pop3_policy_dele),
	DEF(UINT, pop3_policy_keep_days),
	DEF(BOOL, pop3_policy_quota_purge),
	DEF(STR_NOVARS, pop3_policy_login_delay),

	SETTING_DEFINE_LIST_END
};

static const struct pop3_policy_config_settings pop3_policy_default_settings = {
	.pop3_policy_dele = "expunge",
	.pop3_policy_keep_days = 0,
	.pop3_policy_quota_purge = FALSE,
	.pop3_policy_login_delay = "0",
};

static bool
pop3_policy_settings_check(void *_set, pool_t pool, const char **error_r)
{
	struct pop3_policy_config_settings *set = _set;
	const char *error;

	/* empty means the default, as on 2.3 */
	if (set->pop3_policy_dele[0] == '\0')
		set->pop3_policy_dele = "expunge";
	if (set->pop3_policy_login_delay[0] == '\0')
		set->pop3_policy_login_delay = "0";
	if (pop3_policy_parse_dele(set->pop3_policy_dele, pool,
				   &set->parsed_dele,
				   &set->parsed_dele_mailbox) < 0) {
		*error_r = t_strdup_printf("Invalid pop3_policy_dele=%s: "
			"expected expunge, keep, mark-read or move:<mailbox>",
			set->pop3_policy_dele);
		return FALSE;
	}
	if (pop3_policy_parse_login_delay(set->pop3_policy_login_delay,
					  &set->parsed_login_delay_secs,
					  &error) < 0) {
		*error_r = t_strdup_printf(
			"Invalid pop3_policy_login_delay=%s: %s",
			set->pop3_policy_login_delay, error);
		return FALSE;
	}
	return TRUE;
}

const struct setting_parser_info pop3_policy_setting_parser_info = {
	.name = "pop3_policy",

	.defines = pop3_policy_setting_defines,
	.defaults = &pop3_policy_default_settings,

	.struct_size = sizeof(struct pop3_policy_config_settings),
	.pool_offset1 = 1 + offsetof(struct pop3_policy_config_settings, pool),
	.check_func = pop3_policy_settings_check,
};
