/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "lmdb-records.h"
#include "lmdb-quarantine.h"

int lmdb_quarantine_move(struct lmdb_env *env, MDB_txn *txn, MDB_dbi dbi,
			 const char *dbi_name, const void *key,
			 size_t key_size, const char *reason, int64_t now,
			 const char **error_r)
{
	struct lmdb_quarantine_record rec;
	buffer_t *qkey, *value;
	MDB_val k, v;
	int ret;

	k.mv_data = (void *)key;
	k.mv_size = key_size;
	ret = mdb_get(txn, dbi, &k, &v);
	if (ret == MDB_NOTFOUND)
		return 0;
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_get(%s) failed: %s", dbi_name,
					   mdb_strerror(ret));
		return ret;
	}
	qkey = t_buffer_create(strlen(dbi_name) + 1 + key_size);
	buffer_append(qkey, dbi_name, strlen(dbi_name) + 1);
	buffer_append(qkey, key, key_size);
	i_zero(&rec);
	rec.since = now;
	rec.reason = reason;
	/* a copy: the page under v.mv_data changes with the puts below */
	rec.raw = p_memdup(pool_datastack_create(), v.mv_data, v.mv_size);
	rec.raw_size = v.mv_size;
	value = t_buffer_create(v.mv_size + 64);
	if (!lmdb_quarantine_record_encode(value, qkey->data, qkey->used, &rec,
					   error_r))
		return EINVAL;
	k.mv_data = (void *)qkey->data;
	k.mv_size = qkey->used;
	v.mv_data = (void *)value->data;
	v.mv_size = value->used;
	if ((ret = mdb_put(txn, env->dbi_quarantine, &k, &v, 0)) != 0) {
		*error_r = t_strdup_printf("mdb_put(quarantine) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	k.mv_data = (void *)key;
	k.mv_size = key_size;
	if ((ret = mdb_del(txn, dbi, &k, NULL)) != 0) {
		*error_r = t_strdup_printf("mdb_del(%s) failed: %s", dbi_name,
					   mdb_strerror(ret));
	}
	return ret;
}

int lmdb_quarantine_count(struct lmdb_env *env, MDB_txn *txn,
			  uint64_t *count_r, const char **error_r)
{
	MDB_stat st;
	int ret;

	if ((ret = mdb_stat(txn, env->dbi_quarantine, &st)) != 0) {
		*error_r = t_strdup_printf("mdb_stat(quarantine) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	*count_r = st.ms_entries;
	return 0;
}
