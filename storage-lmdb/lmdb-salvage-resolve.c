/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "hash.h"
#include "str.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-uidls.h"
#include "lmdb-values.h"
#include "lmdb-salvage-private.h"

#include <unistd.h>

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
   Writes go in batches of short transactions (a salvage of a large
   environment must not make one transaction of all of it). */

#define LMDB_SALVAGE_STEP_BATCH 1024
#define LMDB_SALVAGE_RECOVERY_NAME "Recovered"

typedef int lmdb_salvage_step_func_t(struct lmdb_salvage *sv, MDB_txn *txn,
				     unsigned int idx, const char **error_r);

struct lmdb_salvage_step {
	struct lmdb_salvage *sv;
	lmdb_salvage_step_func_t *func;
	unsigned int start, end;
};

/* each body to rebuild, and whether that worked */
struct lmdb_salvage_rebuild {
	struct lmdb_salvage_body *body;
	bool ok;
	const char *error;
};

/* a UID an index has but no link was found for */
struct lmdb_salvage_missing {
	struct lmdb_salvage_box *box;
	uint32_t uid;
	bool in_index;
	const char *message_id;
	/* what the index says, for a link made again */
	const char *pop3_uidl;
	uint8_t flags;
	unsigned int keywords_count;
	const char *const *keywords;
	/* the body it is linked to again, or NULL */
	struct lmdb_salvage_body *body;
};

/* a link to add: one matched to its UID again, or a re-link */
struct lmdb_salvage_new_link {
	struct lmdb_salvage_box *box;
	uint32_t uid;
	struct lmdb_salvage_body *body;
	const struct lmdb_salvage_missing *missing;
};

struct lmdb_salvage_resolve {
	ARRAY(struct lmdb_salvage_rebuild) rebuilds;
	ARRAY(struct lmdb_salvage_body *) kept_bodies, lost_bodies;
	ARRAY(struct lmdb_salvage_link *) lost_links;
	ARRAY(struct lmdb_salvage_missing) missing;
	ARRAY(struct lmdb_salvage_new_link) new_links;
	struct lmdb_salvage_box *recovery_box;
	/* recounted from the new environment */
	uint64_t link_vsize, body_bytes;
};

static int
lmdb_salvage_step_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_salvage_step *step = context;
	unsigned int i;
	int ret = 0;

	for (i = step->start; i < step->end && ret == 0; i++) {
		T_BEGIN {
			ret = step->func(step->sv, txn, i, error_r);
		} T_END_PASS_STR_IF(ret != 0, error_r);
	}
	return ret;
}

/* Run func for 0..count-1, in batches of short write transactions. func
   may run again for the same index after the map grew: it must only
   change the transaction and what it sets itself. */
static int lmdb_salvage_in_batches(struct lmdb_salvage *sv, unsigned int count,
				   lmdb_salvage_step_func_t *func,
				   const char **error_r)
{
	struct lmdb_salvage_step step = { .sv = sv, .func = func };

	for (step.start = 0; step.start < count; step.start = step.end) {
		step.end = I_MIN(step.start + LMDB_SALVAGE_STEP_BATCH, count);
		if (lmdb_env_write(sv->env, lmdb_salvage_step_txn, &step,
				   FALSE, error_r) != 0)
			return -1;
	}
	return 0;
}

static int lmdb_salvage_one_txn(struct lmdb_salvage *sv,
				lmdb_salvage_step_func_t *func,
				const char **error_r)
{
	return lmdb_salvage_in_batches(sv, 1, func, error_r);
}

static struct lmdb_salvage_message *
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

/* --- 1. bodies without a record --- */

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
		if (!body->have_record && body->chunks > 0) {
			rb = array_append_space(&rs->rebuilds);
			rb->body = body;
		}
	}
	hash_table_iterate_deinit(&iter);
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

static void lmdb_salvage_judge_body(struct lmdb_salvage *sv,
				    struct lmdb_salvage_body *body)
{
	if (body->lost || body->rebuilt)
		return;
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
	}
}

static int uint32_cmp(const uint32_t *a, const uint32_t *b)
{
	return *a < *b ? -1 : (*a > *b ? 1 : 0);
}

