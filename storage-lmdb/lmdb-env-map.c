/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "strnum.h"
#include "lmdb-env-private.h"

#include <fcntl.h>
#include <unistd.h>
#include <sys/resource.h>

/* The map: its size within the process's address space (vsz_limit),
   growth, following another process's growth, and the space in use. */

static bool lmdb_env_process_vsz(uint64_t *vsz_r)
{
	char buf[128];
	ssize_t ret;
	int fd;

	fd = open("/proc/self/statm", O_RDONLY);
	if (fd == -1)
		return FALSE;
	ret = read(fd, buf, sizeof(buf) - 1);
	i_close_fd(&fd);
	if (ret <= 0)
		return FALSE;
	buf[ret] = '\0';
	if (str_parse_uint64(buf, vsz_r, NULL) < 0)
		return FALSE;
	*vsz_r *= (uint64_t)sysconf(_SC_PAGESIZE);
	return TRUE;
}

/* The largest map this process can hold: Dovecot limits every service's
   address space (vsz_limit, 256 MiB by default) and the map counts
   whole.  A map that doesn't fit fails in mmap(), after LMDB has
   already unmapped the old one, so stay below the limit instead. */
static uint64_t lmdb_env_map_limit(struct lmdb_env *env, uint64_t *vsz_limit_r)
{
	struct rlimit rl;
	uint64_t vsz, others;

	*vsz_limit_r = 0;
	if (getrlimit(RLIMIT_AS, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return UINT64_MAX;
	*vsz_limit_r = rl.rlim_cur;
	if (!lmdb_env_process_vsz(&vsz))
		return UINT64_MAX;
	others = (vsz > env->map_size ? vsz - env->map_size : 0) +
		LMDB_ENV_VSZ_MARGIN;
	if (rl.rlim_cur <= others)
		return 0;
	return (rl.rlim_cur - others) / env->page_size * env->page_size;
}

/* Map want_size bytes, or as much of it as fits, but at least min_size. */
static int lmdb_env_set_map_size(struct lmdb_env *env, uint64_t min_size,
				 uint64_t want_size, const char **error_r)
{
	uint64_t limit, vsz_limit, size = want_size;
	const char *error;
	int ret;

	limit = lmdb_env_map_limit(env, &vsz_limit);
	if (size > limit)
		size = limit;
	if (size < min_size || size == 0) {
		*error_r = t_strdup_printf(
			"%s needs an LMDB map of more than %"PRIu64" bytes, "
			"which this process's address space limit of %"PRIu64
			" bytes doesn't leave room for: "LMDB_ENV_VSZ_HINT,
			env->path,
			I_MAX(min_size, env->map_size), vsz_limit);
		return ENOMEM;
	}
	/* their snapshots would point into the old map */
	lmdb_env_drop_pins(env);
	if ((ret = mdb_env_set_mapsize(env->env, size)) == 0) {
		env->map_size = size;
		return 0;
	}
	*error_r = t_strdup_printf("mdb_env_set_mapsize(%s, %"PRIu64") "
				   "failed: %s", env->path, size,
				   mdb_strerror(ret));
	/* LMDB unmapped the file before the new map failed: it is unusable
	   until opened again */
	if (lmdb_env_reopen(env, &error) < 0) {
		*error_r = t_strdup_printf("%s; reopening failed: %s",
					   *error_r, error);
	}
	return ret;
}

int lmdb_env_grow(struct lmdb_env *env, const char **error_r)
{
	if (env->map_size >= env->set.map_size_max) {
		*error_r = t_strdup_printf(
			"LMDB map is full at its ceiling of %"PRIu64" bytes "
			"(plugin setting lmdb_map_size_max)",
			env->set.map_size_max);
		return MDB_MAP_FULL;
	}
	/* the map can only be resized with no transaction open in this
	   process; all of ours are short, so this holds unless a caller
	   broke the rule */
	if (env->open_txns > 0) {
		*error_r = "LMDB map is full and can't grow while a "
			"transaction is open";
		return MDB_MAP_FULL;
	}
	return lmdb_env_set_map_size(env, env->map_size + env->page_size,
		I_MIN(env->map_size * 2, env->set.map_size_max), error_r);
}

/* Another process grew the data beyond our map: follow it, as far as
   our address space allows. */
int lmdb_env_adopt_map_size(struct lmdb_env *env, const char **error_r)
{
	MDB_envinfo info;
	uint64_t needed, want;

	/* remapping would pull the map from under the open transaction */
	if (env->open_txns > 0) {
		*error_r = "LMDB map was grown by another process and can't "
			"follow while a transaction is open";
		return MDB_MAP_RESIZED;
	}
	(void)mdb_env_info(env->env, &info);
	/* me_last_pgno comes from the file's meta page: a damaged one must
	   not overflow the arithmetic (set_map_size refuses what doesn't
	   fit the address space) */
	if (info.me_last_pgno >= UINT64_MAX / env->page_size)
		needed = UINT64_MAX;
	else
		needed = ((uint64_t)info.me_last_pgno + 1) * env->page_size;
	want = I_MAX(env->map_size, env->page_size);
	while (want < needed && want <= UINT64_MAX / 2)
		want *= 2;
	want = I_MIN(I_MAX(want, needed), I_MAX(env->set.map_size_max, needed));
	return lmdb_env_set_map_size(env, needed, want, error_r);
}

int lmdb_env_get_used_bytes(struct lmdb_env *env, uint64_t *used_r,
			    uint64_t *free_pages_r, const char **error_r)
{
	MDB_envinfo info;
	MDB_txn *txn;
	MDB_cursor *cursor;
	MDB_val key, val;
	uint64_t free_pages = 0;
	int ret;

	if (lmdb_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	(void)mdb_env_info(env->env, &info);
	/* the freelist lives in DBI 0; each value is a page-number list
	   whose first word is its length */
	ret = mdb_cursor_open(txn, 0, &cursor);
	if (ret == 0) {
		while ((ret = mdb_cursor_get(cursor, &key, &val,
					     MDB_NEXT)) == 0) {
			size_t n;

			if (val.mv_size < sizeof(size_t))
				continue;
			memcpy(&n, val.mv_data, sizeof(n));
			free_pages += n;
		}
		mdb_cursor_close(cursor);
		if (ret == MDB_NOTFOUND)
			ret = 0;
	}
	lmdb_env_read_end(env, &txn);
	if (ret != 0) {
		*error_r = t_strdup_printf("reading LMDB freelist failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	if (free_pages > info.me_last_pgno + 1)
		free_pages = info.me_last_pgno + 1;
	*used_r = (info.me_last_pgno + 1 - free_pages) * env->page_size;
	*free_pages_r = free_pages;
	return 0;
}

int lmdb_env_get_headroom(struct lmdb_env *env, uint64_t *used_r,
			  uint64_t *limit_r)
{
	MDB_envinfo info;
	uint64_t vsz_limit;
	const char *error;

	if (lmdb_env_ensure_open(env, &error) < 0)
		return -1;
	(void)mdb_env_info(env->env, &info);
	*used_r = ((uint64_t)info.me_last_pgno + 1) * env->page_size;
	*limit_r = lmdb_env_map_limit(env, &vsz_limit);
	return 0;
}

int lmdb_env_check_space(struct lmdb_env *env, uint64_t size,
			 const char **error_r)
{
	MDB_envinfo info;
	uint64_t high_water, used, free_pages, limit;

	limit = env->set.map_size_max > env->set.map_reserve ?
		env->set.map_size_max - env->set.map_reserve : 0;
	if (lmdb_env_ensure_open(env, error_r) < 0)
		return -1;
	(void)mdb_env_info(env->env, &info);
	high_water = (info.me_last_pgno + 1) * (uint64_t)env->page_size;
	/* cheap case: even without reusing free pages it fits */
	if (high_water + size <= limit)
		return 1;
	if (lmdb_env_get_used_bytes(env, &used, &free_pages, error_r) < 0)
		return -1;
	if (used + size <= limit)
		return 1;
	*error_r = t_strdup_printf(
		"LMDB environment %s is full: %"PRIu64" bytes used, "
		"new mail of %"PRIu64" bytes would exceed lmdb_map_size_max "
		"(%"PRIu64") minus lmdb_map_reserve (%"PRIu64")",
		env->path, used, size, env->set.map_size_max,
		env->set.map_reserve);
	return 0;
}
