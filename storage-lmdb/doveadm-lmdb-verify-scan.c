/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "str.h"
#include "lmdb-link.h"
#include "lmdb-uidls.h"
#include "lmdb-storage.h"
#include "doveadm-lmdb-verify.h"

/* One pass per DBI in one read transaction: mailboxes, links (checksums,
   reference counts, UIDLs), the UIDL index, the gc entries. */

static struct lmdb_verify_box *
lmdb_verify_box_get(struct lmdb_verify_state *state, const guid_128_t guid)
{
	struct lmdb_verify_box *box;
	const char *hex = guid_128_to_string(guid);

	box = hash_table_lookup(state->boxes, hex);
	if (box == NULL) {
		box = p_new(state->pool, struct lmdb_verify_box, 1);
		memcpy(box->guid, guid, sizeof(box->guid));
		box->name = p_strdup_printf(state->pool,
					    "(unknown mailbox %s)", hex);
		p_array_init(&box->uids, state->pool, 64);
		p_array_init(&box->body_ids, state->pool, 64);
		p_array_init(&box->expunge_uids, state->pool, 4);
		hash_table_insert(state->boxes, p_strdup(state->pool, hex), box);
		array_push_back(&state->box_list, &box);
	}
	return box;
}

static void lmdb_verify_count_ref(struct lmdb_verify_state *state,
				  uint64_t body_id)
{
	uintptr_t n = POINTER_CAST_TO(hash_table_lookup(state->refs,
		POINTER_CAST(body_id)), uintptr_t);

	hash_table_update(state->refs, POINTER_CAST(body_id),
			  POINTER_CAST(n + 1));
}

void lmdb_verify_quarantine_link(struct lmdb_verify_state *state,
				 struct lmdb_verify_box *box,
				 const void *key, uint32_t uid)
{
	buffer_t *buf = buffer_create_dynamic(state->pool, LMDB_LINK_KEY_SIZE);

	buffer_append(buf, key, LMDB_LINK_KEY_SIZE);
	array_push_back(&state->quarantine_links, &buf);
	array_push_back(&box->expunge_uids, &uid);
}

int lmdb_verify_scan_mailboxes(struct lmdb_verify_state *state,
			       MDB_txn *txn)
{
	struct lmdb_env *env = state->storage->env;
	struct lmdb_mailbox_record mrec;
	struct lmdb_verify_box *box;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	int ret;

	if ((ret = mdb_cursor_open(txn, env->dbi_mailboxes, &cursor)) != 0)
		return ret;
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) T_BEGIN {
		if (key.mv_size != GUID_128_SIZE) {
			lmdb_verify_report(state, "-", 0, 0,
					   "mailbox record with a malformed key");
		} else if (!lmdb_mailbox_record_decode(key.mv_data,
				val.mv_data, val.mv_size, state->pool, &mrec,
				&error)) {
			/* the next sync of the mailbox rewrites it from
			   its index (lmdb_mailbox_get_repair()) */
			lmdb_verify_report(state, "-", 0, 0, t_strdup_printf(
				"damaged mailbox record %s: %s (the mailbox's "
				"next sync rewrites it)",
				guid_128_to_string(key.mv_data), error));
		} else {
			box = lmdb_verify_box_get(state, key.mv_data);
			box->name = mrec.name;
			box->active = mrec.state == LMDB_MAILBOX_STATE_ACTIVE;
		}
	} T_END;
	mdb_cursor_close(cursor);
	return ret == MDB_NOTFOUND ? 0 : ret;
}

/* RFC 1939: a UIDL is unique in its mailbox. Two links sharing one are
   reported, not changed: either may be what a client has seen. */
static void lmdb_verify_uidl(struct lmdb_verify_state *state,
			     struct lmdb_verify_box *box, uint32_t uid,
			     const char *uidl)
{
	const char *key = t_strdup_printf("%s %s",
					  guid_128_to_string(box->guid), uidl);
	void *first = hash_table_lookup(state->uidls, key);

	hash_table_insert(state->uidl_holders,
			  p_strdup_printf(state->pool, "%s %u", key, uid),
			  POINTER_CAST(1));

	if (first == NULL) {
		hash_table_insert(state->uidls, p_strdup(state->pool, key),
				  POINTER_CAST(uid));
		return;
	}
	lmdb_verify_report(state, box->name, uid, 0, t_strdup_printf(
		"POP3 UIDL %s is also uid %u's", uidl,
		POINTER_CAST_TO(first, uint32_t)));
}

