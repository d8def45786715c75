#ifndef LMDB_SETTINGS_INFO_H
#define LMDB_SETTINGS_INFO_H

/* Dovecot 2.4 only: the lmdb_* settings as 2.4's settings system knows
   them. lmdb-settings-info.c is compiled into the storage plugin and into
   the settings module Dovecot's config process loads (which links only
   libdovecot: nothing here may need lib-storage). */

struct lmdb_storage_settings {
	pool_t pool;
	uoff_t lmdb_map_size_initial;
	uoff_t lmdb_map_size_max;
	uoff_t lmdb_map_reserve;
	unsigned int lmdb_max_readers;
	unsigned int lmdb_pending_grace;
	unsigned int lmdb_autopurge_interval;
	/* obsolete, accepted with a warning as on 2.3 */
	const char *lmdb_dead_grace;
};

extern const struct setting_parser_info lmdb_setting_parser_info;

#endif
