/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "lmdb-records.h"
#include "lmdb-link.h"
#include "lmdb-uidls.h"

int lmdb_uidls_holders(struct lmdb_env *env, MDB_txn *txn,
		       const guid_128_t mailbox_guid, const char *uidl,
		       ARRAY_TYPE(lmdb_uid) *uids_r, const char **error_r)
{
	buffer_t *prefix = t_buffer_create(LMDB_UIDLS_KEY_MAX_SIZE);
	const char *error;
	MDB_cursor *cursor;
	MDB_val key, val;
	uint32_t uid;
	int ret;

	/* the entry of UID 0 sorts before every real one */
	lmdb_uidls_key_encode(prefix, mailbox_guid, uidl, 0);
	if ((ret = mdb_cursor_open(txn, env->dbi_uidls, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(uidls) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	key.mv_data = (void *)prefix->data;
	key.mv_size = prefix->used;
	ret = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
	while (ret == 0 && lmdb_uidls_key_match(key.mv_data, key.mv_size,
						mailbox_guid, uidl, &uid)) {
		if (lmdb_uidls_value_check(key.mv_data, key.mv_size,
					   val.mv_data, val.mv_size, &error))
			array_push_back(uids_r, &uid);
		ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
	}
	mdb_cursor_close(cursor);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("reading uidls failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	return 0;
}

int lmdb_uidls_set(struct lmdb_env *env, MDB_txn *txn,
		   const guid_128_t mailbox_guid, const char *uidl,
		   uint32_t uid, const char **error_r)
{
	buffer_t *key = t_buffer_create(LMDB_UIDLS_KEY_MAX_SIZE);
	buffer_t *value = t_buffer_create(16);
	MDB_val k, v;
	int ret;

	if (uidl[0] == '\0' || strlen(uidl) > LMDB_UIDL_MAX_LEN || uid == 0) {
		*error_r = "invalid UIDL index entry";
		return EINVAL;
	}
	lmdb_uidls_key_encode(key, mailbox_guid, uidl, uid);
	lmdb_uidls_value_encode(value, key->data, key->used);
	k.mv_data = (void *)key->data;
	k.mv_size = key->used;
	v.mv_data = (void *)value->data;
	v.mv_size = value->used;
	if ((ret = mdb_put(txn, env->dbi_uidls, &k, &v, 0)) != 0) {
		*error_r = t_strdup_printf("mdb_put(uidls) failed: %s",
					   mdb_strerror(ret));
	}
	return ret;
}

int lmdb_uidls_unset(struct lmdb_env *env, MDB_txn *txn,
		     const guid_128_t mailbox_guid, const char *uidl,
		     uint32_t uid, const char **error_r)
{
	buffer_t *key;
	MDB_val k;
	int ret;

	if (uidl == NULL || uidl[0] == '\0' || strlen(uidl) > LMDB_UIDL_MAX_LEN)
		return 0;
	key = t_buffer_create(LMDB_UIDLS_KEY_MAX_SIZE);
	lmdb_uidls_key_encode(key, mailbox_guid, uidl, uid);
	k.mv_data = (void *)key->data;
	k.mv_size = key->used;
	ret = mdb_del(txn, env->dbi_uidls, &k, NULL);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("mdb_del(uidls) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	return 0;
}

int lmdb_uidls_rebuild(struct lmdb_env *env, MDB_txn *txn,
		       unsigned int *duplicates_r, const char **error_r)
{
	struct lmdb_link_record link;
	ARRAY_TYPE(lmdb_uid) holders;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	guid_128_t guid;
	uint32_t uid;
	int ret;

	*duplicates_r = 0;
	if ((ret = mdb_drop(txn, env->dbi_uidls, 0)) != 0) {
		*error_r = t_strdup_printf("emptying uidls failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	if ((ret = mdb_cursor_open(txn, env->dbi_links, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(links) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		T_BEGIN {
			if (lmdb_link_key_decode(key.mv_data, key.mv_size,
						 guid, &uid) &&
			    lmdb_link_record_decode(guid, uid, val.mv_data,
						    val.mv_size,
						    pool_datastack_create(),
						    &link, &error) &&
			    link.pop3_uidl[0] != '\0') {
				t_array_init(&holders, 2);
				ret = lmdb_uidls_holders(env, txn, guid,
					link.pop3_uidl, &holders, error_r);
				if (ret == 0 && array_count(&holders) > 0)
					(*duplicates_r)++;
				if (ret == 0) {
					ret = lmdb_uidls_set(env, txn, guid,
						link.pop3_uidl, uid, error_r);
				}
			}
		} T_END_PASS_STR_IF(ret != 0, error_r);
		if (ret != 0)
			break;
	}
	mdb_cursor_close(cursor);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		if (ret != EINVAL) {
			*error_r = t_strdup_printf("indexing UIDLs failed: %s",
						   mdb_strerror(ret));
		}
		return ret;
	}
	return 0;
}