/* The UIDL index must have an entry for every link holding a UIDL, and
   no other. */
int lmdb_verify_scan_uidls(struct lmdb_verify_state *state,
			   MDB_txn *txn)
{
	struct lmdb_env *env = state->storage->env;
	const unsigned char *p;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	unsigned int entries = 0;
	size_t len;
	int ret;

	if ((ret = mdb_cursor_open(txn, env->dbi_uidls, &cursor)) != 0)
		return ret;
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) T_BEGIN {
		entries++;
		p = key.mv_data;
		len = key.mv_size;
		if (len <= GUID_128_SIZE + 1 + 4 || p[len - 5] != '\0' ||
		    !lmdb_uidls_value_check(key.mv_data, key.mv_size,
					    val.mv_data, val.mv_size,
					    &error) ||
		    hash_table_lookup(state->uidl_holders, t_strdup_printf(
				"%s %s %u", guid_128_to_string(p),
				t_strndup(p + GUID_128_SIZE,
					  len - GUID_128_SIZE - 5),
				be32_to_cpu_unaligned(p + len - 4))) == NULL)
			state->uidls_rebuild = TRUE;
	} T_END;
	mdb_cursor_close(cursor);
	if (entries != hash_table_count(state->uidl_holders))
		state->uidls_rebuild = TRUE;
	if (state->uidls_rebuild) {
		lmdb_verify_report(state, "-", 0, 0, state->cmd->repair ?
			"the POP3 UIDL index doesn't match the links (rebuilt)" :
			"the POP3 UIDL index doesn't match the links");
	}
	return ret == MDB_NOTFOUND ? 0 : ret;
}

int lmdb_verify_scan_links(struct lmdb_verify_state *state,
			   MDB_txn *txn)
{
	struct lmdb_env *env = state->storage->env;
	struct lmdb_link_record link;
	struct lmdb_verify_box *box;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	guid_128_t guid;
	uint32_t uid;
	int ret;

	if ((ret = mdb_cursor_open(txn, env->dbi_links, &cursor)) != 0)
		return ret;
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) T_BEGIN {
		if (!lmdb_link_key_decode(key.mv_data, key.mv_size,
					  guid, &uid)) {
			lmdb_verify_report(state, "-", 0, 0,
					   "link with a malformed key");
		} else if (!lmdb_link_record_decode(guid, uid, val.mv_data,
				val.mv_size, pool_datastack_create(), &link,
				&error)) {
			box = lmdb_verify_box_get(state, guid);
			lmdb_verify_report(state, box->name, uid, 0,
				t_strdup_printf("damaged link: %s%s", error,
					state->cmd->repair ?
					" (quarantined)" : ""));
			lmdb_verify_quarantine_link(state, box, key.mv_data,
						    uid);
		} else {
			box = lmdb_verify_box_get(state, guid);
			array_push_back(&box->uids, &uid);
			array_push_back(&box->body_ids, &link.body_id);
			lmdb_verify_count_ref(state, link.body_id);
			if (link.pop3_uidl[0] != '\0')
				lmdb_verify_uidl(state, box, uid, link.pop3_uidl);
		}
	} T_END;
	mdb_cursor_close(cursor);
	return ret == MDB_NOTFOUND ? 0 : ret;
}

int lmdb_verify_scan_gc(struct lmdb_verify_state *state, MDB_txn *txn)
{
	struct lmdb_env *env = state->storage->env;
	enum lmdb_gc_kind kind;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	buffer_t *buf;
	int64_t since;
	uint64_t body_id;
	int ret;

	if ((ret = mdb_cursor_open(txn, env->dbi_gc, &cursor)) != 0)
		return ret;
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		if (lmdb_gc_key_decode(key.mv_data, key.mv_size, &kind,
				       &since, &body_id) &&
		    lmdb_gc_value_check(key.mv_data, val.mv_data, val.mv_size,
					&error))
			continue;
		lmdb_verify_report(state, "-", 0, 0, state->cmd->repair ?
				   "damaged gc entry (removed)" :
				   "damaged gc entry");
		buf = buffer_create_dynamic(state->pool, key.mv_size);
		buffer_append(buf, key.mv_data, key.mv_size);
		array_push_back(&state->junk_gc_keys, &buf);
	}
	mdb_cursor_close(cursor);
	return ret == MDB_NOTFOUND ? 0 : ret;
}
