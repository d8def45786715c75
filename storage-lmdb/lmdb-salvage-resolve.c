/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "str.h"
#include "sort.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-salvage-private.h"

/* After the scan, the new environment holds every readable record; here
   they are made consistent with each other, in this order:
   1. bodies whose record was lost get one from their chunks, if whole;
   2. every body is judged whole or not (chunks against its record), and
      every link to a body that is not whole is lost;
   3. the UIDs the indexes have without any link found are looked up in
      the indexes (Message-ID, UIDL, flags) and matched to whole bodies
      that lost links, by the Message-ID of their first chunk: a body
      named by exactly as many such UIDs as it lost links gets them back;
   4. bodies that lost links and still have none are linked again in a
      recovery mailbox;
   5. lost links and bodies are removed, reference counts and states
      set to the surviving links, gc entries written, links added;
   6. mailbox records: made for mailboxes that have links or an index
      but lost theirs, highest UIDs raised above every UID seen; the
      UIDL index is rebuilt;
   7. the counters are recounted and the env record written.
   Step 3 is in lmdb-salvage-match.c, steps 5 to 7 in
   lmdb-salvage-write.c. */

struct lmdb_salvage_message *
lmdb_salvage_note(struct lmdb_salvage *sv,
		  ARRAY_TYPE(lmdb_salvage_message) *msgs,
		  const guid_128_t guid, uint32_t uid, uint64_t body_id,
		  const char *message_id, const char *reason)
{
	struct lmdb_salvage_message *msg;

	msg = array_append_space(msgs);
	memcpy(msg->mailbox_guid, guid, sizeof(msg->mailbox_guid));
	msg->uid = uid;
	msg->body_id = body_id;
	msg->message_id = message_id;
	msg->reason = p_strdup(sv->result->pool, reason);
	return msg;
}

/* Bodies in id order: the order they were saved in (re-linked ones get
   their UIDs in it), and neighbours in the B-trees. */
static int lmdb_salvage_body_cmp(struct lmdb_salvage_body *const *a,
				 struct lmdb_salvage_body *const *b)
{
	return (*a)->id < (*b)->id ? -1 : ((*a)->id > (*b)->id ? 1 : 0);
}

static int lmdb_salvage_rebuild_cmp(const struct lmdb_salvage_rebuild *a,
				    const struct lmdb_salvage_rebuild *b)
{
	return lmdb_salvage_body_cmp(&a->body, &b->body);
}

/* --- 1. bodies without a record --- */

/* Do the chunks found prove that no later chunk was lost? Without its
   record a body's length is known only from its chunks: every chunk but
   the last is full, so a short chunk ends the body, but after a full one
   a chunk lost with its page can't be told from no chunk at all. Such a
   body would come back cut short (each chunk's checksum holds, and the
   SHA-256 is computed from what was found), so it is lost instead. A
   body whose size is a multiple of the chunk size is lost with it: that
   can't be told apart. */
static bool lmdb_salvage_chunks_end(const struct lmdb_salvage_body *body)
{
	/* a lone chunk: the writer's chunk size, the only one it uses */
	uint64_t full = body->chunks > 1 ? body->max_chunk_size :
		LMDB_BODY_CHUNK_SIZE;

	return body->chunk_bytes < body->chunks * full;
}

static int lmdb_salvage_rebuild_one(struct lmdb_salvage *sv, MDB_txn *txn,
				    unsigned int idx, const char **error_r)
{
	struct lmdb_salvage_rebuild *rb =
		array_idx_modifiable(&sv->resolve->rebuilds, idx);
	const char *error;
	int ret;

	/* every link to it survives if it can be rebuilt at all */
	ret = lmdb_body_rebuild(sv->env, txn, rb->body->id,
				rb->body->link_refs, sv->set->now, &error);
	if (ret < 0) {
		*error_r = error;
		return EIO;
	}
	rb->ok = ret > 0;
	rb->error = ret > 0 ? NULL : p_strdup(sv->pool, error);
	return 0;
}

