/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The pop3_policy_* settings on Dovecot 2.3: strings in plugin { } (or
   userdb fields), parsed when the user is created. */

#include "lib.h"
#include "array.h"
#include "settings-parser.h"
#include "mail-user.h"
#include "mail-storage-service.h"
#include "mail-storage-settings.h"
#include "mailbox-list-private.h"
#include "pop3-policy-settings.h"

int pop3_policy_settings_read(struct mail_user *user,
			      struct pop3_policy_settings *set_r,
			      const char **error_r)
{
	const char *str;

	i_zero(set_r);
	str = mail_user_plugin_getenv(user, "pop3_policy_dele");
	if (str != NULL && str[0] != '\0' &&
	    pop3_policy_parse_dele(str, user->pool, &set_r->dele,
				   &set_r->dele_mailbox) < 0) {
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
	return pop3_policy_settings_read_login_delay(user,
		&set_r->login_delay_secs, error_r);
}

int pop3_policy_settings_read_login_delay(struct mail_user *user,
					  unsigned int *secs_r,
					  const char **error_r)
{
	const char *str, *error;

	*secs_r = 0;
	str = mail_user_plugin_getenv(user, "pop3_policy_login_delay");
	if (str == NULL || str[0] == '\0')
		return 0;
	if (pop3_policy_parse_login_delay(str, secs_r, &error) < 0) {
		*error_r = t_strdup_printf(
			"Invalid pop3_policy_login_delay=%s: %s", str, error);
		return -1;
	}
	return 0;
}

/* A setting of another settings root of this process (pop3's settings
   in a pop3 process), NULL where it doesn't exist. */
static const char *
pop3_policy_service_setting(struct mail_user *user, const char *key)
{
	struct setting_parser_context *parser;
	enum setting_type type;
	const void *value;

	if (user->_service_user == NULL)
		return NULL;
	parser = mail_storage_service_user_get_settings_parser(
		user->_service_user);
	if (parser == NULL)
		return NULL;
	value = settings_parse_get_value(parser, key, &type);
	if (value == NULL || type != SET_STR)
		return NULL;
	return *(const char *const *)value;
}

const char *pop3_policy_settings_pop3_deleted_flag(struct mail_user *user)
{
	return pop3_policy_service_setting(user, "pop3_deleted_flag");
}

static const char *
pop3_policy_login_inbox_location(struct mail_user *user)
{
	struct mail_namespace_settings *ns_set;

	if (array_is_created(&user->set->namespaces)) {
		array_foreach_elem(&user->set->namespaces, ns_set) {
			if (ns_set->inbox && !ns_set->disabled &&
			    ns_set->location[0] != '\0')
				return ns_set->location;
		}
	}
	return mail_user_set_get_storage_set(user)->mail_location;
}

int pop3_policy_settings_login_dir(struct mail_user *user,
				   const char **dir_r, const char **error_r)
{
	struct mailbox_list_settings list_set;
	const char *location, *p, *home, *error;

	location = pop3_policy_login_inbox_location(user);
	p = strchr(location, ':');
	if (p != NULL && strchr(t_strdup_until(location, p), '/') == NULL &&
	    mailbox_list_settings_parse(user, p + 1, &list_set, &error) == 0) {
		if (list_set.index_dir != NULL && list_set.index_dir[0] != '\0' &&
		    strcmp(list_set.index_dir, "MEMORY") != 0) {
			*dir_r = list_set.index_dir;
			return 0;
		}
		if (list_set.root_dir != NULL && list_set.root_dir[0] != '\0') {
			*dir_r = list_set.root_dir;
			return 0;
		}
	}
	if (mail_user_get_home(user, &home) > 0 && home[0] != '\0') {
		*dir_r = home;
		return 0;
	}
	*error_r = "no mail root and no home directory to keep the last "
		"login time in";
	return -1;
}
