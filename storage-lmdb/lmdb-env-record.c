/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "lmdb-records.h"
#include "lmdb-env-private.h"

/* The env record of the meta DBI (schema version, generation, counters):
   read, written and counted inside the caller's transaction. */

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
