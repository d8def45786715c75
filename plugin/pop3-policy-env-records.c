/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "pop3-policy-env.h"

/* Reading and writing the records of the environment (formats in
   pop3-policy-records.c), keeping the "downloads" index in step with
   the message records. */

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

static int
pop3_policy_env_del(MDB_txn *txn, MDB_dbi dbi, const void *key,
		    size_t key_size, const char **error_r)
{
	MDB_val k;
	int ret;

	k.mv_data = (void *)key;
	k.mv_size = key_size;
	ret = mdb_del(txn, dbi, &k, NULL);
	if (ret == MDB_NOTFOUND)
		return 0;
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_del() failed: %s",
					   mdb_strerror(ret));
	}
	return ret;
}

int pop3_policy_env_download_put(struct pop3_policy_env *env, MDB_txn *txn,
				 uint64_t first_download, const char *msg_key,
				 const char **error_r)
{
	buffer_t *key = t_buffer_create(64), *val = t_buffer_create(4);

	pop3_policy_download_key_encode(key, first_download, msg_key);
	pop3_policy_download_value_encode(val, key->data, key->used);
	return pop3_policy_env_put(txn, env->dbi_downloads, key->data,
				   key->used, val, error_r);
}

int pop3_policy_env_download_del(struct pop3_policy_env *env, MDB_txn *txn,
				 uint64_t first_download, const char *msg_key,
				 const char **error_r)
{
	buffer_t *key = t_buffer_create(64);

	pop3_policy_download_key_encode(key, first_download, msg_key);
	return pop3_policy_env_del(txn, env->dbi_downloads, key->data,
				   key->used, error_r);
}

int pop3_policy_env_msg_lookup(struct pop3_policy_env *env, MDB_txn *txn,
			       const char *guid,
			       struct pop3_policy_msg_record *rec_r,
			       const char **damage_r, const char **error_r)
{
	const char *key = pop3_policy_msg_key(guid), *error;
	MDB_val val;
	int ret;

	*damage_r = NULL;
	ret = pop3_policy_env_get(txn, env->dbi_msgs, key, strlen(key),
				  &val, error_r);
	if (ret <= 0)
		return ret;
	if (!pop3_policy_msg_record_decode(key, strlen(key), val.mv_data,
					   val.mv_size, rec_r, &error)) {
		*damage_r = t_strdup_printf("%s: damaged message record "
					    "for GUID %s: %s", env->path,
					    guid, error);
		return 0;
	}
	return 1;
}

int pop3_policy_env_msg_get(struct pop3_policy_env *env, MDB_txn *txn,
			    const char *guid,
			    struct pop3_policy_msg_record *rec_r,
			    const char **error_r)
{
	const char *damage;
	int ret;

	ret = pop3_policy_env_msg_lookup(env, txn, guid, rec_r, &damage,
					 error_r);
	if (ret == 0 && damage != NULL) {
		*error_r = damage;
		return -1;
	}
	return ret;
}

/* The first download the index has for key now: 0 if none (or if the
   old record can't be decoded: its entry, if any, stays stale and the
   keep_days pass drops it). */
static uint64_t
pop3_policy_env_msg_old_download(struct pop3_policy_env *env, MDB_txn *txn,
				 const char *key)
{
	struct pop3_policy_msg_record old;
	const char *error;
	MDB_val val;

	if (pop3_policy_env_get(txn, env->dbi_msgs, key, strlen(key),
				&val, &error) <= 0 ||
	    !pop3_policy_msg_record_decode(key, strlen(key), val.mv_data,
					   val.mv_size, &old, &error))
		return 0;
	return old.first_download;
}

int pop3_policy_env_msg_put(struct pop3_policy_env *env, MDB_txn *txn,
			    const struct pop3_policy_msg_record *rec,
			    const char **error_r)
{
	const char *key = pop3_policy_msg_key(rec->guid);
	buffer_t *buf = t_buffer_create(128);
	uint64_t old_download;
	int ret;

	old_download = pop3_policy_env_msg_old_download(env, txn, key);
	if (old_download != rec->first_download) {
		if (old_download != 0 &&
		    (ret = pop3_policy_env_download_del(env, txn,
				old_download, key, error_r)) != 0)
			return ret;
		if (rec->first_download != 0 &&
		    (ret = pop3_policy_env_download_put(env, txn,
				rec->first_download, key, error_r)) != 0)
			return ret;
	}
	pop3_policy_msg_record_encode(buf, key, strlen(key), rec);
	return pop3_policy_env_put(txn, env->dbi_msgs, key, strlen(key),
				   buf, error_r);
}

