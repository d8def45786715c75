/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "pop3-policy-map.h"
#include "pop3-policy-env.h"

#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/resource.h>

/* The environment's life in a process: opening (shared per file),
   transactions, and the map, which grows when full and follows another
   process's growth, but never beyond what the process's address space
   limit leaves. */

#define POP3_POLICY_ENV_MAX_READERS 512
#define POP3_POLICY_ENV_MAX_DBS 8
#define POP3_POLICY_ENV_WRITE_MAX_RETRIES 16
/* the smallest map worth opening */
#define POP3_POLICY_ENV_MAP_MIN (256ULL * 1024)
#define POP3_POLICY_ENV_VSZ_HINT \
	"raise vsz_limit of the service (default_vsz_limit)"

static ARRAY(struct pop3_policy_env *) pop3_policy_envs = ARRAY_INIT;

static int pop3_policy_env_open_mdb(struct pop3_policy_env *env,
				    const char **error_r);
static void pop3_policy_env_close_mdb(struct pop3_policy_env *env);

/* The process's whole address space, from the kernel's own count (the
   first field of statm, in pages): what RLIMIT_AS is checked against. */
static bool pop3_policy_env_vsz(uint64_t *vsz_r)
{
	char buf[256];
	const char *end;
	ssize_t len;
	long page_size;
	int fd;

	fd = open("/proc/self/statm", O_RDONLY);
	if (fd == -1)
		return FALSE;
	len = read(fd, buf, sizeof(buf) - 1);
	i_close_fd(&fd);
	page_size = sysconf(_SC_PAGESIZE);
	if (len <= 0 || page_size <= 0)
		return FALSE;
	buf[len] = '\0';
	if (str_parse_uint64(buf, vsz_r, &end) < 0 || *end != ' ')
		return FALSE;
	*vsz_r *= (uint64_t)page_size;
	return TRUE;
}

/* The largest map this process can hold now; *as_limit_r is RLIMIT_AS
   (0 = none). Without /proc the limit can't be computed: then only
   LMDB's own failure tells, and the reopen after it keeps us safe. */
static uint64_t pop3_policy_env_map_limit(struct pop3_policy_env *env,
					  uint64_t *as_limit_r)
{
	struct rlimit rl;
	uint64_t vsz;

	*as_limit_r = 0;
	if (getrlimit(RLIMIT_AS, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return POP3_POLICY_MAP_UNLIMITED;
	*as_limit_r = rl.rlim_cur;
	if (!pop3_policy_env_vsz(&vsz))
		return POP3_POLICY_MAP_UNLIMITED;
	return pop3_policy_map_limit(rl.rlim_cur, vsz,
				     env->env == NULL ? 0 : env->map_size,
				     POP3_POLICY_ENV_VSZ_MARGIN,
				     env->page_size);
}

static const char *
pop3_policy_env_vsz_error(struct pop3_policy_env *env, uint64_t size,
			  uint64_t as_limit)
{
	return t_strdup_printf("%s needs a map of %"PRIu64" bytes, which "
		"this process's address space limit (vsz_limit) of %"PRIu64
		" bytes doesn't leave room for: "POP3_POLICY_ENV_VSZ_HINT,
		env->path, size, as_limit);
}

/* Map want_size bytes, or as much of it as fits, but at least
   min_size. A failed resize leaves LMDB with nothing mapped (it unmaps
   the old map first): the file is opened again before anything else
   can touch it. */
static int
pop3_policy_env_set_map_size(struct pop3_policy_env *env, uint64_t min_size,
			     uint64_t want_size, const char **error_r)
{
	uint64_t as_limit, limit, size;
	const char *error;
	int ret;

	limit = pop3_policy_env_map_limit(env, &as_limit);
	if (!pop3_policy_map_size(min_size, want_size, limit, &size)) {
		*error_r = pop3_policy_env_vsz_error(env, min_size, as_limit);
		return ENOMEM;
	}
	if ((ret = mdb_env_set_mapsize(env->env, size)) == 0) {
		env->map_size = size;
		return 0;
	}
	*error_r = t_strdup_printf("mdb_env_set_mapsize(%s, %"PRIu64
				   ") failed: %s", env->path, size,
				   mdb_strerror(ret));
	if (ret == ENOMEM && as_limit != 0) {
		*error_r = t_strdup_printf("%s (vsz_limit %"PRIu64" bytes: "
					   POP3_POLICY_ENV_VSZ_HINT")",
					   *error_r, as_limit);
	}
	pop3_policy_env_close_mdb(env);
	if (env->reopening) {
		/* this resize was part of a reopen: leave it closed, the
		   next transaction tries again */
		return ret;
	}
	env->reopening = TRUE;
	if (pop3_policy_env_open_mdb(env, &error) < 0 ||
	    pop3_policy_env_open_dbis(env, &error) < 0) {
		*error_r = t_strdup_printf("%s; reopening failed: %s",
					   *error_r, error);
		if (env->env != NULL)
			pop3_policy_env_close_mdb(env);
	}
	env->reopening = FALSE;
	return ret;
}

static int pop3_policy_env_grow(struct pop3_policy_env *env,
				const char **error_r)
{
	if (env->map_size >= POP3_POLICY_ENV_MAP_MAX) {
		*error_r = t_strdup_printf("%s is full at %"PRIu64" bytes",
					   env->path, env->map_size);
		return MDB_MAP_FULL;
	}
	/* resizing needs all of this process's transactions closed; ours
	   are all short, so only a broken caller can trip this */
	if (env->open_txns > 0) {
		*error_r = t_strdup_printf("%s is full and can't grow while "
					   "a transaction is open", env->path);
		return MDB_MAP_FULL;
	}
	return pop3_policy_env_set_map_size(env,
		env->map_size + env->page_size,
		pop3_policy_map_grow_want(env->map_size,
					  POP3_POLICY_ENV_MAP_MAX), error_r);
}

/* Another process grew the data beyond our map: follow it, as far as
   our address space allows. */
static int pop3_policy_env_follow(struct pop3_policy_env *env,
				  const char **error_r)
{
	MDB_envinfo info;
	uint64_t needed;

	/* remapping would pull the map from under the open transaction */
	if (env->open_txns > 0) {
		*error_r = t_strdup_printf("%s was grown by another process "
					   "and can't be followed while a "
					   "transaction is open", env->path);
		return MDB_MAP_RESIZED;
	}
	(void)mdb_env_info(env->env, &info);
	needed = ((uint64_t)info.me_last_pgno + 1) * env->page_size;
	return pop3_policy_env_set_map_size(env, needed,
		pop3_policy_map_follow_want(env->map_size, needed,
					    POP3_POLICY_ENV_MAP_MAX), error_r);
}

static int
pop3_policy_env_txn_begin(struct pop3_policy_env *env, unsigned int flags,
			  MDB_txn **txn_r, const char **error_r)
{
	int ret;

	if (env->env == NULL) {
		/* a failed resize couldn't reopen it: try again */
		env->reopening = TRUE;
		if (pop3_policy_env_open_mdb(env, error_r) < 0 ||
		    pop3_policy_env_open_dbis(env, error_r) < 0) {
			if (env->env != NULL)
				pop3_policy_env_close_mdb(env);
			env->reopening = FALSE;
			return EIO;
		}
		env->reopening = FALSE;
	}
	ret = mdb_txn_begin(env->env, NULL, flags, txn_r);
	if (ret == MDB_MAP_RESIZED) {
		if ((ret = pop3_policy_env_follow(env, error_r)) != 0)
			return ret;
		ret = mdb_txn_begin(env->env, NULL, flags, txn_r);
	}
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_txn_begin(%s) failed: %s",
					   env->path, mdb_strerror(ret));
		return ret;
	}
	env->open_txns++;
	return 0;
}

