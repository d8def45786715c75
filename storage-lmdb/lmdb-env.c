/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "llist.h"
#include "ioloop.h"
#include "strnum.h"
#include "lmdb-records.h"
#include "lmdb-env.h"
#include "lmdb-schema.h"

#include "file-lock.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/statvfs.h>

#define LMDB_ENV_MAX_DBS 12
#define LMDB_ENV_WRITE_MAX_RETRIES 64
#define LMDB_ENV_SWAP_LOCK_NAME "dovecot-lmdb.lock"
#define LMDB_ENV_COMPACT_DIR_NAME "compact.tmp"
/* an open waits this long for a running compaction's file swap */
#define LMDB_ENV_OPEN_LOCK_TIMEOUT_SECS 30
/* address space left for everything but the map: heap growth, streams,
   a second user's map in doveadm */
#define LMDB_ENV_VSZ_MARGIN (32 * 1024 * 1024ULL)
/* what an admin does when the map doesn't fit in the address space */
#define LMDB_ENV_VSZ_HINT "raise vsz_limit of the mail services " \
	"(default_vsz_limit) above the size of the user's mail plus 256M"

/* filesystems LMDB's locking and mmap coherency don't work on */
#define LMDB_FS_NFS 0x6969
#define LMDB_FS_SMB 0x517B
#define LMDB_FS_CIFS 0xFF534D42
#define LMDB_FS_SMB2 0xFE534D42

static ARRAY(struct lmdb_env *) lmdb_envs = ARRAY_INIT;
/* The last environment whose last reference went, still open (see
   lmdb_env_unref()); at most one, so that it never takes address space
   another user's environment needs. */
static struct lmdb_env *lmdb_env_idle = NULL;

const char *lmdb_env_strerror(int ret)
{
	return mdb_strerror(ret);
}

bool lmdb_env_error_is_space(int ret)
{
	return ret == MDB_MAP_FULL || ret == ENOSPC || ret == EDQUOT;
}

static int lmdb_env_check_fs(const char *path, const char **error_r)
{
	struct statfs fs;

	if (statfs(path, &fs) < 0) {
		*error_r = t_strdup_printf("statfs(%s) failed: %m", path);
		return -1;
	}
	switch ((unsigned long)fs.f_type) {
	case LMDB_FS_NFS:
		*error_r = t_strdup_printf("%s is on NFS: LMDB environments "
			"need a local filesystem", path);
		return -1;
	case LMDB_FS_SMB:
	case LMDB_FS_CIFS:
	case LMDB_FS_SMB2:
		*error_r = t_strdup_printf("%s is on CIFS/SMB: LMDB "
			"environments need a local filesystem", path);
		return -1;
	default:
		return 0;
	}
}

static int
lmdb_env_init_schema(MDB_txn *txn, void *context, const char **error_r)
{
	return lmdb_schema_init(context, txn, error_r);
}

int lmdb_env_record_get(struct lmdb_env *env, MDB_txn *txn,
			struct lmdb_env_record *rec_r, const char **error_r)
{
	MDB_val key, val;
	int ret;

