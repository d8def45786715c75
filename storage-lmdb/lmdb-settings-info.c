/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* Dovecot 2.4's declaration of the lmdb_* settings. The config process
   (doveconf) checks them with it, so a bad value stops Dovecot at start
   with a line naming the setting; the storage reads them with
   settings_get() (lmdb-settings-24.c). Every mail process validates
   that its copy of these defines matches the config's, key by key:
   the storage plugin and the settings module compile this same file. */

#include "lib.h"
#include "settings-parser.h"
#include "lmdb-settings.h"
#include "lmdb-settings-info.h"

#undef DEF
#define DEF(type, name) \
	SETTING_DEFINE_STRUCT_##type(#name, name, struct lmdb_storage_settings)

static const struct setting_define lmdb_setting_defines[] = {
	/* "lmdb { }" holds settings for the lmdb driver only, as
	   "sdbox { }" does; the storage looks its settings up with it */
	{ .type = SET_FILTER_NAME, .key = "lmdb" },
	DEF(SIZE, lmdb_map_size_initial),
	DEF(SIZE, lmdb_map_size_max),
	DEF(SIZE, lmdb_map_reserve),
	DEF(UINT, lmdb_max_readers),
	DEF(TIME, lmdb_pending_grace),
	DEF(TIME, lmdb_autopurge_interval),
	DEF(STR_HIDDEN, lmdb_dead_grace),

	SETTING_DEFINE_LIST_END
};

static const struct lmdb_storage_settings lmdb_default_settings = {
	.lmdb_map_size_initial = LMDB_DEFAULT_MAP_SIZE_INITIAL,
	.lmdb_map_size_max = LMDB_DEFAULT_MAP_SIZE_MAX,
	.lmdb_map_reserve = LMDB_DEFAULT_MAP_RESERVE,
	.lmdb_max_readers = LMDB_DEFAULT_MAX_READERS,
	.lmdb_pending_grace = LMDB_DEFAULT_PENDING_GRACE_SECS,
	.lmdb_autopurge_interval = LMDB_DEFAULT_AUTOPURGE_INTERVAL_SECS,
	.lmdb_dead_grace = "",
};

/* What 2.3's get_list_settings() gave a location without these: the
   same directory names, so an environment moves between the versions
   as it is (mailboxes/<name>/lmdb-Mails/). */
static const struct setting_keyvalue lmdb_default_settings_keyvalue[] = {
	{ "lmdb/mail_path", "%{home}/lmdb" },
	{ "lmdb/mailbox_root_directory_name", LMDB_MAILBOX_DIR_NAME },
	{ "lmdb/mailbox_directory_name", LMDB_MAILDIR_NAME },
	{ "lmdb/mailbox_subscriptions_filename", LMDB_SUBSCRIPTION_FILE_NAME },
	{ NULL, NULL }
};

static bool
lmdb_settings_check(void *_set, pool_t pool ATTR_UNUSED, const char **error_r)
{
	struct lmdb_storage_settings *set = _set;

	if (set->lmdb_max_readers < LMDB_MAX_READERS_MIN ||
	    set->lmdb_max_readers > LMDB_MAX_READERS_MAX) {
		*error_r = t_strdup_printf("Invalid lmdb_max_readers=%u: "
					   "must be %u..%u",
					   set->lmdb_max_readers,
					   LMDB_MAX_READERS_MIN,
					   LMDB_MAX_READERS_MAX);
		return FALSE;
	}
	if (set->lmdb_map_size_max < LMDB_MAP_SIZE_MAX_MIN) {
		*error_r = t_strdup_printf("Invalid lmdb_map_size_max=%"
					   PRIuUOFF_T": must be at least 1M",
					   set->lmdb_map_size_max);
		return FALSE;
	}
	if (set->lmdb_map_reserve >= set->lmdb_map_size_max) {
		*error_r = t_strdup_printf("Invalid lmdb_map_reserve=%"
					   PRIuUOFF_T": must be below "
					   "lmdb_map_size_max",
					   set->lmdb_map_reserve);
		return FALSE;
	}
	/* 0 means the default, as on 2.3 */
	if (set->lmdb_map_size_initial == 0)
		set->lmdb_map_size_initial = LMDB_DEFAULT_MAP_SIZE_INITIAL;
	return TRUE;
}

const struct setting_parser_info lmdb_setting_parser_info = {
	.name = "lmdb",

	.defines = lmdb_setting_defines,
	.defaults = &lmdb_default_settings,
	.default_settings = lmdb_default_settings_keyvalue,

	.struct_size = sizeof(struct lmdb_storage_settings),
	.pool_offset1 = 1 + offsetof(struct lmdb_storage_settings, pool),
	.check_func = lmdb_settings_check,
};
