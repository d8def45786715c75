/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "lmdb-records.h"
#include "lmdb-env-private.h"
#include "lmdb-schema.h"

#include "file-lock.h"

#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/vfs.h>

/* The environment's life: opening (or sharing) it, the registry of open
   environments per (dev, ino), references, the idle one kept open. */

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

static int lmdb_env_open_mdb(struct lmdb_env *env, const char **error_r);

/* A failed map resize closes the environment when it can't open it
   again; the next use tries once more. */
int lmdb_env_ensure_open(struct lmdb_env *env, const char **error_r)
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

int lmdb_env_swap_lock(struct lmdb_env *env, int lock_type,
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
int lmdb_env_reopen(struct lmdb_env *env, const char **error_r)
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