	key.mv_data = (void *)LMDB_ENV_RECORD_KEY;
	key.mv_size = LMDB_ENV_RECORD_KEY_SIZE;
	if ((ret = mdb_get(txn, env->dbi_meta, &key, &val)) != 0) {
		*error_r = t_strdup_printf("mdb_get(env) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	if (!lmdb_env_record_decode(val.mv_data, val.mv_size, rec_r, error_r)) {
		*error_r = t_strdup_printf("corrupted env record: %s", *error_r);
		return MDB_CORRUPTED;
	}
	return 0;
}

int lmdb_env_record_put(struct lmdb_env *env, MDB_txn *txn,
			const struct lmdb_env_record *rec,
			const char **error_r)
{
	MDB_val key, val;
	buffer_t *buf = t_buffer_create(128);
	int ret;

	if (!lmdb_env_record_encode(buf, rec, error_r))
		return EINVAL;
	key.mv_data = (void *)LMDB_ENV_RECORD_KEY;
	key.mv_size = LMDB_ENV_RECORD_KEY_SIZE;
	val.mv_data = (void *)buf->data;
	val.mv_size = buf->used;
	if ((ret = mdb_put(txn, env->dbi_meta, &key, &val, 0)) != 0) {
		*error_r = t_strdup_printf("mdb_put(env) failed: %s",
					   mdb_strerror(ret));
	}
	return ret;
}

/* Open the DBIs in a read transaction. Returns 0, or -1 if the schema
   needs creating or upgrading (a write transaction). */
static int lmdb_env_open_dbis_readonly(struct lmdb_env *env)
{
	struct lmdb_env_record rec;
	MDB_txn *txn;
	const char *error;
	int ret;

	if (mdb_txn_begin(env->env, NULL, MDB_RDONLY, &txn) != 0)
		return -1;
	if (mdb_dbi_open(txn, "meta", 0, &env->dbi_meta) != 0 ||
	    mdb_dbi_open(txn, "bodies", 0, &env->dbi_bodies) != 0 ||
	    mdb_dbi_open(txn, "chunks", 0, &env->dbi_chunks) != 0 ||
	    mdb_dbi_open(txn, "links", 0, &env->dbi_links) != 0 ||
	    mdb_dbi_open(txn, "mailboxes", 0, &env->dbi_mailboxes) != 0 ||
	    mdb_dbi_open(txn, "gc", 0, &env->dbi_gc) != 0 ||
	    mdb_dbi_open(txn, "quarantine", 0, &env->dbi_quarantine) != 0 ||
	    mdb_dbi_open(txn, "uidls", 0, &env->dbi_uidls) != 0 ||
	    lmdb_env_record_get(env, txn, &rec, &error) != 0 ||
	    rec.schema_version != LMDB_SCHEMA_VERSION) {
		mdb_txn_abort(txn);
		return -1;
	}
	/* committing a read transaction keeps its DBI handles */
	ret = mdb_txn_commit(txn);
	return ret == 0 ? 0 : -1;
}

static uint64_t lmdb_counter_add(uint64_t value, int64_t delta)
{
	if (delta < 0 && value < (uint64_t)-delta)
		return 0;
	return value + delta;
}

int lmdb_env_add_counters(struct lmdb_env *env, MDB_txn *txn,
			  int64_t links, int64_t link_vsize_bytes,
			  int64_t bodies, int64_t body_bytes,
			  const char **error_r)
{
	struct lmdb_env_record rec;
	int ret;

	if ((ret = lmdb_env_record_get(env, txn, &rec, error_r)) != 0)
		return ret;
	rec.links = lmdb_counter_add(rec.links, links);
	rec.link_vsize_bytes = lmdb_counter_add(rec.link_vsize_bytes,
						link_vsize_bytes);
	rec.bodies = lmdb_counter_add(rec.bodies, bodies);
	rec.body_bytes = lmdb_counter_add(rec.body_bytes, body_bytes);
	return lmdb_env_record_put(env, txn, &rec, error_r);
}

static int lmdb_env_open_mdb(struct lmdb_env *env, const char **error_r);
static int lmdb_env_reopen(struct lmdb_env *env, const char **error_r);

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

static int lmdb_env_grow(struct lmdb_env *env, const char **error_r)
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
static int lmdb_env_adopt_map_size(struct lmdb_env *env, const char **error_r)
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


/* A failed map resize closes the environment when it can't open it
   again; the next use tries once more. */
static int lmdb_env_ensure_open(struct lmdb_env *env, const char **error_r)
{
	if (env->env != NULL)
		return 0;
	return lmdb_env_open_mdb(env, error_r);
}

/* The idle read transaction and the pinned ones belong to the MDB_env
   they were made in. */
static void lmdb_env_close_mdb(struct lmdb_env *env)
{
	lmdb_env_drop_pins(env);
	if (env->idle_read_txn != NULL) {
		mdb_txn_abort(env->idle_read_txn);
		env->idle_read_txn = NULL;
	}
	env->checked_txnid = 0;
	mdb_env_close(env->env);
	env->env = NULL;
}

/* Returns TRUE if the environment this transaction sees was retired by
   a compaction after we opened it. */
static bool
lmdb_env_txn_is_stale(struct lmdb_env *env, MDB_txn *txn, bool rdonly)
{
	struct lmdb_env_record rec;
	const char *error;
	size_t txnid = mdb_txn_id(txn);

	/* unknown while the environment is still being opened */
	if (env->generation == 0)
		return FALSE;
	/* retiring the files commits the new generation into them, so a
	   snapshot we already checked can't have become stale */
	if (rdonly && txnid == env->checked_txnid)
		return FALSE;
	if (lmdb_env_record_get(env, txn, &rec, &error) != 0)
		return FALSE;
	if (rec.generation != env->generation)
		return TRUE;
	if (rdonly)
		env->checked_txnid = txnid;
	return FALSE;
}

static int lmdb_env_txn_start(struct lmdb_env *env, unsigned int flags,
			      MDB_txn **txn_r)
{
	MDB_txn *txn = env->idle_read_txn;

	/* renewing keeps the reader slot: with MDB_NOTLS a new read
	   transaction would search the reader table under its mutex */
	if ((flags & MDB_RDONLY) != 0 && txn != NULL) {
		env->idle_read_txn = NULL;
		if (mdb_txn_renew(txn) == 0) {
			*txn_r = txn;
			return 0;
		}
		mdb_txn_abort(txn);
	}
	return mdb_txn_begin(env->env, NULL, flags, txn_r);
}

static int lmdb_env_txn_begin(struct lmdb_env *env, unsigned int flags,
			      MDB_txn **txn_r, const char **error_r)
{
	unsigned int i;
	int ret;

	if (lmdb_env_ensure_open(env, error_r) < 0)
		return EIO;
	for (i = 0;; i++) {
		ret = lmdb_env_txn_start(env, flags, txn_r);
		if (ret == MDB_MAP_RESIZED) {
			if ((ret = lmdb_env_adopt_map_size(env, error_r)) != 0)
				return ret;
			ret = mdb_txn_begin(env->env, NULL, flags, txn_r);
		}
		if (ret != 0) {
			*error_r = t_strdup_printf("mdb_txn_begin(%s) failed: %s",
						   env->path, mdb_strerror(ret));
			return ret;
		}
		if (i > 0 || !lmdb_env_txn_is_stale(env, *txn_r,
							 (flags & MDB_RDONLY) != 0))
			break;
		mdb_txn_abort(*txn_r);
		if (lmdb_env_reopen(env, error_r) < 0)
			return EAGAIN;
	}
	env->open_txns++;
	return 0;
}

static void lmdb_env_txn_abort(struct lmdb_env *env, MDB_txn **txn)
{
	i_assert(env->open_txns > 0);
	mdb_txn_abort(*txn);
	*txn = NULL;
	env->open_txns--;
}

/* Is the filesystem under the environment (nearly) out of space? */
static bool lmdb_env_fs_is_full(struct lmdb_env *env)
{
	struct statvfs fs;

	if (statvfs(env->path, &fs) < 0)
		return FALSE;
	/* a commit writes at least a few pages: below a megabyte, a failed
	   write is most likely the full disk */
	return (uint64_t)fs.f_bavail * fs.f_frsize < 1024 * 1024;
}

/* LMDB 0.9 has no per-transaction sync flag (a MDB_NOSYNC passed to
   mdb_txn_begin is ignored), and MDB_NOSYNC would let the meta page
   reach the disk before the pages it points to. An unsynced commit is
   therefore MDB_NOMETASYNC for just this commit: its pages are flushed,
   its meta page is not; a crash can undo this commit but never corrupts
   the file, and the next commit's or lmdb_env_sync()'s flush of the
   file makes it durable. That saves one synchronous write per commit. */
static int lmdb_env_commit(struct lmdb_env *env, MDB_txn *txn, bool sync)
{
	int ret;

	if (sync || env->set.no_sync)
		return mdb_txn_commit(txn);
	(void)mdb_env_set_flags(env->env, MDB_NOMETASYNC, 1);
	ret = mdb_txn_commit(txn);
	(void)mdb_env_set_flags(env->env, MDB_NOMETASYNC, 0);
	return ret;
}

int lmdb_env_write(struct lmdb_env *env, lmdb_write_func_t *func,
		   void *context, bool sync, const char **error_r)
{
	MDB_txn *txn;
	unsigned int i;
	int ret;

	for (i = 0;; i++) {
		ret = lmdb_env_txn_begin(env, 0, &txn, error_r);
		if (ret != 0)
			return ret;
		T_BEGIN {
			ret = func(txn, context, error_r);
		} T_END_PASS_STR_IF(ret != 0, error_r);
		if (ret == 0) {
			env->open_txns--;
			ret = lmdb_env_commit(env, txn, sync);
			if (ret == 0)
				return 0;
			if (ret == EIO && lmdb_env_fs_is_full(env)) {
				/* LMDB reports a short write as EIO */
				ret = ENOSPC;
			}
			*error_r = t_strdup_printf("mdb_txn_commit(%s) failed: %s",
						   env->path, mdb_strerror(ret));
		} else {
			lmdb_env_txn_abort(env, &txn);
		}
		if (ret != MDB_MAP_FULL || i >= LMDB_ENV_WRITE_MAX_RETRIES)
			return ret;
		if ((ret = lmdb_env_grow(env, error_r)) != 0)
			return ret;
	}
}

int lmdb_env_cursor_put_current(MDB_cursor *cursor, const void *key_data,
				size_t key_size, const buffer_t *value)
{
	MDB_val key, val;

	/* our own key, never the one LMDB returned: a record of another
	   size is deleted and re-added, which moves what that points to */
	key.mv_data = (void *)key_data;
	key.mv_size = key_size;
	val.mv_data = (void *)value->data;
	val.mv_size = value->used;
	return mdb_cursor_put(cursor, &key, &val, MDB_CURRENT);
}

int lmdb_env_sync(struct lmdb_env *env, const char **error_r)
{
	int ret;

	if (env->set.no_sync)
		return 0;
	if (env->env == NULL) {
		*error_r = t_strdup_printf("%s is closed after a failed "
					   "reopen", env->path);
		return -1;
	}
	if ((ret = mdb_env_sync(env->env, 1)) != 0) {
		*error_r = t_strdup_printf("mdb_env_sync(%s) failed: %s",
					   env->path, mdb_strerror(ret));
		return -1;
	}
	return 0;
}

void lmdb_env_drop_pins(struct lmdb_env *env)
{
	struct lmdb_env_pin *pin;

	for (pin = env->pins; pin != NULL; pin = pin->next) {
		if (pin->txn != NULL) {
			mdb_txn_abort(pin->txn);
			pin->txn = NULL;
			pin->dropped = TRUE;
		}
	}
}

int lmdb_env_pin_txn(struct lmdb_env *env, struct lmdb_env_pin *pin,
		     MDB_txn **txn_r, bool *renewed_r, const char **error_r)
{
	int ret;

	*renewed_r = FALSE;
	if (pin->txn != NULL) {
		*txn_r = pin->txn;
		return 0;
	}
	if (!pin->linked) {
		DLLIST_PREPEND(&env->pins, pin);
		pin->linked = TRUE;
	}
	/* like any reader: follow a grown map and reopen a compacted
	   environment first (only possible with no transaction open) */
	if (env->open_txns == 0) {
		MDB_txn *txn;

		if (lmdb_env_read_begin(env, &txn, error_r) < 0)
			return -1;
		lmdb_env_read_end(env, &txn);
	} else if (lmdb_env_ensure_open(env, error_r) < 0) {
		return -1;
	}
	ret = mdb_txn_begin(env->env, NULL, MDB_RDONLY, &pin->txn);
	if (ret != 0) {
		pin->txn = NULL;
		*error_r = t_strdup_printf("mdb_txn_begin(%s) failed: %s",
					   env->path, mdb_strerror(ret));
		return -1;
	}
	*renewed_r = pin->dropped;
	pin->dropped = FALSE;
	*txn_r = pin->txn;
	return 0;
}

void lmdb_env_pin_release(struct lmdb_env *env, struct lmdb_env_pin *pin)
{
	if (pin->txn != NULL) {
		mdb_txn_abort(pin->txn);
		pin->txn = NULL;
	}
	if (pin->linked) {
		DLLIST_REMOVE(&env->pins, pin);
		pin->linked = FALSE;
	}
}

int lmdb_env_read_begin(struct lmdb_env *env, MDB_txn **txn_r,
			const char **error_r)
{
	return lmdb_env_txn_begin(env, MDB_RDONLY, txn_r, error_r) == 0 ?
		0 : -1;
}

void lmdb_env_read_end(struct lmdb_env *env, MDB_txn **txn)
{
	if (*txn == NULL)
		return;
	if (env->idle_read_txn != NULL) {
		lmdb_env_txn_abort(env, txn);
		return;
	}
	i_assert(env->open_txns > 0);
	mdb_txn_reset(*txn);
	env->idle_read_txn = *txn;
	*txn = NULL;
	env->open_txns--;
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

static struct lmdb_env *lmdb_env_find(dev_t dev, ino_t ino)
{
	struct lmdb_env *env;

	if (!array_is_created(&lmdb_envs))
		return NULL;
	array_foreach_elem(&lmdb_envs, env) {
		if (env->dev == dev && env->ino == ino)
			return env;
	}
	return NULL;
}

static void lmdb_env_free(struct lmdb_env *env)
{
	if (env->env != NULL)
		lmdb_env_close_mdb(env);
	i_free(env->path);
	i_free(env);
}

/* Opens of the environment share this lock; compaction takes it
   exclusively while it swaps the files, so nobody opens a lock file of
   one generation with the data file of another. Salvage takes it by the
   directory, without opening the (damaged) environment. */
int lmdb_env_swap_lock_dir(const char *dir, mode_t mode, int lock_type,
			   unsigned int timeout_secs,
			   struct file_lock **lock_r, const char **error_r)
{
	struct file_lock_settings lock_set = {
		.lock_method = FILE_LOCK_METHOD_FLOCK,
		.close_on_free = TRUE,
	};
	const char *path = t_strconcat(dir, "/"LMDB_ENV_SWAP_LOCK_NAME, NULL);
	int fd, ret;

	fd = open(path, O_RDWR | O_CREAT, mode);
	if (fd == -1) {
		*error_r = t_strdup_printf("open(%s) failed: %m", path);
		return -1;
	}
	ret = file_wait_lock(fd, path, lock_type, &lock_set, timeout_secs,
			     lock_r, error_r);
	if (ret <= 0) {
		i_close_fd(&fd);
		if (ret == 0) {
			*error_r = t_strdup_printf("%s is being compacted, "
						   "try again later", dir);
		}
		return -1;
	}
	return 0;
}

static int lmdb_env_swap_lock(struct lmdb_env *env, int lock_type,
			      unsigned int timeout_secs,
			      struct file_lock **lock_r, const char **error_r)
{
	return lmdb_env_swap_lock_dir(env->path, env->set.mode, lock_type,
				      timeout_secs, lock_r, error_r);
}

static int lmdb_env_open_mdb(struct lmdb_env *env, const char **error_r)
{
	struct lmdb_env_record rec;
	struct file_lock *lock;
	MDB_envinfo info;
	MDB_stat mst;
	MDB_txn *txn;
	unsigned int flags;
	int ret, dead;

	if (lmdb_env_swap_lock(env, F_RDLCK, LMDB_ENV_OPEN_LOCK_TIMEOUT_SECS,
			       &lock, error_r) < 0)
		return -1;
	if ((ret = mdb_env_create(&env->env)) != 0) {
		env->env = NULL;
		file_lock_free(&lock);
		*error_r = t_strdup_printf("mdb_env_create() failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	(void)mdb_env_set_maxdbs(env->env, LMDB_ENV_MAX_DBS);
	(void)mdb_env_set_maxreaders(env->env, env->set.max_readers);
	(void)mdb_env_set_mapsize(env->env, env->set.map_size_initial);

	/* NOTLS: Dovecot overlaps read transactions in one thread (a mail
	   stream open while another mail is looked up). Readahead stays on:
	   a body's chunks are written one after another, and reading mail
	   from a cold cache was 4x slower without it. */
	flags = MDB_NOTLS;
	if (env->set.no_sync)
		flags |= MDB_NOSYNC;
	ret = mdb_env_open(env->env, env->path, flags, env->set.mode);
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_env_open(%s) failed: %s%s",
			env->path, mdb_strerror(ret), ret != ENOMEM ? "" :
			" (the map must cover all of the user's mail: "
			LMDB_ENV_VSZ_HINT")");
		mdb_env_close(env->env);
		env->env = NULL;
		file_unlock(&lock);
		return -1;
	}
	/* reader slots of processes that died (kill -9) would pin old
	   pages forever */
	(void)mdb_reader_check(env->env, &dead);
	(void)mdb_env_info(env->env, &info);
	/* an existing environment may already be bigger than our start */
	env->map_size = I_MAX(info.me_mapsize, env->set.map_size_initial);
	if (env->map_size > info.me_mapsize)
		(void)mdb_env_set_mapsize(env->env, env->map_size);
	(void)mdb_env_stat(env->env, &mst);
	env->page_size = mst.ms_psize;

	/* the generation must be read from the same files we opened, so
	   still under the swap lock; a read needs no writer, so this can't
	   deadlock with a compaction waiting for the lock */
	env->generation = 0;
	ret = lmdb_env_read_begin(env, &txn, error_r) == 0 ? 0 : -1;
	if (ret == 0) {
		MDB_dbi dbi;
		MDB_val key, val;

		key.mv_data = (void *)LMDB_ENV_RECORD_KEY;
		key.mv_size = LMDB_ENV_RECORD_KEY_SIZE;
		if (mdb_dbi_open(txn, "meta", 0, &dbi) == 0 &&
		    mdb_get(txn, dbi, &key, &val) == 0 &&
		    lmdb_env_record_decode(val.mv_data, val.mv_size, &rec,
					   error_r))
			env->generation = rec.generation;
		lmdb_env_read_end(env, &txn);
	}
	file_unlock(&lock);
	/* creating DBIs and the env record (or upgrading them) needs the
	   writer, done outside the swap lock and only when needed: every
	   new mail process opens the environment */
	if (ret == 0 && lmdb_env_open_dbis_readonly(env) < 0)
		ret = lmdb_env_write(env, lmdb_env_init_schema, env, TRUE,
				     error_r);
	if (ret == 0 && env->generation == 0) {
		/* a new environment: its record was just written */
		if (lmdb_env_read_begin(env, &txn, error_r) < 0)
			ret = -1;
		else {
			ret = lmdb_env_record_get(env, txn, &rec, error_r);
			lmdb_env_read_end(env, &txn);
			if (ret == 0)
				env->generation = rec.generation;
		}
	}
	if (ret != 0) {
		*error_r = t_strdup_printf("%s: %s", env->path, *error_r);
		lmdb_env_close_mdb(env);
		return -1;
	}
	return 0;
}

/* The environment was replaced (compaction): close our map of the old
   files and open the new ones. Only possible with no transaction open. */
static int lmdb_env_reopen(struct lmdb_env *env, const char **error_r)
{
	if (env->open_txns > 0) {
		*error_r = t_strdup_printf("%s was compacted and can't be "
					   "reopened inside a transaction",
					   env->path);
		return -1;
	}
	lmdb_env_close_mdb(env);
	return lmdb_env_open_mdb(env, error_r);
}

static void lmdb_env_remove(struct lmdb_env *env)
{
	struct lmdb_env *const *envs;
	unsigned int i, count;

	i_assert(env->refcount == 0 && env != lmdb_env_idle);
	envs = array_get(&lmdb_envs, &count);
	for (i = 0; i < count; i++) {
		if (envs[i] == env) {
			array_delete(&lmdb_envs, i, 1);
			break;
		}
	}
	if (array_count(&lmdb_envs) == 0)
		array_free(&lmdb_envs);
	lmdb_env_free(env);
}

static void lmdb_env_free_idle(void)
{
	struct lmdb_env *env = lmdb_env_idle;

	if (env != NULL) {
		lmdb_env_idle = NULL;
		lmdb_env_remove(env);
	}
}

/* The settings as an environment keeps them: a first map size above the
   maximum is the maximum. */
static void lmdb_env_settings_clamp(struct lmdb_env_settings *set)
{
	if (set->map_size_initial > set->map_size_max)
		set->map_size_initial = set->map_size_max;
}

static bool lmdb_env_settings_equal(const struct lmdb_env_settings *a,
				    const struct lmdb_env_settings *b)
{
	return a->map_size_initial == b->map_size_initial &&
		a->map_size_max == b->map_size_max &&
		a->map_reserve == b->map_reserve &&
		a->max_readers == b->max_readers &&
		a->no_sync == b->no_sync && a->mode == b->mode;
}

/* May the idle environment serve a new open of the same directory? Not
   if the settings differ, or the files it maps are no longer the ones
   in the directory (deleted, or the directory was recreated and got the
   old inode number), or another version changed the schema since. A
   compaction since is handled by the read transaction itself, which
   reopens files of an old generation. */
static bool lmdb_env_idle_usable(struct lmdb_env *env,
				 const struct lmdb_env_settings *set)
{
	struct lmdb_env_settings want = *set;
	struct lmdb_env_record rec;
	struct stat st_open, st_path;
	const char *error;
	MDB_txn *txn;
	int fd, ret, dead;

	lmdb_env_settings_clamp(&want);
	/* the files were opened with another identity's permissions */
	if (env->euid != geteuid() || env->egid != getegid())
		return FALSE;
	if (!lmdb_env_settings_equal(&env->set, &want) ||
	    mdb_env_get_fd(env->env, &fd) != 0 ||
	    fstat(fd, &st_open) < 0 || st_open.st_nlink == 0 ||
	    stat(t_strconcat(env->path, "/data.mdb", NULL), &st_path) < 0 ||
	    st_open.st_dev != st_path.st_dev ||
	    st_open.st_ino != st_path.st_ino)
		return FALSE;
	/* as a real open would: slots of readers that died since */
	(void)mdb_reader_check(env->env, &dead);
	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		return FALSE;
	ret = lmdb_env_record_get(env, txn, &rec, &error);
	lmdb_env_read_end(env, &txn);
	return ret == 0 && rec.schema_version == LMDB_SCHEMA_VERSION;
}

int lmdb_env_open(const char *path, const struct lmdb_env_settings *set,
		  struct lmdb_env **env_r, const char **error_r)
{
	struct lmdb_env *env;
	struct stat st;

	if (stat(path, &st) < 0) {
		*error_r = t_strdup_printf("stat(%s) failed: %m", path);
		return -1;
	}
	env = lmdb_env_find(st.st_dev, st.st_ino);
	if (env != NULL && env == lmdb_env_idle) {
		lmdb_env_idle = NULL;
		if (!lmdb_env_idle_usable(env, set)) {
			lmdb_env_remove(env);
			env = NULL;
		}
	}
	if (env != NULL) {
		env->refcount++;
		*env_r = env;
		return 0;
	}
	/* before the new map is made: both count against vsz_limit */
	lmdb_env_free_idle();
	if (lmdb_env_check_fs(path, error_r) < 0)
		return -1;

	env = i_new(struct lmdb_env, 1);
	env->refcount = 1;
	env->path = i_strdup(path);
	env->dev = st.st_dev;
	env->ino = st.st_ino;
	env->euid = geteuid();
	env->egid = getegid();
	env->set = *set;
	lmdb_env_settings_clamp(&env->set);

	if (lmdb_env_open_mdb(env, error_r) < 0) {
		lmdb_env_free(env);
		return -1;
	}
	if (!array_is_created(&lmdb_envs))
		i_array_init(&lmdb_envs, 4);
	array_push_back(&lmdb_envs, &env);
	*env_r = env;
	return 0;
}

static int
lmdb_env_set_generation_txn(MDB_txn *txn, struct lmdb_env *env,
			    uint64_t generation, const char **error_r)
{
	struct lmdb_env_record rec;
	int ret;

	if ((ret = lmdb_env_record_get(env, txn, &rec, error_r)) != 0)
		return ret;
	rec.generation = generation;
	return lmdb_env_record_put(env, txn, &rec, error_r);
}

/* Give the compacted copy in dir its new generation. */
static int lmdb_env_stamp_copy(struct lmdb_env *env, const char *dir,
			       uint64_t generation, const char **error_r)
{
	struct lmdb_env copy;
	MDB_txn *txn;
	int ret;

	*error_r = NULL;
	i_zero(&copy);
	copy.path = (char *)dir;
	if ((ret = mdb_env_create(&copy.env)) != 0) {
		*error_r = t_strdup_printf("mdb_env_create() failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	(void)mdb_env_set_maxdbs(copy.env, LMDB_ENV_MAX_DBS);
	(void)mdb_env_set_mapsize(copy.env, env->map_size);
	ret = mdb_env_open(copy.env, dir, MDB_NOTLS, env->set.mode);
	if (ret == 0)
		ret = mdb_txn_begin(copy.env, NULL, 0, &txn);
	if (ret == 0) {
		ret = mdb_dbi_open(txn, "meta", 0, &copy.dbi_meta);
		if (ret == 0)
			ret = lmdb_env_set_generation_txn(txn, &copy,
							  generation, error_r);
		else
			*error_r = mdb_strerror(ret);
		if (ret == 0)
			ret = mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
	}
	if (ret != 0 && *error_r == NULL)
		*error_r = mdb_strerror(ret);
	mdb_env_close(copy.env);
	if (ret != 0) {
		*error_r = t_strdup_printf("stamping compacted copy %s failed: %s",
					   dir, *error_r);
		return -1;
	}
	return 0;
}

/* Where the old lock.mdb goes during the swap: moved, not unlinked, so
   that a failed rename of the copy can put it back. */
#define LMDB_ENV_RETIRED_LOCK_NAME "retired-lock.mdb"

/* Remove what a compaction left in dir: the copy, its own lock file and
   the old lock file moved aside. Called only while no other compaction
   can be using dir: with the writer of the current files held, or with
   the swap lock held after the files were retired (another compaction
   must then reopen, which waits for that lock, before it gets a
   writer). */
static void lmdb_env_compact_cleanup(const char *dir)
{
	i_unlink_if_exists(t_strconcat(dir, "/data.mdb", NULL));
	i_unlink_if_exists(t_strconcat(dir, "/lock.mdb", NULL));
	i_unlink_if_exists(t_strconcat(dir, "/"LMDB_ENV_RETIRED_LOCK_NAME,
				       NULL));
	if (rmdir(dir) < 0 && errno != ENOENT)
		i_error("rmdir(%s) failed: %m", dir);
}

static int lmdb_env_fsync_path(const char *path, const char **error_r)
{
	int fd = open(path, O_RDONLY);

	if (fd == -1 || fsync(fd) < 0) {
		*error_r = t_strdup_printf("fsync(%s) failed: %m", path);
		if (fd != -1)
			i_close_fd(&fd);
		return -1;
	}
	i_close_fd(&fd);
	return 0;
}

/* Make the compacted copy in dir, stamped with its generation and on
   disk. Runs while the caller holds the writer of the current files:
   the copy has every commit, and none can come after it.
   MDB_CP_COMPACT reads through a read transaction of its own, so it
   doesn't wait for the writer we hold. */
static int lmdb_env_compact_copy(struct lmdb_env *env, const char *dir,
				 uint64_t generation, const char **error_r)
{
	const char *copy_path = t_strconcat(dir, "/data.mdb", NULL);
	int ret;

	if (mkdir(dir, 0700) < 0) {
		*error_r = t_strdup_printf("mkdir(%s) failed: %m", dir);
		return -1;
	}
	if ((ret = mdb_env_copy2(env->env, dir, MDB_CP_COMPACT)) != 0) {
		*error_r = t_strdup_printf("mdb_env_copy2(%s) failed: %s",
					   dir, mdb_strerror(ret));
		return -1;
	}
	if (chmod(copy_path, env->set.mode) < 0) {
		*error_r = t_strdup_printf("chmod(%s) failed: %m", copy_path);
		return -1;
	}
	if (lmdb_env_stamp_copy(env, dir, generation, error_r) < 0 ||
	    lmdb_env_fsync_path(copy_path, error_r) < 0)
		return -1;
	return 0;
}

/* Commit the new generation into the files in use, in the writer
   transaction txn (which this ends either way), and make it durable.
   Returns 0, or -1 with *error_r: then the files may or may not carry
   the new generation, and both are fine as long as they stay in place. */
static int lmdb_env_compact_retire(struct lmdb_env *env, MDB_txn *txn,
				   uint64_t generation, const char **error_r)
{
	int ret;

	if ((ret = lmdb_env_set_generation_txn(txn, env, generation,
						error_r)) != 0) {
		lmdb_env_txn_abort(env, &txn);
		*error_r = t_strdup_printf("retiring %s failed: %s",
					   env->path, *error_r);
		return -1;
	}
	env->open_txns--;
	ret = mdb_txn_commit(txn);
	/* with mail_fsync = never the commit itself doesn't sync */
	if (ret == 0 && env->set.no_sync)
		ret = mdb_env_sync(env->env, 1);
	if (ret != 0) {
		*error_r = t_strdup_printf("retiring %s failed: "
					   "mdb_txn_commit() failed: %s",
					   env->path, mdb_strerror(ret));
		return -1;
	}
	return 0;
}

/* Put the copy in place of the retired files, with the swap lock held:
   the old lock file goes first (moved aside, so that it can come back),
   then the copy is renamed over data.mdb, then the directory is synced
   before anyone can open the new file. */
static int lmdb_env_compact_swap(struct lmdb_env *env, const char *dir,
				 const char **error_r)
{
	const char *lock_path = t_strconcat(env->path, "/lock.mdb", NULL);
	const char *aside_path = t_strconcat(dir, "/"LMDB_ENV_RETIRED_LOCK_NAME,
					     NULL);
	const char *data_path = t_strconcat(env->path, "/data.mdb", NULL);
	const char *copy_path = t_strconcat(dir, "/data.mdb", NULL);

	if (rename(lock_path, aside_path) < 0 && errno != ENOENT) {
		*error_r = t_strdup_printf("rename(%s, %s) failed: %m",
					   lock_path, aside_path);
		return -1;
	}
	if (rename(copy_path, data_path) < 0) {
		*error_r = t_strdup_printf("rename(%s, %s) failed: %m",
					   copy_path, data_path);
		/* the retired files stay in use: with their own lock file
		   again, or else with a new one made by the next open */
		if (rename(aside_path, lock_path) < 0 && errno != ENOENT) {
			i_error("rename(%s, %s) failed: %m", aside_path,
				lock_path);
		}
		return -1;
	}
	if (lmdb_env_fsync_path(env->path, error_r) < 0) {
		*error_r = t_strdup_printf("%s (the compacted file is in "
			"place, but until the directory reaches the disk a "
			"power loss can bring back the retired one)", *error_r);
		return -1;
	}
	return 0;
}

/* Compaction replaces data.mdb under processes that keep the old file
   mapped and only notice a new generation in the file they have open.
   The order is what makes every step safe to die or fail at:

   1. With the writer W of the old files held (no commit can happen):
      copy compactly, stamp the copy with generation G+1, fsync it.
      Dying or failing here leaves the old files untouched; the next
      compaction removes compact.tmp.
   2. Take the swap lock exclusively: opens wait from now on. Nothing
      holding the lock shared waits for the writer (an open only reads
      under it), so holding W while waiting for it can't deadlock.
   3. In W, commit G+1 into the OLD file and make it durable. From here
      every process that has the old files open finds them stale at its
      next transaction and reopens, which waits for the swap lock. No
      process can write the old file any more, so nothing acknowledged
      can land in a file that is about to be unlinked. If the commit
      fails, or we die before the swap, the old files stay where they
      are: they are a complete environment, now of generation G+1, and
      processes reopen them and carry on. (compact.tmp is left for the
      next compaction: without W, another compaction may be using it.)
   4. Move the old lock.mdb aside, rename the copy over data.mdb, fsync
      the directory. The old lock file goes first because a lock file
      must never be paired with a data file of another generation: its
      reader table and last transaction id belong to the old file. If
      the rename fails the lock file is moved back (step 3's state).
      Dying between the two renames leaves the retired data file
      without a lock file: every process reopens it on its next
      transaction (it is stale to all of them) and the first open
      makes a new lock file. Only a read transaction begun before step
      3 and still running after a new writer reused its pages could
      then be hurt; reads are one lookup or one chunk group long.
   5. Remove compact.tmp and release the swap lock: the waiting opens
      get the new files.

   Until the rename the old files are a usable environment (of G
   before step 3, of G+1 after it), from the rename on the copy is; a
   copy is never renamed into place before the old file was retired. */
int lmdb_env_compact(struct lmdb_env *env, uint64_t *old_size_r,
		     uint64_t *new_size_r, const char **error_r)
{
	struct lmdb_env_record rec;
	struct file_lock *lock;
	const char *dir, *data_path, *error;
	struct stat st;
	MDB_txn *txn;
	uint64_t generation;
	int ret;

	dir = t_strconcat(env->path, "/"LMDB_ENV_COMPACT_DIR_NAME, NULL);
	data_path = t_strconcat(env->path, "/data.mdb", NULL);
	*old_size_r = stat(data_path, &st) == 0 ? (uint64_t)st.st_size : 0;
	*new_size_r = *old_size_r;

	/* holding the writer: nothing changes while we copy, and every
	   other writer waits (readers go on) */
	if (lmdb_env_txn_begin(env, 0, &txn, error_r) != 0)
		return -1;
	if (lmdb_env_record_get(env, txn, &rec, error_r) != 0) {
		lmdb_env_txn_abort(env, &txn);
		return -1;
	}
	generation = rec.generation + 1;
	lmdb_env_compact_cleanup(dir);
	if (lmdb_env_compact_copy(env, dir, generation, error_r) < 0 ||
	    lmdb_env_swap_lock(env, F_WRLCK, LMDB_ENV_OPEN_LOCK_TIMEOUT_SECS,
			       &lock, error_r) < 0) {
		lmdb_env_txn_abort(env, &txn);
		lmdb_env_compact_cleanup(dir);
		return -1;
	}
	if (lmdb_env_compact_retire(env, txn, generation, error_r) < 0) {
		file_unlock(&lock);
		/* a failed commit may leave our LMDB handle unusable */
		(void)lmdb_env_reopen(env, &error);
		return -1;
	}
	ret = lmdb_env_compact_swap(env, dir, error_r);
	lmdb_env_compact_cleanup(dir);
	file_unlock(&lock);
	/* ours is a map of the retired files, swapped or not */
	if (lmdb_env_reopen(env, &error) < 0 && ret == 0) {
		*error_r = t_strdup_printf("%s was compacted, but reopening "
					   "it failed: %s", env->path, error);
		ret = -1;
	}
	if (ret < 0)
		return -1;
	*new_size_r = stat(data_path, &st) == 0 ? (uint64_t)st.st_size : 0;
	return 0;
}

void lmdb_env_ref(struct lmdb_env *env)
{
	i_assert(env->refcount > 0);
	env->refcount++;
}

void lmdb_env_unref(struct lmdb_env **_env)
{
	struct lmdb_env *env = *_env;

	*_env = NULL;
	i_assert(env->refcount > 0);
	if (--env->refcount > 0)
		return;

	i_assert(env->open_txns == 0 && env->pins == NULL);
	lmdb_env_free_idle();
	if (env->env == NULL) {
		lmdb_env_remove(env);
		return;
	}
	/* kept open for the process's next user of it: LMTP opens the
	   recipient's environment for every delivery, and opening one
	   cost more CPU than storing a small mail (LMDB allocates and
	   zeroes a 2 MiB dirty list, maps the files, sets up the lock
	   table) */
	lmdb_env_idle = env;
}

void lmdb_env_deinit(void)
{
	lmdb_env_free_idle();
}
