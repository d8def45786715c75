/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The lmdb_* settings on Dovecot 2.3: strings in plugin { } (or userdb
   fields), parsed here at every storage creation. */

#include "lib.h"
#include "settings-parser.h"
#include "mail-user.h"
#include "mail-storage-private.h"
#include "mailbox-list-private.h"
#include "lmdb-settings.h"

static bool lmdb_settings_dead_grace_warned = FALSE;

static int
lmdb_setting_size(struct mail_user *user, const char *name, uint64_t *value,
		  const char **error_r)
{
	const char *str = mail_user_plugin_getenv(user, name), *error;
	uoff_t bytes;

	if (str == NULL || str[0] == '\0')
		return 0;
	if (settings_get_size(str, &bytes, &error) < 0) {
		*error_r = t_strdup_printf("Invalid %s=%s: %s", name, str, error);
		return -1;
	}
	*value = bytes;
	return 0;
}

static int
lmdb_setting_time(struct mail_user *user, const char *name,
		  unsigned int *value, const char **error_r)
{
	const char *str = mail_user_plugin_getenv(user, name), *error;

	if (str == NULL || str[0] == '\0')
		return 0;
	if (settings_get_time(str, value, &error) < 0) {
		*error_r = t_strdup_printf("Invalid %s=%s: %s", name, str, error);
		return -1;
	}
	return 0;
}

int lmdb_settings_read(struct mail_storage *storage,
		       struct lmdb_settings *set_r, const char **error_r)
{
	struct mail_user *user = storage->user;
	const char *str;
	uint64_t max_readers = LMDB_DEFAULT_MAX_READERS;

	i_zero(set_r);
	set_r->env.map_size_initial = LMDB_DEFAULT_MAP_SIZE_INITIAL;
	set_r->env.map_size_max = LMDB_DEFAULT_MAP_SIZE_MAX;
	set_r->env.map_reserve = LMDB_DEFAULT_MAP_RESERVE;
	set_r->pending_grace_secs = LMDB_DEFAULT_PENDING_GRACE_SECS;
	set_r->autopurge_interval_secs = LMDB_DEFAULT_AUTOPURGE_INTERVAL_SECS;

	if (lmdb_setting_size(user, "lmdb_map_size_initial",
			      &set_r->env.map_size_initial, error_r) < 0 ||
	    lmdb_setting_size(user, "lmdb_map_size_max",
			      &set_r->env.map_size_max, error_r) < 0 ||
	    lmdb_setting_size(user, "lmdb_map_reserve",
			      &set_r->env.map_reserve, error_r) < 0 ||
	    lmdb_setting_time(user, "lmdb_pending_grace",
			      &set_r->pending_grace_secs, error_r) < 0 ||
	    lmdb_setting_time(user, "lmdb_autopurge_interval",
			      &set_r->autopurge_interval_secs, error_r) < 0)
		return -1;

	if (mail_user_plugin_getenv(user, "lmdb_dead_grace") != NULL &&
	    !lmdb_settings_dead_grace_warned) {
		/* no longer needed: a stream reads its own snapshot, so
		   expunged bodies are freed at once (docs/design.md) */
		i_warning("lmdb: The lmdb_dead_grace setting is obsolete and "
			  "ignored: expunged mail is freed at once");
		lmdb_settings_dead_grace_warned = TRUE;
	}
	str = mail_user_plugin_getenv(user, "lmdb_max_readers");
	if (str != NULL && str[0] != '\0' &&
	    (str_to_uint64(str, &max_readers) < 0 ||
	     max_readers < LMDB_MAX_READERS_MIN ||
	     max_readers > LMDB_MAX_READERS_MAX)) {
		*error_r = t_strdup_printf("Invalid lmdb_max_readers=%s: "
					   "must be %u..%u", str,
					   LMDB_MAX_READERS_MIN,
					   LMDB_MAX_READERS_MAX);
		return -1;
	}
	set_r->env.max_readers = max_readers;

	if (set_r->env.map_size_max < LMDB_MAP_SIZE_MAX_MIN) {
		*error_r = t_strdup_printf("Invalid lmdb_map_size_max=%"PRIu64
					   ": must be at least 1M",
					   set_r->env.map_size_max);
		return -1;
	}
	if (set_r->env.map_reserve >= set_r->env.map_size_max) {
		*error_r = t_strdup_printf("Invalid lmdb_map_reserve=%"PRIu64
					   ": must be below lmdb_map_size_max",
					   set_r->env.map_reserve);
		return -1;
	}
	if (set_r->env.map_size_initial == 0)
		set_r->env.map_size_initial = LMDB_DEFAULT_MAP_SIZE_INITIAL;
	return 0;
}

int lmdb_settings_check_location(struct mail_storage *storage,
				 struct mail_namespace *ns,
				 const char **error_r)
{
	const struct mailbox_list_settings *list_set = &ns->list->set;

	if (list_set->index_dir != NULL && list_set->index_dir[0] == '\0') {
		*error_r = "INDEX=MEMORY is not supported: the lmdb "
			"storage keeps its IMAP view in index files";
		return -1;
	}
	if (list_set->alt_dir != NULL) {
		*error_r = "ALT= is not supported: all mail of a user "
			"lives in one LMDB environment";
		return -1;
	}
	if (storage->set->mail_attachment_dir[0] != '\0') {
		*error_r = "mail_attachment_dir is not supported: "
			"bodies are stored once already, in LMDB";
		return -1;
	}
	return 0;
}

static void
lmdb_storage_get_list_settings(const struct mail_namespace *ns ATTR_UNUSED,
			       struct mailbox_list_settings *set)
{
	if (set->layout == NULL)
		set->layout = MAILBOX_LIST_NAME_FS;
	if (set->subscription_fname == NULL)
		set->subscription_fname = LMDB_SUBSCRIPTION_FILE_NAME;
	if (*set->maildir_name == '\0')
		set->maildir_name = LMDB_MAILDIR_NAME;
	if (*set->mailbox_dir_name == '\0')
		set->mailbox_dir_name = LMDB_MAILBOX_DIR_NAME;
}

void lmdb_settings_class_init(struct mail_storage *storage_class)
{
	storage_class->v.get_list_settings = lmdb_storage_get_list_settings;
}