static void pop3_policy_env_txn_abort(struct pop3_policy_env *env,
				      MDB_txn **txn)
{
	i_assert(env->open_txns > 0);
	mdb_txn_abort(*txn);
	*txn = NULL;
	env->open_txns--;
}

int pop3_policy_env_write(struct pop3_policy_env *env,
			  pop3_policy_env_write_func_t *func, void *context,
			  const char **error_r)
{
	MDB_txn *txn;
	unsigned int i;
	int ret;

	for (i = 0;; i++) {
		if ((ret = pop3_policy_env_txn_begin(env, 0, &txn,
						     error_r)) != 0)
			return ret;
		ret = func(env, txn, context, error_r);
		if (ret == 0) {
			env->open_txns--;
			ret = mdb_txn_commit(txn);
			if (ret == 0)
				return 0;
			*error_r = t_strdup_printf(
				"mdb_txn_commit(%s) failed: %s",
				env->path, mdb_strerror(ret));
		} else {
			pop3_policy_env_txn_abort(env, &txn);
		}
		if (ret != MDB_MAP_FULL ||
		    i >= POP3_POLICY_ENV_WRITE_MAX_RETRIES)
			return ret;
		if ((ret = pop3_policy_env_grow(env, error_r)) != 0)
			return ret;
	}
}

int pop3_policy_env_read_begin(struct pop3_policy_env *env, MDB_txn **txn_r,
			       const char **error_r)
{
	return pop3_policy_env_txn_begin(env, MDB_RDONLY, txn_r,
					 error_r) == 0 ? 0 : -1;
}

void pop3_policy_env_read_end(struct pop3_policy_env *env, MDB_txn **txn)
{
	if (*txn != NULL)
		pop3_policy_env_txn_abort(env, txn);
}

static void pop3_policy_env_close_mdb(struct pop3_policy_env *env)
{
	i_assert(env->open_txns == 0);
	if (env->env != NULL)
		mdb_env_close(env->env);
	env->env = NULL;
	env->map_size = 0;
}