static void lmdb_salvage_judge(struct lmdb_salvage *sv)
{
	struct lmdb_salvage_resolve *rs = sv->resolve;
	struct hash_iterate_context *iter;
	struct lmdb_salvage_body *body;
	struct lmdb_salvage_link *link;
	struct lmdb_salvage_box *box;
	void *key;

	iter = hash_table_iterate_init(sv->bodies);
	while (hash_table_iterate(iter, sv->bodies, &key, &body)) {
		lmdb_salvage_judge_body(sv, body);
		if (!body->lost)
			array_push_back(&rs->kept_bodies, &body);
		else if (body->have_record || body->chunks > 0) {
			array_push_back(&rs->lost_bodies, &body);
			sv->result->bodies_lost++;
		}
	}
	hash_table_iterate_deinit(&iter);

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
}

/* --- 3. UIDs the indexes have without a link --- */

static void lmdb_salvage_find_missing(struct lmdb_salvage *sv)
{
	struct lmdb_salvage_missing *m;
	struct lmdb_salvage_box *box;
	const uint32_t *uids;
	unsigned int i, j, count;

	array_foreach_elem(&sv->box_list, box) {
		if (box->info == NULL)
			continue;
		if (array_is_created(&box->link_uids)) {
			array_sort(&box->link_uids, uint32_cmp);
			uids = array_get(&box->link_uids, &count);
		} else {
			uids = NULL;
			count = 0;
		}
		for (i = j = 0; i < box->info->uids_count; i++) {
			uint32_t uid = box->info->uids[i];

			while (j < count && uids[j] < uid)
				j++;
			if (j < count && uids[j] == uid)
				continue;
			m = array_append_space(&sv->resolve->missing);
			m->box = box;
			m->uid = uid;
		}
	}
}

/* What the index says of each missing UID (grouped by mailbox, as the
   caller's lookup wants them), copied: the lookup's strings are only
   valid until its next call. */
static void lmdb_salvage_lookup_missing(struct lmdb_salvage *sv)
{
	const struct lmdb_salvage_settings *set = sv->set;
	struct lmdb_salvage_index_message imsg;
	struct lmdb_salvage_missing *m;
	const char **keywords;
	const char *mid;
	unsigned int i, n;

	if (set->lookup == NULL)
		return;
	array_foreach_modifiable(&sv->resolve->missing, m) T_BEGIN {
		i_zero(&imsg);
		m->in_index = set->lookup(m->box->info, m->uid,
					  set->lookup_context, &imsg);
		if (m->in_index && imsg.message_id_header != NULL) {
			mid = lmdb_salvage_parse_message_id(
				imsg.message_id_header,
				strlen(imsg.message_id_header));
			m->message_id = p_strdup(sv->result->pool, mid);
		}
		if (m->in_index && imsg.pop3_uidl != NULL &&
		    lmdb_uidl_is_valid(imsg.pop3_uidl))
			m->pop3_uidl = p_strdup(sv->pool, imsg.pop3_uidl);
		m->flags = imsg.flags & LMDB_LINK_FLAGS_MASK;
		keywords = p_new(sv->pool, const char *,
				 I_MIN(imsg.keywords_count,
				       LMDB_KEYWORDS_MAX) + 1);
		for (i = n = 0; i < imsg.keywords_count && n < LMDB_KEYWORDS_MAX; i++) {
			/* what can't be mirrored stays in the index */
			if (lmdb_keyword_is_valid(imsg.keywords[i]))
				keywords[n++] = p_strdup(sv->pool,
							 imsg.keywords[i]);
		}
		m->keywords = keywords;
		m->keywords_count = n;
	} T_END;
}

/* The Message-ID of a body's first chunk, read once. */
static const char *
lmdb_salvage_body_message_id(struct lmdb_salvage *sv, MDB_txn *txn,
			     struct lmdb_salvage_body *body)
{
	unsigned char key_data[LMDB_CHUNK_KEY_SIZE];
	const void *data;
	const char *error, *mid;
	MDB_val key, val;
	size_t size;

