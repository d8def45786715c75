/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
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

int pop3_policy_env_uidl_lookup(struct pop3_policy_env *env, MDB_txn *txn,
				const char *uidl,
				struct pop3_policy_uidl_record *rec_r,
				const char **damage_r, const char **error_r)
{
	const char *error;
	MDB_val val;
	int ret;

	*damage_r = NULL;
	ret = pop3_policy_env_get(txn, env->dbi_uidls, uidl, strlen(uidl),
				  &val, error_r);
	if (ret <= 0)
		return ret;
	if (!pop3_policy_uidl_record_decode(uidl, strlen(uidl), val.mv_data,
					    val.mv_size, rec_r, &error)) {
		*damage_r = t_strdup_printf("%s: damaged UIDL record %s: %s",
					    env->path, uidl, error);
		return 0;
	}
	return 1;
}

int pop3_policy_env_uidl_get(struct pop3_policy_env *env, MDB_txn *txn,
			     const char *uidl,
			     struct pop3_policy_uidl_record *rec_r,
			     const char **error_r)
{
	const char *damage;
	int ret;

	ret = pop3_policy_env_uidl_lookup(env, txn, uidl, rec_r, &damage,
					  error_r);
	if (ret == 0 && damage != NULL) {
		*error_r = damage;
		return -1;
	}
	return ret;
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

int pop3_policy_env_flag_lookup(struct pop3_policy_env *env, MDB_txn *txn,
				const char **keyword_r, const char **damage_r,
				const char **error_r)
{
	struct pop3_policy_flag_record rec;
	const char *error;
	MDB_val val;
	int ret;

	*damage_r = NULL;
	ret = pop3_policy_env_get(txn, env->dbi_meta,
				  POP3_POLICY_META_KEY_FLAG,
				  strlen(POP3_POLICY_META_KEY_FLAG),
				  &val, error_r);
	if (ret <= 0)
		return ret;
	if (!pop3_policy_flag_record_decode(val.mv_data, val.mv_size,
					    &rec, &error)) {
		*damage_r = t_strdup_printf("%s: damaged deleted-flag "
					    "record: %s", env->path, error);
		return 0;
	}
	*keyword_r = rec.keyword;
	return 1;
}

int pop3_policy_env_flag_get(struct pop3_policy_env *env, MDB_txn *txn,
			     const char **keyword_r, const char **error_r)
{
	const char *damage;
	int ret;

	ret = pop3_policy_env_flag_lookup(env, txn, keyword_r, &damage,
					  error_r);
	if (ret == 0 && damage != NULL) {
		*error_r = damage;
		return -1;
	}
	return ret;
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
