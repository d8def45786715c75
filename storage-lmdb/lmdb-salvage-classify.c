/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "lmdb-records.h"
#include "lmdb-salvage-private.h"

/* What a record the scan found is: its type (from its DBI, else tried
   against every type's decoder) and what it says, validated. */

/* --- classification --- */

static enum lmdb_record_type lmdb_salvage_dbi_type(const char *dbi_name)
{
	static const struct {
		const char *name;
		enum lmdb_record_type type;
	} dbis[] = {
		{ "meta", LMDB_RECORD_TYPE_ENV },
		{ "bodies", LMDB_RECORD_TYPE_BODY },
		{ "chunks", LMDB_RECORD_TYPE_CHUNK },
		{ "links", LMDB_RECORD_TYPE_LINK },
		{ "mailboxes", LMDB_RECORD_TYPE_MAILBOX },
		{ "gc", LMDB_RECORD_TYPE_GC },
		{ "quarantine", LMDB_RECORD_TYPE_QUARANTINE },
		{ "uidls", LMDB_RECORD_TYPE_UIDL },
	};
	unsigned int i;

	for (i = 0; dbi_name != NULL && i < N_ELEMENTS(dbis); i++) {
		if (strcmp(dbis[i].name, dbi_name) == 0)
			return dbis[i].type;
	}
	return 0;
}

/* Does the record decode as type? On success the item describes it; a
   schema-1 record is re-encoded in the current version (from the data
   stack: the caller copies it). */
static bool
lmdb_salvage_decode(struct lmdb_salvage *sv, enum lmdb_record_type type,
		    const struct lmdb_pagescan_record *rec,
		    struct lmdb_salvage_item *item)
{
	pool_t pool = pool_datastack_create();
	struct lmdb_body_record body;
	struct lmdb_link_record link;
	struct lmdb_mailbox_record mbox;
	struct lmdb_quarantine_record quarantine;
	enum lmdb_gc_kind kind;
	const void *chunk;
	const char *error;
	buffer_t *buf;
	int64_t since;
	uint64_t id;
	uint32_t uid;
	size_t size;
	bool ok, v1 = FALSE;

