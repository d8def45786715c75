#ifndef POP3_POLICY_SETTINGS_INFO_H
#define POP3_POLICY_SETTINGS_INFO_H

#include "pop3-policy-settings.h"

/* Dovecot 2.4 only: the pop3_policy_* settings as 2.4's settings system
   knows them. pop3-policy-settings-info.c is compiled into the plugins
   and into the settings module Dovecot's config process loads (which
   links only libdovecot). */

struct pop3_policy_config_settings {
	pool_t pool;
	const char *pop3_policy_dele;
	unsigned int pop3_policy_keep_days;
	bool pop3_policy_quota_purge;
	/* a string: a bare number of seconds is valid, as on 2.3 */
	const char *pop3_policy_login_delay;

	/* filled by the check function */
	enum pop3_policy_dele parsed_dele;
	const char *parsed_dele_mailbox;
	unsigned int parsed_login_delay_secs;
};

extern const struct setting_parser_info pop3_policy_setting_parser_info;

#endif
