/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "settings-parser.h"
#include "mail-user.h"
#include "lmdb-storage.h"

/* Defaults, documented in the README */
#define LMDB_DEFAULT_MAP_SIZE_INITIAL (16ULL * 1024 * 1024)
#define LMDB_DEFAULT_MAP_SIZE_MAX (32ULL * 1024 * 1024 * 1024)
#define LMDB_DEFAULT_MAP_RESERVE (16ULL * 1024 * 1024)
#define LMDB_DEFAULT_MAX_READERS 512
#define LMDB_DEFAULT_PENDING_GRACE_SECS (36 * 60 * 60)
#define LMDB_DEFAULT_AUTOPURGE_INTERVAL_SECS (24 * 60 * 60)

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

int lmdb_settings_read(struct mail_user *user, struct lmdb_settings *set_r,
		       const char **error_r)
{
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
	    (str_to_uint64(str, &max_readers) < 0 || max_readers < 8 ||
	     max_readers > 65536)) {
		*error_r = t_strdup_printf("Invalid lmdb_max_readers=%s: "
					   "must be 8..65536", str);
		return -1;
	}
	set_r->env.max_readers = max_readers;

	if (set_r->env.map_size_max < 1024*1024) {
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
