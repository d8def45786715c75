/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "ioloop.h"
#include "str.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "doveadm-mail.h"
#include "doveadm-print.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-quarantine.h"
#include "lmdb-schema.h"
#include "lmdb-uidls.h"
#include "lmdb-storage.h"
#include "doveadm-lmdb.h"
#include "doveadm-lmdb-verify.h"

/* doveadm lmdb verify -r: repair what can be repaired, quarantine what
   can't (see doveadm-lmdb-verify.c for the rules). verify -r may run while
   the user's sessions deliver, copy and expunge: verify's findings come
   from snapshots taken before this transaction, so every change that
   depends on how many links exist counts them again here. */

int lmdb_repair_count_links(struct lmdb_env *env, MDB_txn *txn,
			    HASH_TABLE_TYPE(lmdb_link_counts) counts,
			    const char **error_r)
{
	struct lmdb_link_record link;
	MDB_cursor *cursor;
	MDB_val key, val;
	guid_128_t guid;
	const char *error;
	uintptr_t n;
	uint32_t uid;
	int ret;

	if (hash_table_count(counts) == 0)
		return 0;
	if ((ret = mdb_cursor_open(txn, env->dbi_links, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(links) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) T_BEGIN {
		/* a damaged link counts for nothing: it is quarantined, and
		   its body must not stay alive for it */
		if (lmdb_link_key_decode(key.mv_data, key.mv_size, guid, &uid) &&
		    lmdb_link_record_decode(guid, uid, val.mv_data, val.mv_size,
					    pool_datastack_create(), &link,
					    &error)) {
			n = POINTER_CAST_TO(hash_table_lookup(counts,
				POINTER_CAST(link.body_id)), uintptr_t);
			if (n != 0) {
				hash_table_update(counts,
					POINTER_CAST(link.body_id),
					POINTER_CAST(n + 1));
			}
		}
	} T_END;
	mdb_cursor_close(cursor);
	if (ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("counting links failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	return 0;
}

static unsigned int
lmdb_repair_links_of(HASH_TABLE_TYPE(lmdb_link_counts) counts,
		     uint64_t body_id)
{
	uintptr_t n = POINTER_CAST_TO(hash_table_lookup(counts,
		POINTER_CAST(body_id)), uintptr_t);

	i_assert(n > 0);
	return n - 1;
}

static void lmdb_repair_note(struct lmdb_verify_state *state,
			     const char *what)
{
	i_info("lmdb verify: %s", what);
}

/* The links that use a body, as LMDB link keys. */
static void lmdb_repair_body_links(struct lmdb_verify_state *state,
				   uint64_t body_id,
				   ARRAY_TYPE(uint32_t) *uids_r,
				   ARRAY_TYPE(lmdb_verify_box) *boxes_r)
{
	struct lmdb_verify_box *box;
	const uint64_t *body_ids;
	const uint32_t *uids;
	unsigned int i, count;

	array_foreach_elem(&state->box_list, box) {
		uids = array_get(&box->uids, &count);
		body_ids = array_get(&box->body_ids, &count);
		for (i = 0; i < count; i++) {
			if (body_ids[i] == body_id) {
				array_push_back(uids_r, &uids[i]);
				array_push_back(boxes_r, &box);
			}
		}
	}
}

int lmdb_repair_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_verify_state *state = context;
	struct lmdb_env *env = state->storage->env;
	struct lmdb_body_record rec;
	struct lmdb_env_record env_rec, counted;
	ARRAY_TYPE(uint32_t) uids;
	ARRAY_TYPE(lmdb_verify_box) boxes;
	unsigned char key[LMDB_LINK_KEY_SIZE], body_key[LMDB_BODY_ID_SIZE];
	const uint64_t *idp;
	buffer_t *const *bufp;
	const char *error;
	unsigned int i, links;
	MDB_val k;
	int ret;

	/* this may run again after the map grew: count afresh */
	state->repaired = state->quarantined = 0;
	hash_table_clear(state->link_counts, TRUE);
	array_foreach(&state->rebuild_bodies, idp) {
		hash_table_update(state->link_counts, POINTER_CAST(*idp),
				  POINTER_CAST(1));
	}
	array_foreach(&state->refcount_fixes, idp) {
		hash_table_update(state->link_counts, POINTER_CAST(*idp),
				  POINTER_CAST(1));
	}
	if ((ret = lmdb_repair_count_links(env, txn, state->link_counts,
					   error_r)) != 0)
		return ret;
	array_foreach(&state->quarantine_links, bufp) {
		if ((ret = lmdb_quarantine_move(env, txn, env->dbi_links,
				"links", (*bufp)->data, (*bufp)->used,
				"damaged, or its body is missing", ioloop_time,
				error_r)) != 0)
			return ret;
		state->quarantined++;
	}
	array_foreach(&state->junk_gc_keys, bufp) {
		k.mv_data = (void *)(*bufp)->data;
		k.mv_size = (*bufp)->used;
		ret = mdb_del(txn, env->dbi_gc, &k, NULL);
		if (ret != 0 && ret != MDB_NOTFOUND) {
			*error_r = mdb_strerror(ret);
			return ret;
		}
		state->repaired++;
	}
	array_foreach(&state->rebuild_bodies, idp) {
		links = lmdb_repair_links_of(state->link_counts, *idp);
		ret = lmdb_body_rebuild(env, txn, *idp, links, ioloop_time,
					&error);
		if (ret < 0) {
			*error_r = error;
			return EIO;
		}
		if (ret > 0) {
			state->repaired++;
			continue;
		}
		/* nothing to rebuild it from: the record and every link
		   to it go into the quarantine (the index records go after
		   this transaction) */
		lmdb_repair_note(state, t_strdup_printf(
			"body %"PRIu64" can't be rebuilt (%s): quarantined "
			"with its links", *idp, error));
		lmdb_body_id_encode(*idp, body_key);
		if ((ret = lmdb_quarantine_move(env, txn, env->dbi_bodies,
				"bodies", body_key, sizeof(body_key),
				"damaged record, chunks not whole", ioloop_time,
				error_r)) != 0)
			return ret;
		t_array_init(&uids, 4);
		t_array_init(&boxes, 4);
		lmdb_repair_body_links(state, *idp, &uids, &boxes);
		for (i = 0; i < array_count(&uids); i++) {
			struct lmdb_verify_box *box =
				*array_idx(&boxes, i);
			uint32_t uid = *array_idx(&uids, i);

			lmdb_link_key_encode(box->guid, uid, key);
			if ((ret = lmdb_quarantine_move(env, txn,
					env->dbi_links, "links", key,
					sizeof(key), "its body was damaged",
					ioloop_time, error_r)) != 0)
				return ret;
			if (!lmdb_verify_uid_quarantined(box, uid))
				array_push_back(&box->expunge_uids, &uid);
		}
		state->quarantined++;
	}
	array_foreach(&state->refcount_fixes, idp) {
		links = lmdb_repair_links_of(state->link_counts, *idp);
		ret = lmdb_body_lookup(env, txn, *idp, pool_datastack_create(),
				       &rec, error_r);
		if (ret <= 0 || rec.refcount == links)
			continue;
		/* lmdb_body_ref moves the state (and gc entries) along; a
		   body without links becomes DEAD, purge frees it */
		if ((ret = lmdb_body_ref(env, txn, *idp,
					 (int)links - (int)rec.refcount,
					 ioloop_time, NULL, error_r)) != 0)
			return ret;
		state->repaired++;
	}
	array_foreach(&state->gc_missing, idp) {
		if ((ret = lmdb_body_restore_gc_entry(env, txn, *idp,
						      error_r)) != 0)
			return ret;
		state->repaired++;
	}
	/* after the quarantine, from the links that are left */
	if (state->uidls_rebuild || array_count(&state->quarantine_links) > 0 ||
	    array_count(&state->rebuild_bodies) > 0) {
		unsigned int duplicates;

		if ((ret = lmdb_uidls_rebuild(env, txn, &duplicates,
					      error_r)) != 0)
			return ret;
		state->repaired++;
	}
	/* the counters, as the records say after the repairs above */
	if ((ret = lmdb_env_record_get(env, txn, &env_rec, error_r)) != 0)
		return ret;
	counted = env_rec;
	if ((ret = lmdb_schema_recount(env, txn, &counted, error_r)) != 0)
		return ret;
	if (memcmp(&counted, &env_rec, sizeof(counted)) != 0) {
		if ((ret = lmdb_env_record_put(env, txn, &counted,
					       error_r)) != 0)
			return ret;
		state->repaired++;
	}
	return 0;
}

/* Index records of quarantined links, and index records without a link:
   nothing can read them. Expunged through Dovecot, after the LMDB
   transaction. */
int lmdb_repair_index(struct lmdb_verify_state *state,
		      struct mail_user *user)
{
	struct mail_namespace *ns = mail_namespace_find_inbox(user->namespaces);
	struct lmdb_verify_box *vbox;
	struct mailbox *box;
	struct mailbox_transaction_context *trans;
	struct mail *mail;
	const uint32_t *uidp;
	int ret = 0;

	array_foreach_elem(&state->box_list, vbox) {
		if (!vbox->active || array_count(&vbox->expunge_uids) == 0)
			continue;
		box = mailbox_alloc(ns->list, vbox->name,
				    MAILBOX_FLAG_IGNORE_ACLS);
		if (mailbox_open(box) < 0 ||
		    !guid_128_equals(LMDB_MAILBOX(box)->mailbox_guid,
				     vbox->guid)) {
			mailbox_free(&box);
			continue;
		}
		trans = mailbox_transaction_begin(box, 0, "lmdb verify -r");
		mail = mail_alloc(trans, 0, NULL);
		array_foreach(&vbox->expunge_uids, uidp) {
			/* only what has no link now: a message saved since
			   verify listed the links has its index record
			   without being in that list */
			if (lmdb_verify_link_now(state, vbox->guid,
						 *uidp) != 0)
				continue;
			if (mail_set_uid(mail, *uidp))
				mail_expunge(mail);
		}
		mail_free(&mail);
		if (mailbox_transaction_commit(&trans) < 0 ||
		    mailbox_sync(box, 0) < 0) {
			i_error("lmdb verify: expunging from %s failed: %s",
				vbox->name,
				mailbox_get_last_internal_error(box, NULL));
			ret = -1;
		}
		mailbox_free(&box);
	}
	return ret;
}

