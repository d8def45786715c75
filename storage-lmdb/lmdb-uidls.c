/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "lmdb-records.h"
#include "lmdb-link.h"
#include "lmdb-uidls.h"

int lmdb_uidls_lookup(struct lmdb_env *env, MDB_txn *txn,
		      const guid_128_t mailbox_guid, const char *uidl,
		      uint32_t *uid_r, const char **error_r)
{
	buffer_t *key = t_buffer_create(LMDB_UIDLS_KEY_MAX_SIZE);
	const char *error;
	MDB_val k, v;
	int ret;

	lmdb_uidls_key_encode(key, mailbox_guid, uidl);
	k.mv_data = (void *)key->data;
	k.mv_size = key->used;
	ret = mdb_get(txn, env->dbi_uidls, &k, &v);
	if (ret == MDB_NOTFOUND)
		return 0;
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_get(uidls) failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	if (!lmdb_uidls_value_decode(key->data, key->used, v.mv_data,
				     v.mv_size, uid_r, &error))
		return 0;
	return 1;
}

int lmdb_uidls_set(struct lmdb_env *env, MDB_txn *txn,
		   const guid_128_t mailbox_guid, const char *uidl,
		   uint32_t uid, const char **error_r)
{
	buffer_t *key = t_buffer_create(LMDB_UIDLS_KEY_MAX_SIZE);
	buffer_t *value = t_buffer_create(16);
	MDB_val k, v;
	int ret;

	lmdb_uidls_key_encode(key, mailbox_guid, uidl);
	if (key->used > LMDB_UIDLS_KEY_MAX_SIZE ||
	    !lmdb_uidls_value_encode(value, key->data, key->used, uid,
				     error_r)) {
		if (key->used > LMDB_UIDLS_KEY_MAX_SIZE)
			*error_r = "UIDL too long for the index";
		return EINVAL;
	}
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
	uint32_t owner;
	MDB_val k;
	int ret;

	if (uidl == NULL || uidl[0] == '\0')
		return 0;
	ret = lmdb_uidls_lookup(env, txn, mailbox_guid, uidl, &owner,
				error_r);
	if (ret < 0)
		return MDB_CORRUPTED;
	/* another link took it over (dsync renumbering a message) */
	if (ret > 0 && owner != uid)
		return 0;
	key = t_buffer_create(LMDB_UIDLS_KEY_MAX_SIZE);
	lmdb_uidls_key_encode(key, mailbox_guid, uidl);
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
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	guid_128_t guid;
	uint32_t uid, owner;
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
				ret = lmdb_uidls_lookup(env, txn, guid,
					link.pop3_uidl, &owner, error_r);
				if (ret > 0) {
					(*duplicates_r)++;
					ret = 0;
				} else if (ret == 0) {
					ret = lmdb_uidls_set(env, txn, guid,
						link.pop3_uidl, uid, error_r);
				} else {
					ret = MDB_CORRUPTED;
				}
			}
		} T_END;
		if (ret != 0)
			break;
	}
	mdb_cursor_close(cursor);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		if (ret != EINVAL && ret != MDB_CORRUPTED) {
			*error_r = t_strdup_printf("indexing UIDLs failed: %s",
						   mdb_strerror(ret));
		}
		return ret;
	}
	return 0;
}
