/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* lmdb_settings_read() (storage-lmdb/lmdb-settings-23.c) over any values of
   its plugin {} settings, one per input line in the order of
   setting_names[] (fuzz-settings-common.h). Checked against the rules
   the README documents: it succeeds iff every value set parses (sizes
   and times with Dovecot's parsers, lmdb_max_readers 8..65536) and the
   map settings fit (lmdb_map_size_max >= 1M, lmdb_map_reserve below it);
   then each field holds its value or its default, and a failure names
   the setting ("Invalid ..."). */

#include "lib.h"
#include "settings-parser.h"
#include "strnum.h"
#include "mail-storage-private.h"
#include "lmdb-settings.h"
#include "fuzz-common.h"
#include "fuzz-settings-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const setting_names[] = {
	"lmdb_map_size_initial",
	"lmdb_map_size_max",
	"lmdb_map_reserve",
	"lmdb_pending_grace",
	"lmdb_autopurge_interval",
	"lmdb_max_readers",
	"lmdb_dead_grace",
};

static bool is_set(const char *str)
{
	return str != NULL && str[0] != '\0';
}

/* FALSE if the value is set and doesn't parse */
static bool expect_size(const char *name, uint64_t def, uint64_t *value_r)
{
	const char *str = fuzz_setting(name), *error;
	uoff_t v;

	*value_r = def;
	if (!is_set(str))
		return TRUE;
	if (settings_get_size(str, &v, &error) < 0)
		return FALSE;
	*value_r = v;
	return TRUE;
}

static bool expect_time(const char *name, unsigned int def,
			unsigned int *value_r)
{
	const char *str = fuzz_setting(name), *error;

	*value_r = def;
	if (!is_set(str))
		return TRUE;
	return settings_get_time(str, value_r, &error) == 0;
}

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	fuzz_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mail_user *user = i_new(struct mail_user, 1);
	/* lmdb_settings_read() reads the storage's user's settings */
	struct mail_storage *storage = i_new(struct mail_storage, 1);
	struct lmdb_settings set;
	uint64_t initial, max, reserve, readers = 512;
	unsigned int pending, autopurge;
	const char *error = NULL, *str;
	bool ok;
	int ret;

	fuzz_settings_load(setting_names, N_ELEMENTS(setting_names),
			   data, size);
	user->pool = fuzz_pool_create();
	T_BEGIN {
		ok = expect_size("lmdb_map_size_initial",
				 LMDB_DEFAULT_MAP_SIZE_INITIAL, &initial);
		ok = expect_size("lmdb_map_size_max", LMDB_DEFAULT_MAP_SIZE_MAX,
				 &max) && ok;
		ok = expect_size("lmdb_map_reserve", LMDB_DEFAULT_MAP_RESERVE,
				 &reserve) && ok;
		ok = expect_time("lmdb_pending_grace",
				 LMDB_DEFAULT_PENDING_GRACE_SECS, &pending) && ok;
		ok = expect_time("lmdb_autopurge_interval",
				 LMDB_DEFAULT_AUTOPURGE_INTERVAL_SECS,
				 &autopurge) && ok;
		str = fuzz_setting("lmdb_max_readers");
		if (is_set(str) && (str_to_uint64(str, &readers) < 0 ||
				    readers < 8 || readers > 65536))
			ok = FALSE;
		if (ok && (max < 1024 * 1024 || reserve >= max))
			ok = FALSE;

		storage->user = user;
		ret = lmdb_settings_read(storage, &set, &error);
		if (ret < 0) {
			fuzz_assert(!ok);
			fuzz_assert(error != NULL &&
				    str_begins(error, "Invalid lmdb_"));
		} else {
			fuzz_assert(ret == 0);
			fuzz_assert(ok);
			fuzz_assert(set.env.map_size_initial ==
				    (initial == 0 ?
			     LMDB_DEFAULT_MAP_SIZE_INITIAL : initial));
			fuzz_assert(set.env.map_size_max == max);
			fuzz_assert(set.env.map_reserve == reserve);
			fuzz_assert(set.env.max_readers == readers);
			fuzz_assert(set.pending_grace_secs == pending);
			fuzz_assert(set.autopurge_interval_secs == autopurge);
			fuzz_assert(set.env.map_size_max >= 1024 * 1024);
			fuzz_assert(set.env.map_reserve < set.env.map_size_max);
		}
	} T_END;
	pool_unref(&user->pool);
	i_free(storage);
	i_free(user);
	fuzz_settings_free();
	return 0;
}
