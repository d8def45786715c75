/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "ioloop.h"
#include "pop3-policy-env.h"

#include <sys/stat.h>

/* The environment holds a few hundred bytes per message: start small,
   double when full. */
#define POP3_POLICY_ENV_MAP_INITIAL (8ULL * 1024 * 1024)
#define POP3_POLICY_ENV_MAP_MAX (4ULL * 1024 * 1024 * 1024)
#define POP3_POLICY_ENV_MAX_READERS 512
#define POP3_POLICY_ENV_MAX_DBS 4
#define POP3_POLICY_ENV_WRITE_MAX_RETRIES 16

static ARRAY(struct pop3_policy_env *) pop3_policy_envs = ARRAY_INIT;

static int
pop3_policy_env_txn_begin(struct pop3_policy_env *env, unsigned int flags,
			  MDB_txn **txn_r, const char **error_r)
{
	int ret;

	ret = mdb_txn_begin(env->env, NULL, flags, txn_r);
	if (ret == MDB_MAP_RESIZED) {
		/* another process grew the map: adopt its size */
		MDB_envinfo info;

		if ((ret = mdb_env_set_mapsize(env->env, 0)) == 0) {
			(void)mdb_env_info(env->env, &info);
			env->map_size = info.me_mapsize;
			ret = mdb_txn_begin(env->env, NULL, flags, txn_r);
		}
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

static int pop3_policy_env_grow(struct pop3_policy_env *env,
				const char **error_r)
{
	uint64_t new_size;
	int ret;

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
	new_size = I_MIN(env->map_size * 2, POP3_POLICY_ENV_MAP_MAX);
	if ((ret = mdb_env_set_mapsize(env->env, new_size)) != 0) {
		*error_r = t_strdup_printf("mdb_env_set_mapsize(%s) failed: %s",
					   env->path, mdb_strerror(ret));
		return ret;
	}
	env->map_size = new_size;
	return 0;
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

static int
pop3_policy_env_get(MDB_txn *txn, MDB_dbi dbi, const void *key,
		    size_t key_size, MDB_val *val_r, const char **error_r)
{
	MDB_val k;
	int ret;

	k.mv_data = (void *)key;
	k.mv_size = key_size;
	ret = mdb_get(txn, dbi, &k, val_r);
	if (ret == MDB_NOTFOUND)
		return 0;
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_get() failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	return 1;
}

static int
pop3_policy_env_put(MDB_txn *txn, MDB_dbi dbi, const void *key,
		    size_t key_size, const buffer_t *value,
		    const char **error_r)
{
	MDB_val k, v;
	int ret;

	k.mv_data = (void *)key;
	k.mv_size = key_size;
	v.mv_data = (void *)value->data;
	v.mv_size = value->used;
	if ((ret = mdb_put(txn, dbi, &k, &v, 0)) != 0) {
		*error_r = t_strdup_printf("mdb_put() failed: %s",
					   mdb_strerror(ret));
	}
	return ret;
}

int pop3_policy_env_msg_get(struct pop3_policy_env *env, MDB_txn *txn,
			    const char *guid,
			    struct pop3_policy_msg_record *rec_r,
			    const char **error_r)
{
	const char *key = pop3_policy_msg_key(guid), *error;
	MDB_val val;
	int ret;

	ret = pop3_policy_env_get(txn, env->dbi_msgs, key, strlen(key),
				  &val, error_r);
	if (ret <= 0)
		return ret;
	if (!pop3_policy_msg_record_decode(val.mv_data, val.mv_size,
					   rec_r, &error)) {
		*error_r = t_strdup_printf("%s: corrupted message record "
					   "for GUID %s: %s", env->path,
					   guid, error);
		return -1;
	}
	return 1;
}

int pop3_policy_env_msg_put(struct pop3_policy_env *env, MDB_txn *txn,
			    const struct pop3_policy_msg_record *rec,
			    const char **error_r)
{
	const char *key = pop3_policy_msg_key(rec->guid);
	buffer_t *buf = t_buffer_create(128);

	pop3_policy_msg_record_encode(buf, rec);
	return pop3_policy_env_put(txn, env->dbi_msgs, key, strlen(key),
				   buf, error_r);
}

int pop3_policy_env_uidl_get(struct pop3_policy_env *env, MDB_txn *txn,
			     const char *uidl,
			     struct pop3_policy_uidl_record *rec_r,
			     const char **error_r)
{
	const char *error;
	MDB_val val;
	int ret;

	ret = pop3_policy_env_get(txn, env->dbi_uidls, uidl, strlen(uidl),
				  &val, error_r);
	if (ret <= 0)
		return ret;
	if (!pop3_policy_uidl_record_decode(val.mv_data, val.mv_size,
					    rec_r, &error)) {
		*error_r = t_strdup_printf("%s: corrupted UIDL record %s: %s",
					   env->path, uidl, error);
		return -1;
	}
	return 1;
}

int pop3_policy_env_uidl_put(struct pop3_policy_env *env, MDB_txn *txn,
			     const char *uidl,
			     const struct pop3_policy_uidl_record *rec,
			     const char **error_r)
{
	buffer_t *buf = t_buffer_create(64);

	pop3_policy_uidl_record_encode(buf, rec);
	return pop3_policy_env_put(txn, env->dbi_uidls, uidl, strlen(uidl),
				   buf, error_r);
}

int pop3_policy_env_flag_get(struct pop3_policy_env *env, MDB_txn *txn,
			     const char **keyword_r, const char **error_r)
{
	struct pop3_policy_flag_record rec;
	const char *error;
	MDB_val val;
	int ret;

	ret = pop3_policy_env_get(txn, env->dbi_meta, "deleted-flag", 12,
				  &val, error_r);
	if (ret <= 0)
		return ret;
	if (!pop3_policy_flag_record_decode(val.mv_data, val.mv_size,
					    &rec, &error)) {
		*error_r = t_strdup_printf("%s: corrupted deleted-flag "
					   "record: %s", env->path, error);
		return -1;
	}
	*keyword_r = rec.keyword;
	return 1;
}

int pop3_policy_env_flag_put(struct pop3_policy_env *env, MDB_txn *txn,
			     const char *keyword, const char **error_r)
{
	struct pop3_policy_flag_record rec = { .keyword = keyword };
	buffer_t *buf = t_buffer_create(64);

	pop3_policy_flag_record_encode(buf, &rec);
	return pop3_policy_env_put(txn, env->dbi_meta, "deleted-flag", 12,
				   buf, error_r);
}

int pop3_policy_env_msg_iter(struct pop3_policy_env *env,
			     pop3_policy_env_msg_iter_func_t *func,
			     void *context, const char **error_r)
{
	struct pop3_policy_msg_record rec;
	MDB_cursor *cursor;
	MDB_txn *txn;
	MDB_val key, val;
	const char *error;
	int ret, func_ret = 0;

	if (pop3_policy_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	if ((ret = mdb_cursor_open(txn, env->dbi_msgs, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open() failed: %s",
					   mdb_strerror(ret));
		pop3_policy_env_read_end(env, &txn);
		return -1;
	}
	while (func_ret >= 0 &&
	       (ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		T_BEGIN {
			if (pop3_policy_msg_record_decode(val.mv_data,
							  val.mv_size, &rec,
							  &error))
				func_ret = func(&rec, NULL, context);
			else {
				func_ret = func(NULL, t_strdup_printf(
					"%s: corrupted message record %s: %s",
					env->path, t_strndup(key.mv_data,
							     key.mv_size),
					error), context);
			}
		} T_END;
	}
	mdb_cursor_close(cursor);
	pop3_policy_env_read_end(env, &txn);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("mdb_cursor_get() failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	return func_ret < 0 ? -1 : 0;
}

static int
pop3_policy_env_init_schema(struct pop3_policy_env *env, MDB_txn *txn,
			    void *context ATTR_UNUSED, const char **error_r)
{
	struct pop3_policy_schema_record rec;
	const char *error;
	buffer_t *buf;
	MDB_val val;
	int ret;

	if ((ret = mdb_dbi_open(txn, "meta", MDB_CREATE, &env->dbi_meta)) != 0 ||
	    (ret = mdb_dbi_open(txn, "msgs", MDB_CREATE, &env->dbi_msgs)) != 0 ||
	    (ret = mdb_dbi_open(txn, "uidls", MDB_CREATE, &env->dbi_uidls)) != 0) {
		*error_r = t_strdup_printf("mdb_dbi_open(%s) failed: %s",
					   env->path, mdb_strerror(ret));
		return ret;
	}
	ret = pop3_policy_env_get(txn, env->dbi_meta, "schema", 6, &val,
				  error_r);
	if (ret < 0)
		return MDB_CORRUPTED;
	if (ret > 0) {
		if (!pop3_policy_schema_record_decode(val.mv_data, val.mv_size,
						      &rec, &error)) {
			*error_r = t_strdup_printf("%s: corrupted schema "
						   "record: %s", env->path,
						   error);
			return MDB_CORRUPTED;
		}
		if (rec.schema_version > POP3_POLICY_SCHEMA_VERSION) {
			*error_r = t_strdup_printf(
				"%s has schema version %u, this module knows "
				"only up to %u: upgrade the module", env->path,
				rec.schema_version, POP3_POLICY_SCHEMA_VERSION);
			return MDB_VERSION_MISMATCH;
		}
		if (rec.schema_version == POP3_POLICY_SCHEMA_VERSION)
			return 0;
		/* upgrade-on-open of older schemas goes here, in this same
		   transaction; version 1 is the first */
	} else {
		i_zero(&rec);
		rec.created = ioloop_time != 0 ? ioloop_time : time(NULL);
	}
	rec.schema_version = POP3_POLICY_SCHEMA_VERSION;
	buf = t_buffer_create(32);
	pop3_policy_schema_record_encode(buf, &rec);
	return pop3_policy_env_put(txn, env->dbi_meta, "schema", 6, buf,
				   error_r);
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
	if (env->env != NULL)
		mdb_env_close(env->env);
	i_free(env->path);
	i_free(env);
}

int pop3_policy_env_open(const char *path, mode_t mode,
			 struct pop3_policy_env **env_r, const char **error_r)
{
	struct pop3_policy_env *env;
	struct stat st;
	MDB_envinfo info;
	int ret, dead;

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
	env->map_size = POP3_POLICY_ENV_MAP_INITIAL;
	if ((ret = mdb_env_create(&env->env)) != 0) {
		*error_r = t_strdup_printf("mdb_env_create() failed: %s",
					   mdb_strerror(ret));
		env->env = NULL;
		pop3_policy_env_free(env);
		return -1;
	}
	(void)mdb_env_set_maxdbs(env->env, POP3_POLICY_ENV_MAX_DBS);
	(void)mdb_env_set_maxreaders(env->env, POP3_POLICY_ENV_MAX_READERS);
	(void)mdb_env_set_mapsize(env->env, env->map_size);
	/* NOTLS: Dovecot overlaps reads in one thread; NOSUBDIR: files
	   only, see POP3_POLICY_ENV_FILE_NAME */
	ret = mdb_env_open(env->env, path, MDB_NOTLS | MDB_NOSUBDIR, mode);
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_env_open(%s) failed: %s",
					   path, mdb_strerror(ret));
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
	(void)mdb_env_info(env->env, &info);
	if (info.me_mapsize > env->map_size)
		env->map_size = info.me_mapsize;
	/* readers of crashed processes would pin pages forever */
	(void)mdb_reader_check(env->env, &dead);

	if (pop3_policy_env_write(env, pop3_policy_env_init_schema, NULL,
				  error_r) != 0) {
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
