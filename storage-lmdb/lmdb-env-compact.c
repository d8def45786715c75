/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "lmdb-records.h"
#include "lmdb-env-private.h"

#include "file-lock.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/stat.h>

/* Compaction: a compact copy swapped in under processes that keep the
   old files mapped (the order that makes every step safe is below). */

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

int lmdb_env_fsync_path(const char *path, const char **error_r)
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
