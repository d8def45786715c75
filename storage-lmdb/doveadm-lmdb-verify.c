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

/* doveadm lmdb verify [-r]: every record's checksum, every body's chunks
   and SHA-256, every reference count, the env record's counters, the gc
   entries, and every mailbox's index against its links. In one pass per
   DBI plus one per mailbox: hash tables, never a search per record.

   -r repairs what can be repaired and quarantines what can't:
   - reference counts, counters and gc entries are set to what the
     records say;
   - a damaged body record whose chunks are whole is rebuilt from them
     (its message GUID is new: the old one is lost with the record);
   - a damaged link, or a link to a body that is gone, is moved into the
     quarantine and its index record expunged: nothing can read it;
   - an index record without a link is expunged, as force-resync would.
   A body with damaged chunks is reported, not changed: reading it fails
   cleanly, and its intact chunks stay for salvage. */

static void lmdb_verify_report(struct lmdb_verify_state *state,
			       const char *mailbox, uint32_t uid,
			       uint64_t body_id, const char *problem)
{
	state->cmd->problems++;
	doveadm_print(mailbox);
	doveadm_print(uid == 0 ? "-" : dec2str(uid));
	doveadm_print(body_id == 0 ? "-" : dec2str(body_id));
	doveadm_print(problem);
}

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

static void lmdb_verify_quarantine_link(struct lmdb_verify_state *state,
					struct lmdb_verify_box *box,
					const void *key, uint32_t uid)
{
	buffer_t *buf = buffer_create_dynamic(state->pool, LMDB_LINK_KEY_SIZE);

	buffer_append(buf, key, LMDB_LINK_KEY_SIZE);
	array_push_back(&state->quarantine_links, &buf);
	array_push_back(&box->expunge_uids, &uid);
}

static int lmdb_verify_scan_mailboxes(struct lmdb_verify_state *state,
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
static int lmdb_verify_scan_uidls(struct lmdb_verify_state *state,
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

static int lmdb_verify_scan_links(struct lmdb_verify_state *state,
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

static int lmdb_verify_scan_gc(struct lmdb_verify_state *state, MDB_txn *txn)
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
		lmdb_verify_report(state, "-", 0, body_id, t_strdup_printf(
			"refcount %u but %lu links%s", rec.refcount,
			(unsigned long)links,
			state->cmd->repair ? " (fixed)" : ""));
		array_push_back(&state->refcount_fixes, &body_id);
	} else if (rec.state != LMDB_BODY_STATE_LINKED &&
		   !lmdb_verify_has_gc_key(env, txn, &rec, body_id)) {
		lmdb_verify_report(state, "-", 0, body_id, t_strdup_printf(
			"%s body without a gc entry (never freed)%s",
			rec.state == LMDB_BODY_STATE_PENDING ? "pending" : "dead",
			state->cmd->repair ? " (added)" : ""));
		array_push_back(&state->gc_missing, &body_id);
	}
}

static int lmdb_verify_bodies(struct lmdb_verify_state *state)
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
	return 0;
}

static void lmdb_verify_dangling_links(struct lmdb_verify_state *state)
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
			lmdb_verify_report(state, vbox->name, uids[i],
				body_ids[i], uids[i] >= hdr->next_uid ?
				"link not yet in the index (sync adopts it)" :
				"link without an index record");
		}
		if (i < count && uids[i] == uid) {
			i++;
			continue;
		}
		if (lmdb_verify_uid_quarantined(vbox, uid))
			continue;
		lmdb_verify_report(state, vbox->name, uid, 0,
				   state->cmd->repair ?
				   "index record without a link (expunged)" :
				   "index record without a link");
		array_push_back(&vbox->expunge_uids, &uid);
	}
	for (; i < count; i++) {
		lmdb_verify_report(state, vbox->name, uids[i], body_ids[i],
			uids[i] >= hdr->next_uid ?
			"link not yet in the index (sync adopts it)" :
			"link without an index record");
	}
	mailbox_free(&box);
}

static void lmdb_verify_mailboxes(struct lmdb_verify_state *state,
				  struct mail_user *user)
{
	struct mail_namespace *ns = mail_namespace_find_inbox(user->namespaces);
	struct lmdb_verify_box *box;

	array_foreach_elem(&state->box_list, box) T_BEGIN {
		if (box->active)
			lmdb_verify_mailbox(state, ns, box);
	} T_END;
}

static int
lmdb_cmd_verify_run(struct doveadm_mail_cmd_context *_ctx,
		    struct mail_user *user)
{
	struct lmdb_verify_cmd_context *ctx =
		container_of(_ctx, struct lmdb_verify_cmd_context, ctx);
	struct lmdb_verify_state state;
	struct lmdb_env_record env_rec, counted;
	MDB_txn *txn;
	const char *error = NULL;
	int ret;

