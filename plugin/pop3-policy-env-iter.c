/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "pop3-policy-env.h"

/* Reading many records of the environment in one read transaction: every
   message record, the ones due under keep_days (from the "downloads"
   index), every UIDL reservation. A damaged record is reported to the
   callback as an error, never as a record. */

/* A read transaction and a cursor on dbi in it, for one iteration. */
static int
pop3_policy_env_cursor_begin(struct pop3_policy_env *env, MDB_dbi dbi,
			     MDB_txn **txn_r, MDB_cursor **cursor_r,
			     const char **error_r)
{
	int ret;

	if (pop3_policy_env_read_begin(env, txn_r, error_r) < 0)
		return -1;
	if ((ret = mdb_cursor_open(*txn_r, dbi, cursor_r)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open() failed: %s",
					   mdb_strerror(ret));
		pop3_policy_env_read_end(env, txn_r);
		return -1;
	}
	return 0;
}

static void
pop3_policy_env_cursor_end(struct pop3_policy_env *env, MDB_txn **txn,
			   MDB_cursor **cursor)
{
	mdb_cursor_close(*cursor);
	*cursor = NULL;
	pop3_policy_env_read_end(env, txn);
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

	if (pop3_policy_env_cursor_begin(env, env->dbi_msgs, &txn, &cursor,
					 error_r) < 0)
		return -1;
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
	pop3_policy_env_cursor_end(env, &txn, &cursor);
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
	MDB_val mkey, val;
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
	mkey.mv_data = (void *)msg_key;
	mkey.mv_size = strlen(msg_key);
	ret = mdb_get(txn, env->dbi_msgs, &mkey, &val);
	if (ret == MDB_NOTFOUND)
		ret = 0;
	else if (ret != 0) {
		error = t_strdup_printf("mdb_get() failed: %s",
					mdb_strerror(ret));
		return ctx->func(NULL, error, ctx->context) < 0 ? -1 : 0;
	} else
		ret = 1;
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
	if (pop3_policy_env_cursor_begin(env, env->dbi_downloads, &txn, &cursor,
					 error_r) < 0)
		return -1;
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
	pop3_policy_env_cursor_end(env, &txn, &cursor);
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

	if (pop3_policy_env_cursor_begin(env, env->dbi_uidls, &txn, &cursor,
					 error_r) < 0)
		return -1;
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
	pop3_policy_env_cursor_end(env, &txn, &cursor);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("mdb_cursor_get() failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	return func_ret < 0 ? -1 : 0;
}
