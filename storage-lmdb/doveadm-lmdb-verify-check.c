/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "ioloop.h"
#include "str.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-quarantine.h"
#include "lmdb-storage.h"
#include "doveadm-lmdb-verify.h"

/* What the scan found, checked: each body against its chunks, its
   links and the gc, each link against its body, each mailbox's index
   against its links. */

/* Is there a gc entry for a PENDING or DEAD body? */
static bool lmdb_verify_has_gc_key(struct lmdb_env *env, MDB_txn *txn,
				   const struct lmdb_body_record *rec,
				   uint64_t body_id)
{
	unsigned char key_data[LMDB_GC_KEY_SIZE];
	MDB_val key, val;

	lmdb_gc_key_encode(rec->state == LMDB_BODY_STATE_PENDING ?
			   LMDB_GC_KIND_PENDING : LMDB_GC_KIND_DEAD,
			   rec->state_since, body_id, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	return mdb_get(txn, env->dbi_gc, &key, &val) == 0;
}

/* "INBOX uid 2, Other uid 7": where a damaged body is used. One pass
   over the links: damage is rare. */
static const char *
lmdb_verify_body_users(struct lmdb_verify_state *state, uint64_t body_id)
{
	struct lmdb_verify_box *box;
	const uint32_t *uids;
	const uint64_t *body_ids;
	unsigned int i, count;
	string_t *str = t_str_new(64);

	array_foreach_elem(&state->box_list, box) {
		uids = array_get(&box->uids, &count);
		body_ids = array_get(&box->body_ids, &count);
		for (i = 0; i < count; i++) {
			if (body_ids[i] != body_id)
				continue;
			if (str_len(str) > 0)
				str_append(str, ", ");
			str_printfa(str, "%s uid %u", box->name, uids[i]);
		}
	}
	return str_len(str) == 0 ? "no links" : str_c(str);
}

static void lmdb_verify_body(struct lmdb_verify_state *state, MDB_txn *txn,
			     uint64_t body_id)
{
	struct lmdb_env *env = state->storage->env;
	struct lmdb_body_record rec;
	const char *error;
	uintptr_t links;
	int ret;

	links = POINTER_CAST_TO(hash_table_lookup(state->refs,
		POINTER_CAST(body_id)), uintptr_t);
	hash_table_update(state->bodies_seen, POINTER_CAST(body_id),
			  POINTER_CAST(1));
	ret = lmdb_body_lookup(env, txn, body_id, pool_datastack_create(),
			       &rec, &error);
	if (ret <= 0) {
		lmdb_verify_report(state, "-", 0, body_id, t_strdup_printf(
			"%s%s", ret < 0 ? error : "body vanished during verify",
			state->cmd->repair && ret < 0 ?
			" (rebuilt from its chunks if they are whole)" : ""));
		if (ret < 0)
			array_push_back(&state->rebuild_bodies, &body_id);
		return;
	}
	if (rec.state == LMDB_BODY_STATE_LINKED &&
	    (ret = lmdb_body_verify(env, body_id, &rec, TRUE, &error)) <= 0) {
		lmdb_verify_report(state, "-", 0, body_id, t_strdup_printf(
			"damaged body (GUID %s, used by %s): %s (reading it "
			"fails; its intact chunks stay for salvage)", rec.guid,
			lmdb_verify_body_users(state, body_id), error));
	}
	if (rec.refcount != links &&
	    !(rec.state == LMDB_BODY_STATE_PENDING && links == 0)) {
		/* links were counted in an earlier snapshot: mail saved,
		   copied or expunged since then differs without damage */
		array_push_back(&state->refcount_suspects, &body_id);
	} else if (rec.state != LMDB_BODY_STATE_LINKED &&
		   !lmdb_verify_has_gc_key(env, txn, &rec, body_id)) {
		lmdb_verify_report(state, "-", 0, body_id, t_strdup_printf(
			"%s body without a gc entry (never freed)%s",
			rec.state == LMDB_BODY_STATE_PENDING ? "pending" : "dead",
			state->cmd->repair ? " (added)" : ""));
		array_push_back(&state->gc_missing, &body_id);
	}
}

/* Reference counts that differed from the first snapshot's link counts,
   compared again with links and body records read in one snapshot. */
static int lmdb_verify_refcounts(struct lmdb_verify_state *state)
{
	struct lmdb_env *env = state->storage->env;
	struct lmdb_body_record rec;
	const uint64_t *idp;
	MDB_txn *txn;
	const char *error;
	unsigned int links;
	uintptr_t n;
	int ret;

	if (array_count(&state->refcount_suspects) == 0)
		return 0;
	if (lmdb_env_read_begin(env, &txn, &error) < 0) {
		i_error("lmdb verify: %s", error);
		return -1;
	}
	hash_table_clear(state->link_counts, TRUE);
	array_foreach(&state->refcount_suspects, idp) {
		hash_table_update(state->link_counts, POINTER_CAST(*idp),
				  POINTER_CAST(1));
	}
	if ((ret = lmdb_repair_count_links(env, txn, state->link_counts,
					   &error)) != 0) {
		lmdb_env_read_end(env, &txn);
		i_error("lmdb verify: %s", error);
		return -1;
	}
	array_foreach(&state->refcount_suspects, idp) T_BEGIN {
		n = POINTER_CAST_TO(hash_table_lookup(state->link_counts,
			POINTER_CAST(*idp)), uintptr_t);
		links = n - 1;
		if (lmdb_body_lookup(env, txn, *idp, pool_datastack_create(),
				     &rec, &error) > 0 &&
		    rec.refcount != links &&
		    !(rec.state == LMDB_BODY_STATE_PENDING && links == 0)) {
			lmdb_verify_report(state, "-", 0, *idp, t_strdup_printf(
				"refcount %u but %u links%s", rec.refcount,
				links, state->cmd->repair ? " (fixed)" : ""));
			array_push_back(&state->refcount_fixes, idp);
		}
	} T_END;
	lmdb_env_read_end(env, &txn);
	return 0;
}

int lmdb_verify_bodies(struct lmdb_verify_state *state)
{
	struct lmdb_env *env = state->storage->env;
	ARRAY(uint64_t) ids;
	const uint64_t *idp;
	MDB_txn *txn;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	uint64_t body_id;
	unsigned int i, count;
	int ret;

	/* ids first: each body is verified in a read transaction of its
	   own, batches of them, so no snapshot is held for the whole run */
	p_array_init(&ids, state->pool, 256);
	if (lmdb_env_read_begin(env, &txn, &error) < 0) {
		i_error("lmdb verify: %s", error);
		return -1;
	}
	ret = mdb_cursor_open(txn, env->dbi_bodies, &cursor);
	while (ret == 0 &&
	       (ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		if (lmdb_body_id_decode(key.mv_data, key.mv_size, &body_id))
			array_push_back(&ids, &body_id);
		else {
			lmdb_verify_report(state, "-", 0, 0,
					   "body with a malformed key");
		}
	}
	if (ret == MDB_NOTFOUND)
		mdb_cursor_close(cursor);
	lmdb_env_read_end(env, &txn);
	if (ret != MDB_NOTFOUND) {
		i_error("lmdb verify: iterating bodies failed: %s",
			mdb_strerror(ret));
		return -1;
	}
	idp = array_get(&ids, &count);
	for (i = 0; i < count; ) {
		if (lmdb_env_read_begin(env, &txn, &error) < 0) {
			i_error("lmdb verify: %s", error);
			return -1;
		}
		for (unsigned int n = 0; n < 256 && i < count; n++, i++) T_BEGIN {
			lmdb_verify_body(state, txn, idp[i]);
		} T_END;
		lmdb_env_read_end(env, &txn);
	}
	return lmdb_verify_refcounts(state);
}

void lmdb_verify_dangling_links(struct lmdb_verify_state *state)
{
	struct lmdb_verify_box *box;
	const uint32_t *uids;
	const uint64_t *body_ids;
	unsigned char key[LMDB_LINK_KEY_SIZE];
	unsigned int i, count;

	array_foreach_elem(&state->box_list, box) {
		uids = array_get(&box->uids, &count);
		body_ids = array_get(&box->body_ids, &count);
		for (i = 0; i < count; i++) {
			if (hash_table_lookup(state->bodies_seen,
					POINTER_CAST(body_ids[i])) != NULL)
				continue;
			lmdb_verify_report(state, box->name, uids[i],
				body_ids[i], state->cmd->repair ?
				"link to a missing body (quarantined)" :
				"link to a missing body");
			lmdb_link_key_encode(box->guid, uids[i], key);
			lmdb_verify_quarantine_link(state, box, key, uids[i]);
		}
	}
}

bool lmdb_verify_uid_quarantined(const struct lmdb_verify_box *box,
					uint32_t uid)
{
	const uint32_t *qp;

	/* few: only damaged links end up here */
	array_foreach(&box->expunge_uids, qp) {
		if (*qp == uid)
			return TRUE;
	}
	return FALSE;
}

/* Whether the mailbox has a link with the UID now (1, also if it is
   damaged), not (0), or it can't be told (-1). The links were listed in
   a snapshot taken before the index was read: mail saved or expunged
   since is neither reported nor repaired as damage. */
int lmdb_verify_link_now(struct lmdb_verify_state *state,
			 const guid_128_t mailbox_guid, uint32_t uid)
{
	struct lmdb_env *env = state->storage->env;
	struct lmdb_link_record rec;
	MDB_txn *txn;
	const char *error;
	int ret;

	if (lmdb_env_read_begin(env, &txn, &error) < 0) {
		i_error("lmdb verify: %s", error);
		return -1;
	}
	ret = lmdb_link_get(env, txn, mailbox_guid, uid,
			    pool_datastack_create(), &rec, &error);
	lmdb_env_read_end(env, &txn);
	if (ret == -1) {
		i_error("lmdb verify: %s", error);
		return -1;
	}
	return ret == 0 ? 0 : 1;
}

/* Compare a mailbox's index with its links: both are in UID order. */
static void lmdb_verify_mailbox(struct lmdb_verify_state *state,
				struct mail_namespace *ns,
				struct lmdb_verify_box *vbox)
{
	struct mailbox *box;
	const struct mail_index_header *hdr;
	const uint32_t *uids;
	const uint64_t *body_ids;
	unsigned int i = 0, count;
	uint32_t seq, uid, msgs;

	box = mailbox_alloc(ns->list, vbox->name, MAILBOX_FLAG_IGNORE_ACLS);
	if (mailbox_open(box) < 0 || mailbox_sync(box, 0) < 0) {
		lmdb_verify_report(state, vbox->name, 0, 0, t_strdup_printf(
			"can't open mailbox: %s",
			mailbox_get_last_internal_error(box, NULL)));
		mailbox_free(&box);
		return;
	}
	if (!guid_128_equals(LMDB_MAILBOX(box)->mailbox_guid, vbox->guid)) {
		/* another mailbox has the name now */
		mailbox_free(&box);
		return;
	}
	hdr = mail_index_get_header(box->view);
	msgs = mail_index_view_get_messages_count(box->view);
	uids = array_get(&vbox->uids, &count);
	body_ids = array_get(&vbox->body_ids, &count);
	for (seq = 1; seq <= msgs; seq++) {
		mail_index_lookup_uid(box->view, seq, &uid);
		for (; i < count && uids[i] < uid; i++) {
			if (lmdb_verify_link_now(state, vbox->guid,
						 uids[i]) == 0)
				continue;
			lmdb_verify_report(state, vbox->name, uids[i],
				body_ids[i], uids[i] >= hdr->next_uid ?
				"link not yet in the index (sync adopts it)" :
				"link without an index record");
		}
		if (i < count && uids[i] == uid) {
			i++;
			continue;
		}
		if (lmdb_verify_uid_quarantined(vbox, uid) ||
		    lmdb_verify_link_now(state, vbox->guid, uid) != 0)
			continue;
		lmdb_verify_report(state, vbox->name, uid, 0,
				   state->cmd->repair ?
				   "index record without a link (expunged)" :
				   "index record without a link");
		array_push_back(&vbox->expunge_uids, &uid);
	}
	for (; i < count; i++) {
		if (lmdb_verify_link_now(state, vbox->guid, uids[i]) == 0)
			continue;
		lmdb_verify_report(state, vbox->name, uids[i], body_ids[i],
			uids[i] >= hdr->next_uid ?
			"link not yet in the index (sync adopts it)" :
			"link without an index record");
	}
	mailbox_free(&box);
}

void lmdb_verify_mailboxes(struct lmdb_verify_state *state,
			   struct mail_user *user)
{
	struct mail_namespace *ns = mail_namespace_find_inbox(user->namespaces);
	struct lmdb_verify_box *box;

	array_foreach_elem(&state->box_list, box) T_BEGIN {
		if (box->active)
			lmdb_verify_mailbox(state, ns, box);
	} T_END;
}