static int lmdb_salvage_rebuild_bodies(struct lmdb_salvage *sv,
				       const char **error_r)
{
	struct lmdb_salvage_resolve *rs = sv->resolve;
	struct hash_iterate_context *iter;
	struct lmdb_salvage_body *body;
	struct lmdb_salvage_rebuild *rb;
	void *key;

	iter = hash_table_iterate_init(sv->bodies);
	while (hash_table_iterate(iter, sv->bodies, &key, &body)) {
		if (body->have_record || body->chunks == 0)
			continue;
		if (!lmdb_salvage_chunks_end(body)) {
			body->lost = TRUE;
			body->lost_reason = p_strdup_printf(sv->pool,
				"its record was lost and its last readable "
				"chunk (%u) is full: a later one may be lost",
				body->max_idx);
			continue;
		}
		rb = array_append_space(&rs->rebuilds);
		rb->body = body;
	}
	hash_table_iterate_deinit(&iter);
	array_sort(&rs->rebuilds, lmdb_salvage_rebuild_cmp);
	if (lmdb_salvage_in_batches(sv, array_count(&rs->rebuilds),
				    lmdb_salvage_rebuild_one, error_r) < 0)
		return -1;
	array_foreach_modifiable(&rs->rebuilds, rb) {
		if (rb->ok) {
			rb->body->rebuilt = TRUE;
			rb->body->have_record = TRUE;
			rb->body->state = rb->body->link_refs > 0 ?
				LMDB_BODY_STATE_LINKED : LMDB_BODY_STATE_DEAD;
			sv->result->bodies_rebuilt++;
		} else {
			rb->body->lost = TRUE;
			rb->body->lost_reason = p_strdup_printf(sv->pool,
				"its record was lost and can't be rebuilt "
				"from its chunks: %s", rb->error);
		}
	}
	return 0;
}

/* --- 2. whole bodies and surviving links --- */

/* Do the chunks of a body whose layout matches its record hash to the
   record's SHA-256? A schema-1 chunk's checksum covers only its data, so
   one that a damaged key put under another body or index passes every
   other check. Returns 1 if they do, 0 if not (*reason_r), -1 if LMDB
   failed. */
static int lmdb_salvage_body_digest(struct lmdb_salvage *sv,
				    const struct lmdb_salvage_body *body,
				    const char **reason_r,
				    const char **error_r)
{
	struct lmdb_body_record rec;
	const char *error;
	int ret;

	ret = lmdb_body_get(sv->env, body->id, pool_datastack_create(), &rec,
			    &error);
	if (ret == -1) {
		*error_r = error;
		return -1;
	}
	if (ret != 1) {
		*reason_r = p_strdup_printf(sv->pool, "its record can't be "
					    "read back: %s", ret == 0 ?
					    "not found" : error);
		return 0;
	}
	ret = lmdb_body_verify(sv->env, body->id, &rec, TRUE, &error);
	if (ret == -1) {
		*error_r = error;
		return -1;
	}
	if (ret == 0) {
		*reason_r = p_strdup_printf(sv->pool, "its chunks are not "
					    "the message its record "
					    "describes: %s", error);
	}
	return ret;
}

static int lmdb_salvage_judge_body(struct lmdb_salvage *sv,
				   struct lmdb_salvage_body *body,
				   const char **error_r)
{
	const char *reason;
	int ret;

	if (body->lost || body->rebuilt)
		return 0;
	if (!body->have_record) {
		body->lost = TRUE;
		body->lost_reason = "its record and chunks were lost";
	} else if (body->chunks != body->chunk_count ||
		   (body->chunks > 0 && body->max_idx != body->chunks - 1)) {
		body->lost = TRUE;
		body->lost_reason = p_strdup_printf(sv->pool,
			"%u of its %u chunks are readable", body->chunks,
			body->chunk_count);
	} else if (body->chunk_bytes != body->physical_size ||
		   body->max_chunk_size > body->chunk_size) {
		/* every chunk's checksum holds, but they are not the
		   layout the record describes */
		body->lost = TRUE;
		body->lost_reason = "its chunks don't match its record";
	} else {
		T_BEGIN {
			ret = lmdb_salvage_body_digest(sv, body, &reason,
						       error_r);
		} T_END_PASS_STR_IF(ret < 0, error_r);
		if (ret < 0)
			return -1;
		if (ret == 0) {
			body->lost = TRUE;
			body->lost_reason = reason;
		}
	}
	return 0;
}