	if (body->message_id_read)
		return body->message_id;
	body->message_id_read = TRUE;
	lmdb_chunk_key_encode(body->id, 0, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	if (mdb_get(txn, sv->env->dbi_chunks, &key, &val) != 0 ||
	    !lmdb_chunk_decode(body->id, 0, val.mv_data, val.mv_size,
			       &data, &size, &error))
		return NULL;
	T_BEGIN {
		mid = lmdb_salvage_parse_message_id(data, size);
		body->message_id = p_strdup(sv->result->pool, mid);
	} T_END;
	return body->message_id;
}

/* How many links did this whole body lose? Its record says how many it
   had, unless the record may be an old version of a body freed since (an
   orphan page, with the free list unreadable). A body rebuilt from its
   chunks without any link is taken to have lost one: bodies are freed
   at their last expunge, so a whole one without a record and links is a
   message whose links went with its record (or a save that never
   finished, which then shows up too). */
static uint32_t lmdb_salvage_links_lost(struct lmdb_salvage *sv,
					const struct lmdb_salvage_body *body)
{
	if (body->rebuilt)
		return body->links == 0 ? 1 : 0;
	if (!body->have_record || body->state != LMDB_BODY_STATE_LINKED ||
	    (!sv->orphans_trusted && body->record_orphan) ||
	    body->old_refcount <= body->links)
		return 0;
	return body->old_refcount - body->links;
}

/* A body that lost links, and the missing UIDs with its Message-ID:
   they are its links when it is the only such body with that
   Message-ID and they are as many as it lost. */
static int lmdb_salvage_match(struct lmdb_salvage *sv, const char **error_r)
{
	struct lmdb_salvage_resolve *rs = sv->resolve;
	HASH_TABLE(const char *, struct lmdb_salvage_body *) bodies;
	HASH_TABLE(const char *, void *) counts;
	struct lmdb_salvage_body *body, ambiguous;
	struct lmdb_salvage_missing *m;
	struct lmdb_salvage_new_link *nl;
	const char *mid;
	uintptr_t n;
	MDB_txn *txn;

	if (array_count(&rs->missing) == 0)
		return 0;
	i_zero(&ambiguous);
	hash_table_create(&bodies, sv->pool, 16, str_hash, strcmp);
	hash_table_create(&counts, sv->pool, 16, str_hash, strcmp);
	if (lmdb_env_read_begin(sv->env, &txn, error_r) < 0)
		return -1;
	array_foreach_elem(&rs->kept_bodies, body) {
		if (lmdb_salvage_links_lost(sv, body) == 0)
			continue;
		mid = lmdb_salvage_body_message_id(sv, txn, body);
		if (mid == NULL)
			continue;
		hash_table_update(bodies, mid,
			hash_table_lookup(bodies, mid) == NULL ?
			body : &ambiguous);
	}
	lmdb_env_read_end(sv->env, &txn);
	array_foreach_modifiable(&rs->missing, m) {
		if (m->message_id == NULL)
			continue;
		n = POINTER_CAST_TO(hash_table_lookup(counts, m->message_id),
				    uintptr_t);
		hash_table_update(counts, m->message_id, POINTER_CAST(n + 1));
	}
	array_foreach_modifiable(&rs->missing, m) {
		if (m->message_id == NULL)
			continue;
		body = hash_table_lookup(bodies, m->message_id);
		n = POINTER_CAST_TO(hash_table_lookup(counts, m->message_id),
				    uintptr_t);
		if (body == NULL || body == &ambiguous ||
		    n != lmdb_salvage_links_lost(sv, body))
			continue;
		m->body = body;
	}
	array_foreach_modifiable(&rs->missing, m) {
		if (m->body == NULL)
			continue;
		m->body->links++;
		m->box->kept_links++;
		nl = array_append_space(&rs->new_links);
		nl->box = m->box;
		nl->uid = m->uid;
		nl->body = m->body;
		nl->missing = m;
		lmdb_salvage_note(sv, &sv->result->restored, m->box->guid,
			m->uid, m->body->id, m->message_id,
			"its link was lost: linked again to its body, found "
			"by its Message-ID");
	}
	hash_table_destroy(&bodies);
	hash_table_destroy(&counts);
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

/* --- 5. links, bodies, reference counts --- */

static int lmdb_salvage_drop_link(struct lmdb_salvage *sv, MDB_txn *txn,
				  unsigned int idx, const char **error_r)
{
	struct lmdb_salvage_link *link =
		array_idx_elem(&sv->resolve->lost_links, idx);
	int ret;

	ret = lmdb_link_delete(sv->env, txn, link->guid, link->uid, error_r);
	return ret == MDB_NOTFOUND ? 0 : ret;
}

/* A body that is not whole goes with its record and every chunk. */
static int lmdb_salvage_drop_body(struct lmdb_salvage *sv, MDB_txn *txn,
				  unsigned int idx, const char **error_r)
{
	struct lmdb_salvage_body *body =
		array_idx_elem(&sv->resolve->lost_bodies, idx);
	unsigned char key_data[LMDB_CHUNK_KEY_SIZE];
	MDB_cursor *cursor;
	MDB_val key, val;
	uint64_t id;
	uint32_t chunk_idx;
	int ret;

	lmdb_body_id_encode(body->id, key_data);
	key.mv_data = key_data;
	key.mv_size = LMDB_BODY_ID_SIZE;
	ret = mdb_del(txn, sv->env->dbi_bodies, &key, NULL);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("mdb_del(body) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	if ((ret = mdb_cursor_open(txn, sv->env->dbi_chunks, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(chunks) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	lmdb_chunk_key_encode(body->id, 0, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	ret = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
	while (ret == 0 &&
	       lmdb_chunk_key_decode(key.mv_data, key.mv_size, &id,
				     &chunk_idx) && id == body->id) {
		if ((ret = mdb_cursor_del(cursor, 0)) != 0)
			break;
		/* a deletion leaves the cursor at the next record, or past
		   the end of its page */
		ret = mdb_cursor_get(cursor, &key, &val, MDB_GET_CURRENT);
		if (ret == MDB_NOTFOUND || ret == EINVAL)
			ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
	}
	mdb_cursor_close(cursor);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("deleting chunks failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	return 0;
}

static int lmdb_salvage_drop_gc(struct lmdb_salvage *sv, MDB_txn *txn,
				const struct lmdb_body_record *rec,
				uint64_t body_id, const char **error_r)
{
	unsigned char key_data[LMDB_GC_KEY_SIZE];
	MDB_val key;
	int ret;

	lmdb_gc_key_encode(rec->state == LMDB_BODY_STATE_PENDING ?
			   LMDB_GC_KIND_PENDING : LMDB_GC_KIND_DEAD,
			   rec->state_since, body_id, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	ret = mdb_del(txn, sv->env->dbi_gc, &key, NULL);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("mdb_del(gc) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	return 0;
}

/* Reference count and state as the links say: a LINKED body without
   links is DEAD (purge frees it after its grace period), one with links
   LINKED; pending and dead bodies get their gc entries. */
static int lmdb_salvage_fix_body(struct lmdb_salvage *sv, MDB_txn *txn,
				 unsigned int idx, const char **error_r)
{
	struct lmdb_salvage_body *body =
		array_idx_elem(&sv->resolve->kept_bodies, idx);
	struct lmdb_body_record rec;
	unsigned char key_data[LMDB_BODY_ID_SIZE];
	buffer_t *buf;
	MDB_val key, val;
	int ret;

	ret = lmdb_body_lookup(sv->env, txn, body->id, pool_datastack_create(),
			       &rec, error_r);
	if (ret <= 0) {
		/* we wrote it: it must read back */
		if (ret == 0)
			*error_r = "body record vanished";
		return MDB_CORRUPTED;
	}
	if (rec.refcount != body->links ||
	    (body->links > 0) != (rec.state == LMDB_BODY_STATE_LINKED)) {
		rec.refcount = body->links;
		if (body->links > 0 && rec.state != LMDB_BODY_STATE_LINKED) {
			/* a rebuilt body that got links again: its gc
			   entry goes */
			if ((ret = lmdb_salvage_drop_gc(sv, txn, &rec, body->id,
							error_r)) != 0)
				return ret;
			rec.state = LMDB_BODY_STATE_LINKED;
			rec.state_since = sv->set->now;
		} else if (body->links == 0 &&
			   rec.state == LMDB_BODY_STATE_LINKED) {
			rec.state = LMDB_BODY_STATE_DEAD;
			rec.state_since = sv->set->now;
		}
		buf = t_buffer_create(256);
		if (!lmdb_body_record_encode(buf, body->id, &rec, error_r))
			return EINVAL;
		lmdb_body_id_encode(body->id, key_data);
		key.mv_data = key_data;
		key.mv_size = sizeof(key_data);
		val.mv_data = (void *)buf->data;
		val.mv_size = buf->used;
		if ((ret = mdb_put(txn, sv->env->dbi_bodies, &key, &val,
				   0)) != 0) {
			*error_r = t_strdup_printf("mdb_put(body) failed: %s",
						   mdb_strerror(ret));
			return ret;
		}
	}
	if (rec.state == LMDB_BODY_STATE_LINKED)
		return 0;
	return lmdb_body_restore_gc_entry(sv->env, txn, body->id, error_r);
}

static int lmdb_salvage_add_link(struct lmdb_salvage *sv, MDB_txn *txn,
				 unsigned int idx, const char **error_r)
{
	const struct lmdb_salvage_new_link *nl =
		array_idx(&sv->resolve->new_links, idx);
	struct lmdb_link_record link;
	struct lmdb_body_record rec;
	int ret;

	ret = lmdb_body_lookup(sv->env, txn, nl->body->id,
			       pool_datastack_create(), &rec, error_r);
	if (ret <= 0) {
		if (ret == 0)
			*error_r = "body record vanished";
		return MDB_CORRUPTED;
	}
	i_zero(&link);
	link.body_id = nl->body->id;
	link.save_date = rec.save_date;
	link.pop3_uidl = "";
	if (nl->missing != NULL) {
		/* the index's flags are what the rebuilt index keeps too */
		link.flags = nl->missing->flags;
		link.keywords_count = nl->missing->keywords_count;
		link.keywords = nl->missing->keywords;
		if (nl->missing->pop3_uidl != NULL)
			link.pop3_uidl = nl->missing->pop3_uidl;
	}
	return lmdb_link_add(sv->env, txn, nl->box->guid, nl->uid, &link,
			     error_r);
}

static int lmdb_salvage_apply(struct lmdb_salvage *sv, const char **error_r)
{
	struct lmdb_salvage_resolve *rs = sv->resolve;

	if (lmdb_salvage_in_batches(sv, array_count(&rs->lost_links),
				    lmdb_salvage_drop_link, error_r) < 0 ||
	    lmdb_salvage_in_batches(sv, array_count(&rs->lost_bodies),
				    lmdb_salvage_drop_body, error_r) < 0 ||
	    lmdb_salvage_in_batches(sv, array_count(&rs->kept_bodies),
				    lmdb_salvage_fix_body, error_r) < 0 ||
	    lmdb_salvage_in_batches(sv, array_count(&rs->new_links),
				    lmdb_salvage_add_link, error_r) < 0)
		return -1;
	return 0;
}

/* --- 6. mailboxes --- */

/* What a mailbox without a record is called: what its index says,
   unless another mailbox has that name now. */
static void lmdb_salvage_name_box(struct lmdb_salvage *sv,
				  struct lmdb_salvage_box *box)
{
	struct lmdb_salvage_mailbox_note *note;
	struct lmdb_salvage_box *other;
	const char *name = NULL;

	if (box->info != NULL &&
	    lmdb_mailbox_name_is_valid(box->info->name)) {
		name = box->info->name;
		array_foreach_elem(&sv->box_list, other) {
			if (other != box && other->have_record &&
			    other->active && strcmp(other->name, name) == 0)
				name = NULL;
		}
	}
	note = array_append_space(&sv->result->mailboxes);
	memcpy(note->guid, box->guid, sizeof(note->guid));
	if (box == sv->resolve->recovery_box) {
		note->fate = LMDB_SALVAGE_MAILBOX_RECOVERY;
		name = box->name;
	} else if (name != NULL) {
		note->fate = LMDB_SALVAGE_MAILBOX_FROM_INDEX;
	} else {
		note->fate = LMDB_SALVAGE_MAILBOX_NAME_LOST;
		name = t_strdup_printf(LMDB_SALVAGE_RECOVERY_NAME"%c%s",
				       sv->set->hierarchy_sep,
				       guid_128_to_string(box->guid));
	}
	note->name = p_strdup(sv->result->pool, name);
	note->links = box->kept_links;
	box->name = p_strdup(sv->pool, name);
}

static int lmdb_salvage_write_box(struct lmdb_salvage *sv, MDB_txn *txn,
				  struct lmdb_salvage_box *box,
				  const char **error_r)
{
	struct lmdb_mailbox_record rec;
	uint32_t highest_uid = box->highest_uid;
	int ret;

	if (box->info != NULL && box->info->next_uid > 0)
		highest_uid = I_MAX(highest_uid, box->info->next_uid - 1);
	if (box->have_record) {
		/* no UID a lost message had may be given again */
		ret = lmdb_mailbox_get(sv->env, txn, box->guid,
				       pool_datastack_create(), &rec, error_r);
		if (ret <= 0) {
			if (ret == 0)
				*error_r = "mailbox record vanished";
			return MDB_CORRUPTED;
		}
		if (rec.highest_uid >= highest_uid)
			return 0;
		rec.highest_uid = highest_uid;
		return lmdb_mailbox_put(sv->env, txn, box->guid, &rec, error_r);
	}
	i_zero(&rec);
	rec.state = LMDB_MAILBOX_STATE_ACTIVE;
	rec.uid_validity = box->info != NULL ? box->info->uid_validity : 0;
	if (rec.uid_validity == 0)
		rec.uid_validity = (uint32_t)sv->set->now;
	rec.highest_uid = highest_uid;
	rec.created = sv->set->now;
	rec.hierarchy_sep = sv->set->hierarchy_sep;
	rec.name = box->name;
	return lmdb_mailbox_put(sv->env, txn, box->guid, &rec, error_r);
}

static int lmdb_salvage_boxes_txn(struct lmdb_salvage *sv, MDB_txn *txn,
				  unsigned int idx ATTR_UNUSED,
				  const char **error_r)
{
	struct lmdb_salvage_box *box;
	int ret;

	array_foreach_elem(&sv->box_list, box) {
		if (box->name == NULL)
			continue;
		if ((ret = lmdb_salvage_write_box(sv, txn, box, error_r)) != 0)
			return ret;
	}
	return 0;
}

static int lmdb_salvage_uidls_txn(struct lmdb_salvage *sv, MDB_txn *txn,
				  unsigned int idx ATTR_UNUSED,
				  const char **error_r)
{
	unsigned int duplicates;

	return lmdb_uidls_rebuild(sv->env, txn, &duplicates, error_r);
}

static int lmdb_salvage_mailboxes(struct lmdb_salvage *sv,
				  const char **error_r)
{
	struct lmdb_salvage_box *box;

	array_foreach_elem(&sv->box_list, box) {
		if (box->have_record)
			continue;
		if (box->kept_links > 0 || box->info != NULL)
			lmdb_salvage_name_box(sv, box);
		else
			box->name = NULL;
	}
	if (lmdb_salvage_one_txn(sv, lmdb_salvage_boxes_txn, error_r) < 0)
		return -1;
	/* the new records exist now */
	array_foreach_elem(&sv->box_list, box) {
		if (box->name != NULL && !box->have_record) {
			box->have_record = TRUE;
			box->active = TRUE;
		}
	}
	return lmdb_salvage_one_txn(sv, lmdb_salvage_uidls_txn, error_r);
}

/* --- 7. counters --- */

static int lmdb_salvage_count(struct lmdb_salvage *sv, MDB_txn *txn)
{
	struct lmdb_salvage_resolve *rs = sv->resolve;
	struct lmdb_body_record body_rec;
	struct lmdb_link_record link_rec;
	struct lmdb_salvage_body *body;
	MDB_cursor *cursor;
	MDB_val key, val;
	MDB_stat st;
	const char *error;
	guid_128_t guid;
	uint64_t id;
	uint32_t uid;
	int ret;

	if ((ret = mdb_cursor_open(txn, sv->env->dbi_bodies, &cursor)) != 0)
		return ret;
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) T_BEGIN {
		if (lmdb_body_id_decode(key.mv_data, key.mv_size, &id) &&
		    lmdb_body_record_decode(id, val.mv_data, val.mv_size,
					    pool_datastack_create(),
					    &body_rec, &error)) {
			body = lmdb_salvage_body_get(sv, id);
			body->virtual_size = body_rec.virtual_size;
			/* a placeholder of a body being written isn't
			   counted */
			if (body_rec.chunk_size != 0) {
				sv->result->bodies++;
				rs->body_bytes += body_rec.physical_size;
			}
			if (body_rec.refcount == 0)
				sv->result->bodies_unlinked++;
		}
	} T_END;
	mdb_cursor_close(cursor);
	if (ret != MDB_NOTFOUND)
		return ret;

	if ((ret = mdb_cursor_open(txn, sv->env->dbi_links, &cursor)) != 0)
		return ret;
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) T_BEGIN {
		if (lmdb_link_key_decode(key.mv_data, key.mv_size, guid,
					 &uid) &&
		    lmdb_link_record_decode(guid, uid, val.mv_data,
					    val.mv_size,
					    pool_datastack_create(),
					    &link_rec, &error)) {
			sv->result->links++;
			body = hash_table_lookup(sv->bodies,
				POINTER_CAST(link_rec.body_id));
			if (body != NULL)
				rs->link_vsize += body->virtual_size;
		}
	} T_END;
	mdb_cursor_close(cursor);
	if (ret != MDB_NOTFOUND)
		return ret;
	if ((ret = mdb_stat(txn, sv->env->dbi_chunks, &st)) != 0)
		return ret;
	sv->result->chunks = st.ms_entries;
	return 0;
}

static int lmdb_salvage_env_txn(struct lmdb_salvage *sv, MDB_txn *txn,
				unsigned int idx ATTR_UNUSED,
				const char **error_r)
{
	struct lmdb_env_record rec;

	i_zero(&rec);
	rec.schema_version = LMDB_SCHEMA_VERSION;
	/* a process that had the old file open sees another generation,
	   should it ever look */
	rec.generation = ((uint64_t)sv->set->now << 20) ^ (uint64_t)getpid();
	if (sv->have_old_env && rec.generation == sv->old_env.generation)
		rec.generation++;
	/* ids are never given twice: above every id the old file gave out
	   and every id that still has a record or chunk */
	rec.next_body_id = sv->max_body_id + 1;
	if (sv->have_old_env)
		rec.next_body_id = I_MAX(rec.next_body_id,
					 sv->old_env.next_body_id);
	rec.created = sv->have_old_env && sv->old_env.created != 0 ?
		sv->old_env.created : (uint64_t)sv->set->now;
	rec.last_purge = sv->have_old_env ? sv->old_env.last_purge : 0;
	rec.links = sv->result->links;
	rec.link_vsize_bytes = sv->resolve->link_vsize;
	rec.bodies = sv->result->bodies;
	rec.body_bytes = sv->resolve->body_bytes;
	return lmdb_env_record_put(sv->env, txn, &rec, error_r);
}

static int lmdb_salvage_recount(struct lmdb_salvage *sv, const char **error_r)
{
	MDB_txn *txn;
	int ret;

	if (lmdb_env_read_begin(sv->env, &txn, error_r) < 0)
		return -1;
	ret = lmdb_salvage_count(sv, txn);
	lmdb_env_read_end(sv->env, &txn);
	if (ret != 0) {
		*error_r = t_strdup_printf("counting the new environment "
					   "failed: %s", mdb_strerror(ret));
		return -1;
	}
	/* the file records the map size it was last written with: the
	   generous one of the build would count against every mail
	   process's vsz_limit; LMDB keeps it at least what is used */
	(void)mdb_env_set_mapsize(sv->env->env,
				  sv->set->env_set.map_size_initial);
	return lmdb_salvage_one_txn(sv, lmdb_salvage_env_txn, error_r);
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

	if (lmdb_salvage_rebuild_bodies(sv, error_r) < 0)
		ret = -1;
	else {
		lmdb_salvage_judge(sv);
		lmdb_salvage_find_missing(sv);
		lmdb_salvage_lookup_missing(sv);
		if (lmdb_salvage_match(sv, error_r) < 0 ||
		    lmdb_salvage_plan_relinks(sv, error_r) < 0 ||
		    lmdb_salvage_note_lost(sv, error_r) < 0 ||
		    lmdb_salvage_apply(sv, error_r) < 0 ||
		    lmdb_salvage_mailboxes(sv, error_r) < 0 ||
		    lmdb_salvage_recount(sv, error_r) < 0)
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
