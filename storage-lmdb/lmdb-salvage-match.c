/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "hash.h"
#include "str.h"
#include "sort.h"
#include "lmdb-body.h"
#include "lmdb-values.h"
#include "lmdb-salvage-private.h"

/* Step 3 of a salvage's resolution: the UIDs the indexes have without a
   link found, looked up in the indexes and matched to whole bodies that
   lost links, by the Message-ID of their first chunk. */

/* --- 3. UIDs the indexes have without a link --- */

void lmdb_salvage_find_missing(struct lmdb_salvage *sv)
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
void lmdb_salvage_lookup_missing(struct lmdb_salvage *sv)
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
const char *
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
uint32_t lmdb_salvage_links_lost(struct lmdb_salvage *sv,
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
int lmdb_salvage_match(struct lmdb_salvage *sv, const char **error_r)
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
	if (lmdb_env_read_begin(sv->env, &txn, error_r) < 0)
		return -1;
	i_zero(&ambiguous);
	hash_table_create(&bodies, sv->pool, 16, str_hash, strcmp);
	hash_table_create(&counts, sv->pool, 16, str_hash, strcmp);
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
			m->uid, m->body->id, m->message_id, m->pop3_uidl != NULL ?
			"its link was lost: linked again to its body, found "
			"by its Message-ID (flags and POP3 UIDL from the index)" :
			"its link was lost: linked again to its body, found "
			"by its Message-ID (flags from the index; its POP3 "
			"UIDL is made anew from pop3_uidl_format)");
	}
	hash_table_destroy(&bodies);
	hash_table_destroy(&counts);
	return 0;
}
