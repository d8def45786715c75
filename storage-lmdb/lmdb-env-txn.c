/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "llist.h"
#include "lmdb-records.h"
#include "lmdb-env-private.h"

#include <sys/statvfs.h>

/* Transactions: begin (following a grown map or a compaction), the write
   retry after growing the map, commit and sync, reads and pinned reads. */

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

/* A full reader table is a limit the admin sets: name the setting. Each
   process with the environment open holds a slot, each open message
   stream one more; the table is sized by the first process that opens
   the environment when nobody else has it open, and never shrinks. */
static const char *lmdb_env_txn_begin_error(struct lmdb_env *env, int ret)
{
	return t_strdup_printf("mdb_txn_begin(%s) failed: %s%s", env->path,
		mdb_strerror(ret), ret != MDB_READERS_FULL ? "" :
		" (every reader slot is taken: raise the plugin setting "
		"lmdb_max_readers above the user's concurrent sessions and "
		"open messages)");
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

int lmdb_env_txn_begin(struct lmdb_env *env, unsigned int flags,
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
			*error_r = lmdb_env_txn_begin_error(env, ret);
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

void lmdb_env_txn_abort(struct lmdb_env *env, MDB_txn **txn)
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
		*error_r = lmdb_env_txn_begin_error(env, ret);
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