/* Create the MDB_env and map the file (no DBIs yet). */
static int pop3_policy_env_open_mdb(struct pop3_policy_env *env,
				    const char **error_r)
{
	MDB_envinfo info;
	MDB_stat st;
	uint64_t as_limit, limit, size;
	int ret, dead;

	i_assert(env->env == NULL);
	/* LMDB maps at least the data in the file whatever we ask for; a
	   file that doesn't fit fails in mdb_env_open() itself */
	limit = pop3_policy_env_map_limit(env, &as_limit);
	if (!pop3_policy_map_size(POP3_POLICY_ENV_MAP_MIN,
				  POP3_POLICY_ENV_MAP_INITIAL, limit, &size)) {
		*error_r = pop3_policy_env_vsz_error(env,
			POP3_POLICY_ENV_MAP_MIN, as_limit);
		return -1;
	}
	if ((ret = mdb_env_create(&env->env)) != 0) {
		env->env = NULL;
		*error_r = t_strdup_printf("mdb_env_create() failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	(void)mdb_env_set_maxdbs(env->env, POP3_POLICY_ENV_MAX_DBS);
	(void)mdb_env_set_maxreaders(env->env, POP3_POLICY_ENV_MAX_READERS);
	(void)mdb_env_set_mapsize(env->env, size);
	/* NOTLS: Dovecot overlaps reads in one thread; NOSUBDIR: files
	   only, see POP3_POLICY_ENV_FILE_NAME */
	ret = mdb_env_open(env->env, env->path, MDB_NOTLS | MDB_NOSUBDIR,
			   env->mode);
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_env_open(%s) failed: %s%s",
			env->path, mdb_strerror(ret),
			ret != ENOMEM || as_limit == 0 ? "" : t_strdup_printf(
			" (the map must cover the whole file; vsz_limit %"
			PRIu64" bytes: "POP3_POLICY_ENV_VSZ_HINT")",
			as_limit));
		mdb_env_close(env->env);
		env->env = NULL;
		return -1;
	}
	(void)mdb_env_stat(env->env, &st);
	env->page_size = st.ms_psize;
	(void)mdb_env_info(env->env, &info);
	env->map_size = info.me_mapsize;
	/* readers of crashed processes would pin pages forever */
	(void)mdb_reader_check(env->env, &dead);
	return 0;
}

static struct pop3_policy_env *pop3_policy_env_find(dev_t dev, ino_t ino)
{
	struct pop3_policy_env *env;

	if (!array_is_created(&pop3_policy_envs))
		return NULL;
	array_foreach_elem(&pop3_policy_envs, env) {
		if (env->dev == dev && env->ino == ino)
			return env;
	}
	return NULL;
}

static void pop3_policy_env_free(struct pop3_policy_env *env)
{
	pop3_policy_env_close_mdb(env);
	i_free(env->conversion_report);
	i_free(env->path);
	i_free(env);
}

int pop3_policy_env_open(const char *path, mode_t mode,
			 struct pop3_policy_env **env_r, const char **error_r)
{
	struct pop3_policy_env *env;
	struct stat st;

	if (stat(path, &st) == 0) {
		env = pop3_policy_env_find(st.st_dev, st.st_ino);
		if (env != NULL) {
			env->refcount++;
			*env_r = env;
			return 0;
		}
	} else if (errno != ENOENT) {
		*error_r = t_strdup_printf("stat(%s) failed: %m", path);
		return -1;
	}

	env = i_new(struct pop3_policy_env, 1);
	env->refcount = 1;
	env->path = i_strdup(path);
	env->mode = mode;
	if (pop3_policy_env_open_mdb(env, error_r) < 0) {
		pop3_policy_env_free(env);
		return -1;
	}
	if (stat(path, &st) < 0) {
		*error_r = t_strdup_printf("stat(%s) failed: %m", path);
		pop3_policy_env_free(env);
		return -1;
	}
	env->dev = st.st_dev;
	env->ino = st.st_ino;
	if (pop3_policy_env_open_dbis(env, error_r) < 0) {
		pop3_policy_env_free(env);
		return -1;
	}
	if (!array_is_created(&pop3_policy_envs))
		i_array_init(&pop3_policy_envs, 4);
	array_push_back(&pop3_policy_envs, &env);
	*env_r = env;
	return 0;
}

void pop3_policy_env_ref(struct pop3_policy_env *env)
{
	i_assert(env->refcount > 0);
	env->refcount++;
}

void pop3_policy_env_unref(struct pop3_policy_env **_env)
{
	struct pop3_policy_env *env = *_env;
	struct pop3_policy_env *const *envs;
	unsigned int i, count;

	if (env == NULL)
		return;
	*_env = NULL;
	i_assert(env->refcount > 0);
	if (--env->refcount > 0)
		return;
	i_assert(env->open_txns == 0);

	envs = array_get(&pop3_policy_envs, &count);
	for (i = 0; i < count; i++) {
		if (envs[i] == env) {
			array_delete(&pop3_policy_envs, i, 1);
			break;
		}
	}
	if (array_count(&pop3_policy_envs) == 0)
		array_free(&pop3_policy_envs);
	pop3_policy_env_free(env);
}

unsigned int pop3_policy_env_open_count(void)
{
	return array_is_created(&pop3_policy_envs) ?
		array_count(&pop3_policy_envs) : 0;
}