	i_zero(&state);
	state.cmd = ctx;
	state.storage = doveadm_lmdb_get_storage(_ctx, user);
	if (state.storage == NULL)
		return -1;
	state.pool = pool_alloconly_create("lmdb verify", 16384);
	hash_table_create(&state.boxes, state.pool, 16, str_hash, strcmp);
	p_array_init(&state.box_list, state.pool, 16);
	hash_table_create_direct(&state.refs, state.pool, 1024);
	hash_table_create_direct(&state.bodies_seen, state.pool, 1024);
	hash_table_create(&state.uidls, state.pool, 1024, str_hash, strcmp);
	hash_table_create(&state.uidl_holders, state.pool, 1024, str_hash,
			  strcmp);
	p_array_init(&state.refcount_fixes, state.pool, 16);
	p_array_init(&state.rebuild_bodies, state.pool, 4);
	p_array_init(&state.gc_missing, state.pool, 4);
	p_array_init(&state.quarantine_links, state.pool, 4);
	p_array_init(&state.junk_gc_keys, state.pool, 4);

	ret = lmdb_env_read_begin(state.storage->env, &txn, &error);
	if (ret == 0) {
		if ((ret = lmdb_verify_scan_mailboxes(&state, txn)) == 0 &&
		    (ret = lmdb_verify_scan_links(&state, txn)) == 0 &&
		    (ret = lmdb_verify_scan_uidls(&state, txn)) == 0)
			ret = lmdb_verify_scan_gc(&state, txn);
		if (ret != 0)
			error = mdb_strerror(ret);
		else if (lmdb_env_record_get(state.storage->env, txn,
					     &env_rec, &error) != 0)
			ret = -1;
		else {
			counted = env_rec;
			if (lmdb_schema_recount(state.storage->env, txn,
						&counted, &error) != 0)
				ret = -1;
		}
		lmdb_env_read_end(state.storage->env, &txn);
	}
	if (ret != 0) {
		i_error("lmdb verify: %s (a damaged B-tree page: run doveadm "
			"lmdb salvage)", error);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		pool_unref(&state.pool);
		return -1;
	}
	lmdb_verify_mailboxes(&state, user);
	if (lmdb_verify_bodies(&state) < 0) {
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		ret = -1;
	}
	lmdb_verify_dangling_links(&state);
	if (ret == 0 && memcmp(&counted, &env_rec, sizeof(counted)) != 0) {
		lmdb_verify_report(&state, "-", 0, 0, t_strdup_printf(
			"env record counts %"PRIu64" messages of %"PRIu64
			" bytes, %"PRIu64" bodies of %"PRIu64" bytes; the "
			"records: %"PRIu64", %"PRIu64", %"PRIu64", %"PRIu64"%s",
			env_rec.links, env_rec.link_vsize_bytes,
			env_rec.bodies, env_rec.body_bytes, counted.links,
			counted.link_vsize_bytes, counted.bodies,
			counted.body_bytes, ctx->repair ? " (fixed)" : ""));
	}

	if (ctx->repair && ctx->problems > 0 && ret == 0) {
		if (lmdb_env_write(state.storage->env, lmdb_repair_txn, &state,
				   TRUE, &error) != 0) {
			i_error("lmdb verify: repair failed: %s", error);
			ret = -1;
		} else {
			i_info("lmdb verify: %u repaired, %u quarantined",
			       state.repaired, state.quarantined);
			if (lmdb_repair_index(&state, user) < 0)
				ret = -1;
		}
	}
	if (ctx->problems > 0 && !ctx->repair)
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_NOTPOSSIBLE);
	hash_table_destroy(&state.refs);
	hash_table_destroy(&state.bodies_seen);
	hash_table_destroy(&state.uidls);
	hash_table_destroy(&state.uidl_holders);
	hash_table_destroy(&state.boxes);
	pool_unref(&state.pool);
	return ret;
}

static void lmdb_cmd_verify_init(struct doveadm_mail_cmd_context *ctx ATTR_UNUSED,
				 const char *const args[] ATTR_UNUSED)
{
	doveadm_print_header_simple("mailbox");
	doveadm_print_header_simple("uid");
	doveadm_print_header_simple("body");
	doveadm_print_header_simple("problem");
}

static bool lmdb_cmd_verify_parse_arg(struct doveadm_mail_cmd_context *_ctx,
				      int c)
{
	struct lmdb_verify_cmd_context *ctx =
		container_of(_ctx, struct lmdb_verify_cmd_context, ctx);

	if (c != 'r')
		return FALSE;
	ctx->repair = TRUE;
	return TRUE;
}

struct doveadm_mail_cmd_context *doveadm_lmdb_cmd_verify_alloc(void)
{
	struct lmdb_verify_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct lmdb_verify_cmd_context);
	ctx->ctx.getopt_args = "r";
	ctx->ctx.v.parse_arg = lmdb_cmd_verify_parse_arg;
	ctx->ctx.v.run = lmdb_cmd_verify_run;
	ctx->ctx.v.init = lmdb_cmd_verify_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TAB);
	return &ctx->ctx;
}