static int lmdb_salvage_judge(struct lmdb_salvage *sv, const char **error_r)
{
	struct lmdb_salvage_resolve *rs = sv->resolve;
	struct hash_iterate_context *iter;
	struct lmdb_salvage_body *body;
	struct lmdb_salvage_link *link;
	struct lmdb_salvage_box *box;
	void *key;

	iter = hash_table_iterate_init(sv->bodies);
	while (hash_table_iterate(iter, sv->bodies, &key, &body)) {
		if (lmdb_salvage_judge_body(sv, body, error_r) < 0) {
			hash_table_iterate_deinit(&iter);
			return -1;
		}
		if (!body->lost)
			array_push_back(&rs->kept_bodies, &body);
		else if (body->have_record || body->chunks > 0) {
			array_push_back(&rs->lost_bodies, &body);
			sv->result->bodies_lost++;
		}
	}
	hash_table_iterate_deinit(&iter);
	array_sort(&rs->kept_bodies, lmdb_salvage_body_cmp);
	array_sort(&rs->lost_bodies, lmdb_salvage_body_cmp);

	array_foreach_modifiable(&sv->links, link) {
		body = hash_table_lookup(sv->bodies,
					 POINTER_CAST(link->body_id));
		i_assert(body != NULL);
		box = lmdb_salvage_box_get(sv, link->guid);
		if (!array_is_created(&box->link_uids))
			p_array_init(&box->link_uids, sv->pool, 64);
		array_push_back(&box->link_uids, &link->uid);
		if (!body->lost) {
			body->links++;
			box->kept_links++;
		} else {
			link->lost = TRUE;
			array_push_back(&rs->lost_links, &link);
		}
	}
	return 0;
}

/* --- 4. bodies that lost every link --- */

static bool lmdb_salvage_name_taken(struct lmdb_salvage *sv, const char *name)
{
	struct lmdb_salvage_box *box;

	array_foreach_elem(&sv->box_list, box) {
		if (box->have_record && box->active &&
		    strcmp(box->name, name) == 0)
			return TRUE;
		if (box->info != NULL && strcmp(box->info->name, name) == 0)
			return TRUE;
	}
	return FALSE;
}

static int lmdb_salvage_plan_relinks(struct lmdb_salvage *sv,
				     const char **error_r)
{
	struct lmdb_salvage_resolve *rs = sv->resolve;
	struct lmdb_salvage_body *body;
	struct lmdb_salvage_new_link *nl;
	struct lmdb_salvage_box *box = NULL;
	const char *name;
	guid_128_t guid;
	uint32_t uid = 0;
	unsigned int n;
	MDB_txn *txn;

	if (lmdb_env_read_begin(sv->env, &txn, error_r) < 0)
		return -1;
	array_foreach_elem(&rs->kept_bodies, body) {
		if (body->links > 0 || lmdb_salvage_links_lost(sv, body) == 0)
			continue;
		if (box == NULL) {
			name = t_strdup_printf(
				LMDB_SALVAGE_RECOVERY_NAME"%cUnlinked",
				sv->set->hierarchy_sep);
			for (n = 2; lmdb_salvage_name_taken(sv, name); n++) {
				name = t_strdup_printf(
					LMDB_SALVAGE_RECOVERY_NAME"%cUnlinked-%u",
					sv->set->hierarchy_sep, n);
			}
			guid_128_generate(guid);
			box = lmdb_salvage_box_get(sv, guid);
			box->name = p_strdup(sv->pool, name);
			rs->recovery_box = box;
		}
		body->links = 1;
		box->kept_links++;
		box->highest_uid = ++uid;
		nl = array_append_space(&rs->new_links);
		nl->box = box;
		nl->uid = uid;
		nl->body = body;
		lmdb_salvage_note(sv, &sv->result->relinked, box->guid, uid,
			body->id, lmdb_salvage_body_message_id(sv, txn, body),
			"its links were lost: linked again here");
	}
	lmdb_env_read_end(sv->env, &txn);
	return 0;
}

/* --- what was lost --- */