int pop3_policy_env_msg_del(struct pop3_policy_env *env, MDB_txn *txn,
			    const char *guid, const char **error_r)
{
	const char *key = pop3_policy_msg_key(guid);
	uint64_t old_download;
	int ret;

	old_download = pop3_policy_env_msg_old_download(env, txn, key);
	if (old_download != 0 &&
	    (ret = pop3_policy_env_download_del(env, txn, old_download, key,
						error_r)) != 0)
		return ret;
	return pop3_policy_env_del(txn, env->dbi_msgs, key, strlen(key),
				   error_r);
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
	if (!pop3_policy_uidl_record_decode(uidl, strlen(uidl), val.mv_data,
					    val.mv_size, rec_r, &error)) {
		*error_r = t_strdup_printf("%s: damaged UIDL record %s: %s",
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

	pop3_policy_uidl_record_encode(buf, uidl, strlen(uidl), rec);
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

	ret = pop3_policy_env_get(txn, env->dbi_meta,
				  POP3_POLICY_META_KEY_FLAG,
				  strlen(POP3_POLICY_META_KEY_FLAG),
				  &val, error_r);
	if (ret <= 0)
		return ret;
	if (!pop3_policy_flag_record_decode(val.mv_data, val.mv_size,
					    &rec, &error)) {
		*error_r = t_strdup_printf("%s: damaged deleted-flag "
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
	return pop3_policy_env_put(txn, env->dbi_meta,
				   POP3_POLICY_META_KEY_FLAG,
				   strlen(POP3_POLICY_META_KEY_FLAG),
				   buf, error_r);
}

int pop3_policy_env_sweep_get(struct pop3_policy_env *env, MDB_txn *txn,
			      uint64_t *last_sweep_r, const char **error_r)
{
	struct pop3_policy_sweep_record rec;
	const char *error;
	MDB_val val;
	int ret;

	*last_sweep_r = 0;
	ret = pop3_policy_env_get(txn, env->dbi_meta,
				  POP3_POLICY_META_KEY_SWEEP,
				  strlen(POP3_POLICY_META_KEY_SWEEP), &val,
				  error_r);
	if (ret <= 0)
		return ret;
	if (!pop3_policy_sweep_record_decode(val.mv_data, val.mv_size,
					     &rec, &error)) {
		*error_r = t_strdup_printf("%s: damaged sweep record: %s",
					   env->path, error);
		return -1;
	}
	*last_sweep_r = rec.last_sweep;
	return 1;
}

int pop3_policy_env_sweep_put(struct pop3_policy_env *env, MDB_txn *txn,
			      uint64_t last_sweep, const char **error_r)
{
	struct pop3_policy_sweep_record rec = { .last_sweep = last_sweep };
	buffer_t *buf = t_buffer_create(16);

	pop3_policy_sweep_record_encode(buf, &rec);
	return pop3_policy_env_put(txn, env->dbi_meta,
				   POP3_POLICY_META_KEY_SWEEP,
				   strlen(POP3_POLICY_META_KEY_SWEEP), buf,
				   error_r);
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
			if (pop3_policy_msg_record_decode(key.mv_data,
							  key.mv_size,
							  val.mv_data,
							  val.mv_size, &rec,
							  &error))
				func_ret = func(&rec, NULL, context);
			else {
				func_ret = func(NULL, t_strdup_printf(
					"%s: damaged message record %s: %s",
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

struct pop3_policy_env_stale {
	uint64_t first_download;
	const char *msg_key;
};

struct pop3_policy_env_due_ctx {
	unsigned int keep_days;
	time_t now;
	pop3_policy_env_msg_iter_func_t *func;
	void *context;
	pool_t pool;
	ARRAY(struct pop3_policy_env_stale) stale;
};

/* One entry of the index: 1 if it isn't due (the pass ends: the index
   is in time order), 0 to go on, -1 if func failed. */
static int
pop3_policy_env_due_entry(struct pop3_policy_env *env, MDB_txn *txn,
			  const MDB_val *key, const MDB_val *value,
			  struct pop3_policy_env_due_ctx *ctx)
{
	struct pop3_policy_msg_record rec;
	struct pop3_policy_env_stale *stale;
	const char *msg_key, *error;
	uint64_t first_download;
	MDB_val val;
	int ret;

	if (!pop3_policy_download_key_decode(key->mv_data, key->mv_size,
					     &first_download, &msg_key,
					     &error)) {
		error = t_strdup_printf("%s: damaged downloads index key: "
					"%s", env->path, error);
		return ctx->func(NULL, error, ctx->context) < 0 ? -1 : 0;
	}
	/* the value's CRC covers the key: a time or message key changed by
	   damage is caught here, and the entry is skipped (its time can't
	   end the pass either), never acted on */
	if (!pop3_policy_download_value_decode(key->mv_data, key->mv_size,
					       value->mv_data, value->mv_size,
					       &error)) {
		error = t_strdup_printf("%s: damaged downloads index entry "
					"%"PRIu64" %s: %s", env->path,
					first_download, msg_key, error);
		return ctx->func(NULL, error, ctx->context) < 0 ? -1 : 0;
	}
	if (!pop3_policy_keep_days_due(first_download, ctx->keep_days,
				       ctx->now))
		return 1;
	ret = pop3_policy_env_get(txn, env->dbi_msgs, msg_key,
				  strlen(msg_key), &val, &error);
	if (ret < 0)
		return ctx->func(NULL, error, ctx->context) < 0 ? -1 : 0;
	if (ret > 0 && !pop3_policy_msg_record_decode(msg_key,
						      strlen(msg_key),
						      val.mv_data,
						      val.mv_size, &rec,
						      &error)) {
		error = t_strdup_printf("%s: damaged message record %s: %s",
					env->path, msg_key, error);
		return ctx->func(NULL, error, ctx->context) < 0 ? -1 : 0;
	}
	if (ret > 0 && rec.first_download == first_download)
		return ctx->func(&rec, NULL, ctx->context) < 0 ? -1 : 0;

	/* an entry without its record: only a bug or a damaged file makes
	   one; it is dropped after the read */
	stale = array_append_space(&ctx->stale);
	stale->first_download = first_download;
	stale->msg_key = p_strdup(ctx->pool, msg_key);
	error = t_strdup_printf("%s: downloads index entry %"PRIu64" %s "
				"without its record (dropped)", env->path,
				first_download, msg_key);
	return ctx->func(NULL, error, ctx->context) < 0 ? -1 : 0;
}

static int
pop3_policy_env_drop_stale(struct pop3_policy_env *env, MDB_txn *txn,
			   void *context, const char **error_r)
{
	struct pop3_policy_env_due_ctx *ctx = context;
	const struct pop3_policy_env_stale *s;
	int ret;

	array_foreach(&ctx->stale, s) {
		ret = pop3_policy_env_download_del(env, txn, s->first_download,
						   s->msg_key, error_r);
		if (ret != 0)
			return ret;
	}
	return 0;
}

int pop3_policy_env_due_iter(struct pop3_policy_env *env,
			     unsigned int keep_days, time_t now,
			     pop3_policy_env_msg_iter_func_t *func,
			     void *context, const char **error_r)
{
	struct pop3_policy_env_due_ctx ctx;
	MDB_cursor *cursor;
	MDB_txn *txn;
	MDB_val key, val;
	int ret, entry_ret = 0;

	if (keep_days == 0)
		return 0;
	if (pop3_policy_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	if ((ret = mdb_cursor_open(txn, env->dbi_downloads, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open() failed: %s",
					   mdb_strerror(ret));
		pop3_policy_env_read_end(env, &txn);
		return -1;
	}
	i_zero(&ctx);
	ctx.keep_days = keep_days;
	ctx.now = now;
	ctx.func = func;
	ctx.context = context;
	ctx.pool = pool_alloconly_create("pop3_policy stale index", 256);
	p_array_init(&ctx.stale, ctx.pool, 4);
	/* oldest first: the first entry not due ends the pass */
	while (entry_ret == 0 &&
	       (ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		T_BEGIN {
			entry_ret = pop3_policy_env_due_entry(env, txn, &key,
							      &val, &ctx);
		} T_END;
	}
	mdb_cursor_close(cursor);
	pop3_policy_env_read_end(env, &txn);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("mdb_cursor_get() failed: %s",
					   mdb_strerror(ret));
		entry_ret = -1;
	} else if (entry_ret >= 0 && array_count(&ctx.stale) > 0 &&
		   pop3_policy_env_write(env, pop3_policy_env_drop_stale,
					 &ctx, error_r) != 0)
		entry_ret = -1;
	pool_unref(&ctx.pool);
	return entry_ret < 0 ? -1 : 0;
}

int pop3_policy_env_uidl_iter(struct pop3_policy_env *env,
			      pop3_policy_env_uidl_iter_func_t *func,
			      void *context, const char **error_r)
{
	struct pop3_policy_uidl_record rec;
	MDB_cursor *cursor;
	MDB_txn *txn;
	MDB_val key, val;
	const char *error, *uidl;
	int ret, func_ret = 0;

	if (pop3_policy_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	if ((ret = mdb_cursor_open(txn, env->dbi_uidls, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open() failed: %s",
					   mdb_strerror(ret));
		pop3_policy_env_read_end(env, &txn);
		return -1;
	}
	while (func_ret >= 0 &&
	       (ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		T_BEGIN {
			uidl = t_strndup(key.mv_data, key.mv_size);
			if (pop3_policy_uidl_record_decode(key.mv_data,
							   key.mv_size,
							   val.mv_data,
							   val.mv_size, &rec,
							   &error))
				func_ret = func(uidl, &rec, NULL, context);
			else {
				func_ret = func(uidl, NULL, t_strdup_printf(
					"%s: damaged UIDL record %s: %s",
					env->path, uidl, error), context);
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