	switch (type) {
	case LMDB_RECORD_TYPE_ENV:
		if (rec->key_size != LMDB_ENV_RECORD_KEY_SIZE ||
		    memcmp(rec->key, LMDB_ENV_RECORD_KEY,
			   LMDB_ENV_RECORD_KEY_SIZE) != 0)
			return FALSE;
		ok = lmdb_env_record_decode(rec->value, rec->value_size,
					    &item->u.env, &error);
		if (!ok && sv->allow_v1) {
			ok = lmdb_env_record_decode_v1(rec->value,
				rec->value_size, &item->u.env, &error);
			v1 = ok;
		}
		if (!ok)
			return FALSE;
		break;
	case LMDB_RECORD_TYPE_BODY:
		if (!lmdb_body_id_decode(rec->key, rec->key_size, &id))
			return FALSE;
		ok = lmdb_body_record_decode(id, rec->value, rec->value_size,
					     pool, &body, &error);
		if (!ok && sv->allow_v1) {
			ok = lmdb_body_record_decode_v1(rec->value,
				rec->value_size, pool, &body, &error);
			v1 = ok;
		}
		if (!ok || id == 0)
			return FALSE;
		if (v1) {
			buf = t_buffer_create(256);
			if (!lmdb_body_record_encode(buf, id, &body, &error))
				return FALSE;
			item->value = buf->data;
			item->value_size = buf->used;
		}
		item->u.body.id = id;
		item->u.body.state = body.state;
		item->u.body.old_refcount = body.refcount;
		item->u.body.chunk_count = body.chunk_count;
		item->u.body.chunk_size = body.chunk_size;
		item->u.body.physical_size = body.physical_size;
		break;
	case LMDB_RECORD_TYPE_CHUNK:
		/* version-1 chunks are valid in either schema: they always
		   carried a checksum of their data */
		if (!lmdb_chunk_key_decode(rec->key, rec->key_size, &id, &uid) ||
		    id == 0 ||
		    !lmdb_chunk_decode(id, uid, rec->value, rec->value_size,
				       &chunk, &size, &error) ||
		    size > LMDB_CHUNK_SIZE_MAX)
			return FALSE;
		item->u.chunk.body_id = id;
		item->u.chunk.idx = uid;
		item->u.chunk.size = size;
		break;
	case LMDB_RECORD_TYPE_LINK:
		if (!lmdb_link_key_decode(rec->key, rec->key_size,
					  item->u.link.guid, &uid) || uid == 0)
			return FALSE;
		ok = lmdb_link_record_decode(item->u.link.guid, uid,
					     rec->value, rec->value_size,
					     pool, &link, &error);
		if (!ok && sv->allow_v1) {
			ok = lmdb_link_record_decode_v1(rec->value,
				rec->value_size, pool, &link, &error);
			v1 = ok;
		}
		if (!ok)
			return FALSE;
		if (v1) {
			buf = t_buffer_create(256);
			if (!lmdb_link_record_encode(buf, item->u.link.guid,
						     uid, &link, &error))
				return FALSE;
			item->value = buf->data;
			item->value_size = buf->used;
		}
		item->u.link.uid = uid;
		item->u.link.body_id = link.body_id;
		break;
	case LMDB_RECORD_TYPE_MAILBOX:
		if (rec->key_size != GUID_128_SIZE)
			return FALSE;
		ok = lmdb_mailbox_record_decode(rec->key, rec->value,
						rec->value_size, pool, &mbox,
						&error);
		if (!ok && sv->allow_v1) {
			ok = lmdb_mailbox_record_decode_v1(rec->value,
				rec->value_size, pool, &mbox, &error);
			v1 = ok;
		}
		if (!ok)
			return FALSE;
		if (v1) {
			buf = t_buffer_create(256);
			if (!lmdb_mailbox_record_encode(buf, rec->key, &mbox,
							&error))
				return FALSE;
			item->value = buf->data;
			item->value_size = buf->used;
		}
		item->u.mailbox.active =
			mbox.state == LMDB_MAILBOX_STATE_ACTIVE;
		item->u.mailbox.name = mbox.name;
		break;
	case LMDB_RECORD_TYPE_GC:
		if (!lmdb_gc_key_decode(rec->key, rec->key_size, &kind,
					&since, &id))
			return FALSE;
		/* schema 1's entries had an empty value */
		v1 = sv->allow_v1 && rec->value_size == 0;
		if (!v1 && !lmdb_gc_value_check(rec->key, rec->value,
						 rec->value_size, &error))
			return FALSE;
		break;
	case LMDB_RECORD_TYPE_QUARANTINE:
		if (!lmdb_quarantine_record_decode(rec->key, rec->key_size,
						   rec->value, rec->value_size,
						   pool, &quarantine, &error))
			return FALSE;
		break;
	case LMDB_RECORD_TYPE_UIDL:
		/* GUID, UIDL, NUL, UID */
		if (rec->key_size <= GUID_128_SIZE + 1 + 4 ||
		    !lmdb_uidls_value_check(rec->key, rec->key_size,
					    rec->value, rec->value_size,
					    &error))
			return FALSE;
		break;
	default:
		return FALSE;
	}
	item->type = type;
	item->unverified = v1;
	return TRUE;
}

static const enum lmdb_record_type lmdb_salvage_types[] = {
	LMDB_RECORD_TYPE_CHUNK, LMDB_RECORD_TYPE_LINK, LMDB_RECORD_TYPE_BODY,
	LMDB_RECORD_TYPE_MAILBOX, LMDB_RECORD_TYPE_UIDL, LMDB_RECORD_TYPE_GC,
	LMDB_RECORD_TYPE_QUARANTINE, LMDB_RECORD_TYPE_ENV,
};

/* What is the record? The DBI of a TREE record says, unless a damaged
   pointer attached its page to the wrong DBI: then, as for an ORPHAN,
   every type is tried. The type is inside each checksum, so at most one
   type's decoder passes (schema-1 records, without checksums, are told
   apart by their key sizes). */
bool
lmdb_salvage_classify(struct lmdb_salvage *sv,
		      const struct lmdb_pagescan_record *rec,
		      struct lmdb_salvage_item *item)
{
	enum lmdb_record_type dbi_type;
	unsigned int i;

	i_zero(item);
	item->orphan = rec->source == LMDB_PAGESCAN_SOURCE_ORPHAN;
	item->key = rec->key;
	item->key_size = rec->key_size;
	item->value = rec->value;
	item->value_size = rec->value_size;
	/* none of ours is larger (a quarantined record holds one chunk at
	   most): not worth a checksum per type */
	if (rec->value_size > LMDB_SALVAGE_VALUE_MAX)
		return FALSE;
	dbi_type = item->orphan ? 0 : lmdb_salvage_dbi_type(rec->dbi_name);
	if (dbi_type != 0 && lmdb_salvage_decode(sv, dbi_type, rec, item))
		return TRUE;
	for (i = 0; i < N_ELEMENTS(lmdb_salvage_types); i++) {
		if (lmdb_salvage_types[i] == dbi_type)
			continue;
		if (lmdb_salvage_decode(sv, lmdb_salvage_types[i], rec, item)) {
			if (dbi_type != 0)
				sv->result->records_misplaced++;
			return TRUE;
		}
	}
	return FALSE;
}