static int lmdb_salvage_note_lost(struct lmdb_salvage *sv,
				  const char **error_r)
{
	struct lmdb_salvage_resolve *rs = sv->resolve;
	struct lmdb_salvage_link *link;
	const struct lmdb_salvage_missing *m;
	struct lmdb_salvage_body *body;
	struct lmdb_salvage_message *msg;
	MDB_txn *txn;

	if (lmdb_env_read_begin(sv->env, &txn, error_r) < 0)
		return -1;
	array_foreach_elem(&rs->lost_links, link) T_BEGIN {
		body = hash_table_lookup(sv->bodies,
					 POINTER_CAST(link->body_id));
		msg = lmdb_salvage_note(sv, &sv->result->lost, link->guid,
			link->uid, link->body_id,
			lmdb_salvage_body_message_id(sv, txn, body),
			t_strdup_printf("body %"PRIu64": %s", link->body_id,
					body->lost_reason));
		if (msg->message_id == NULL && sv->set->lookup != NULL) {
			struct lmdb_salvage_box *box =
				lmdb_salvage_box_get(sv, link->guid);
			struct lmdb_salvage_index_message imsg;

			i_zero(&imsg);
			if (box->info != NULL &&
			    sv->set->lookup(box->info, link->uid,
					    sv->set->lookup_context, &imsg) &&
			    imsg.message_id_header != NULL) {
				msg->message_id = p_strdup(sv->result->pool,
					lmdb_salvage_parse_message_id(
						imsg.message_id_header,
						strlen(imsg.message_id_header)));
			}
		}
	} T_END;
	lmdb_env_read_end(sv->env, &txn);
	array_foreach(&rs->missing, m) {
		if (m->body == NULL) {
			lmdb_salvage_note(sv, &sv->result->lost, m->box->guid,
					  m->uid, 0, m->message_id,
					  "its link record was lost");
		}
	}
	return 0;
}

/* --- the report --- */

static const char *
lmdb_salvage_box_name(struct lmdb_salvage *sv, const guid_128_t guid)
{
	struct lmdb_salvage_box *box;

	box = hash_table_lookup(sv->boxes, guid_128_to_string(guid));
	if (box != NULL && box->name != NULL)
		return box->name;
	if (box != NULL && box->info != NULL)
		return box->info->name;
	return t_strdup_printf("(mailbox %s)", guid_128_to_string(guid));
}

static int lmdb_salvage_message_cmp(const struct lmdb_salvage_message *a,
				    const struct lmdb_salvage_message *b)
{
	int ret = strcmp(a->mailbox_name, b->mailbox_name);

	if (ret != 0)
		return ret;
	return a->uid < b->uid ? -1 : (a->uid > b->uid ? 1 : 0);
}

static void lmdb_salvage_name_messages(struct lmdb_salvage *sv,
				       ARRAY_TYPE(lmdb_salvage_message) *msgs)
{
	struct lmdb_salvage_message *msg;

	array_foreach_modifiable(msgs, msg) {
		msg->mailbox_name = p_strdup(sv->result->pool,
			lmdb_salvage_box_name(sv, msg->mailbox_guid));
	}
	array_sort(msgs, lmdb_salvage_message_cmp);
}

/* --- all of it --- */

int lmdb_salvage_resolve(struct lmdb_salvage *sv, const char **error_r)
{
	struct lmdb_salvage_resolve rs;
	int ret = 0;

	i_zero(&rs);
	p_array_init(&rs.rebuilds, sv->pool, 16);
	p_array_init(&rs.kept_bodies, sv->pool, 1024);
	p_array_init(&rs.lost_bodies, sv->pool, 16);
	p_array_init(&rs.lost_links, sv->pool, 16);
	p_array_init(&rs.missing, sv->pool, 16);
	p_array_init(&rs.new_links, sv->pool, 16);
	sv->resolve = &rs;

	if (lmdb_salvage_rebuild_bodies(sv, error_r) < 0 ||
	    lmdb_salvage_judge(sv, error_r) < 0)
		ret = -1;
	else {
		lmdb_salvage_find_missing(sv);
		lmdb_salvage_lookup_missing(sv);
		if (lmdb_salvage_match(sv, error_r) < 0 ||
		    lmdb_salvage_plan_relinks(sv, error_r) < 0 ||
		    lmdb_salvage_note_lost(sv, error_r) < 0 ||
		    lmdb_salvage_write(sv, error_r) < 0)
			ret = -1;
	}
	if (ret == 0) {
		lmdb_salvage_name_messages(sv, &sv->result->lost);
		lmdb_salvage_name_messages(sv, &sv->result->restored);
		lmdb_salvage_name_messages(sv, &sv->result->relinked);
	}
	sv->resolve = NULL;
	return ret;
}
