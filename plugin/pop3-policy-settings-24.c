/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The pop3_policy_* settings on Dovecot 2.4: declared in
   pop3-policy-settings-info.c (checked there, also by the config
   process), read here with settings_get() through the user's event
   (global settings, protocol filters and userdb fields apply). */

#include "lib.h"
#include "array.h"
#include "settings.h"
#include "settings-parser.h"
#include "mail-user.h"
#include "mail-storage.h"
#include "mail-storage-settings.h"
#include "pop3-settings.h"
#include "pop3-policy-settings-info.h"

#include <dlfcn.h>

static int
pop3_policy_settings_get(struct mail_user *user,
			 const struct pop3_policy_config_settings **set_r,
			 const char **error_r)
{
	const char *error;

	if (settings_get(user->event, &pop3_policy_setting_parser_info, 0,
			 set_r, &error) < 0) {
		*error_r = t_strdup(error);
		return -1;
	}
	return 0;
}

int pop3_policy_settings_read(struct mail_user *user,
			      struct pop3_policy_settings *set_r,
			      const char **error_r)
{
	const struct pop3_policy_config_settings *set;

	i_zero(set_r);
	if (pop3_policy_settings_get(user, &set, error_r) < 0)
		return -1;
	set_r->dele = set->parsed_dele;
	set_r->dele_mailbox = p_strdup(user->pool, set->parsed_dele_mailbox);
	set_r->keep_days = set->pop3_policy_keep_days;
	set_r->quota_purge = set->pop3_policy_quota_purge;
	set_r->login_delay_secs = set->parsed_login_delay_secs;
	/* everything is copied: nothing keeps the settings pool */
	settings_free(set);
	return 0;
}

int pop3_policy_settings_read_login_delay(struct mail_user *user,
					  unsigned int *secs_r,
					  const char **error_r)
{
	const struct pop3_policy_config_settings *set;

	*secs_r = 0;
	if (pop3_policy_settings_get(user, &set, error_r) < 0)
		return -1;
	*secs_r = set->parsed_login_delay_secs;
	settings_free(set);
	return 0;
}

const char *pop3_policy_settings_pop3_deleted_flag(struct mail_user *user)
{
	const struct setting_parser_info *pop3_info;
	const struct pop3_settings *set;
	const char *flag, *error;

	/* Only the pop3 binary has its settings info: looked up at run
	   time, so that the plugin also loads into imap, lmtp, doveadm. */
	pop3_info = dlsym(RTLD_DEFAULT, "pop3_setting_parser_info");
	if (pop3_info == NULL)
		return NULL;
	if (settings_get(user->event, pop3_info, 0, &set, &error) < 0) {
		e_error(user->event, "pop3_policy: %s", error);
		return NULL;
	}
	flag = p_strdup(user->pool, set->pop3_deleted_flag);
	settings_free(set);
	return flag;
}

/* The storage settings as mail_storage_create_list() will find them:
   namespace filter (ns_name, NULL for none), then the driver's filter
   (for "lmdb/mail_path" and the like). */
static int
pop3_policy_storage_settings(struct mail_user *user, const char *ns_name,
			     struct event **event_r,
			     const struct mail_storage_settings **set_r,
			     const char **error_r)
{
	const struct mail_storage_settings *mail_set;
	struct event *event;
	const char *error;

	event = event_create(user->event);
	if (ns_name != NULL) {
		event_add_str(event, SETTINGS_EVENT_NAMESPACE_NAME, ns_name);
		settings_event_add_list_filter_name(event,
			SETTINGS_EVENT_NAMESPACE_NAME, ns_name);
	}
	if (settings_get(event, &mail_storage_setting_parser_info, 0,
			 &mail_set, &error) < 0) {
		event_unref(&event);
		*error_r = t_strdup(error);
		return -1;
	}
	if (mail_set->mail_driver[0] != '\0') {
		settings_event_add_filter_name(event, mail_set->mail_driver);
		settings_free(mail_set);
		if (settings_get(event, &mail_storage_setting_parser_info, 0,
				 &mail_set, &error) < 0) {
			event_unref(&event);
			*error_r = t_strdup(error);
			return -1;
		}
	}
	*event_r = event;
	*set_r = mail_set;
	return 0;
}

/* The name of the INBOX namespace, NULL if none is configured (Dovecot
   then makes one of the global settings). */
static int
pop3_policy_inbox_ns_name(struct mail_user *user, const char **name_r,
			  const char **error_r)
{
	const struct mail_namespace_settings *ns_set;
	const char *name, *error;
	bool inbox;

	*name_r = NULL;
	if (!array_is_created(&user->set->namespaces))
		return 0;
	array_foreach_elem(&user->set->namespaces, name) {
		if (settings_get_filter(user->event,
					SETTINGS_EVENT_NAMESPACE_NAME, name,
					&mail_namespace_setting_parser_info,
					0, &ns_set, &error) < 0) {
			*error_r = t_strdup(error);
			return -1;
		}
		inbox = ns_set->inbox && !ns_set->disabled;
		settings_free(ns_set);
		if (inbox) {
			*name_r = name;
			break;
		}
	}
	return 0;
}

int pop3_policy_settings_login_dir(struct mail_user *user,
				   const char **dir_r, const char **error_r)
{
	const struct mail_storage_settings *mail_set;
	struct event *event;
	const char *ns_name, *home;

	if (pop3_policy_inbox_ns_name(user, &ns_name, error_r) < 0 ||
	    pop3_policy_storage_settings(user, ns_name, &event, &mail_set,
					 error_r) < 0)
		return -1;
	*dir_r = NULL;
	if (mail_set->mail_index_path[0] != '\0' &&
	    strcmp(mail_set->mail_index_path, MAIL_INDEX_PATH_MEMORY) != 0)
		*dir_r = t_strdup(mail_set->mail_index_path);
	else if (mail_set->mail_path[0] != '\0')
		*dir_r = t_strdup(mail_set->mail_path);
	settings_free(mail_set);
	event_unref(&event);
	if (*dir_r != NULL)
		return 0;

	if (mail_user_get_home(user, &home) > 0 && home[0] != '\0') {
		*dir_r = home;
		return 0;
	}
	*error_r = "no mail root and no home directory to keep the last "
		"login time in";
	return -1;
}
