/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "sort.h"
#include "lmdb-records.h"
#include "lmdb-salvage-private.h"

/* Each record the scan yields: classified, kept in a batch, copied into
   the new environment (first key wins), and what it tells recorded. */

/* An ORPHAN link may come from a page freed long ago (when the free list
   itself is damaged): one whose UID the mailbox's index has passed
   (below next_uid) but no longer has was expunged, and stays so. */
static bool
lmdb_salvage_link_is_stale(struct lmdb_salvage_scan *scan,
			   const guid_128_t guid, uint32_t uid)
{
	const struct lmdb_salvage_mailbox_info *info;

	info = hash_table_lookup(scan->infos, guid_128_to_string(guid));
	if (info == NULL || uid >= info->next_uid)
		return FALSE;
	return bsearch(&uid, info->uids, info->uids_count, sizeof(uint32_t),
		       (int (*)(const void *, const void *))uint32_cmp) == NULL;
}

/* --- writing batches --- */

static MDB_dbi lmdb_salvage_dbi(struct lmdb_env *env,
				enum lmdb_record_type type)
{
	switch (type) {
	case LMDB_RECORD_TYPE_BODY:
		return env->dbi_bodies;
	case LMDB_RECORD_TYPE_CHUNK:
		return env->dbi_chunks;
	case LMDB_RECORD_TYPE_LINK:
		return env->dbi_links;
	case LMDB_RECORD_TYPE_MAILBOX:
		return env->dbi_mailboxes;
	case LMDB_RECORD_TYPE_QUARANTINE:
		return env->dbi_quarantine;
	default:
		i_unreached();
	}
}

static int
lmdb_salvage_batch_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_salvage_scan *scan = context;
	struct lmdb_env *env = scan->sv->env;
	struct lmdb_salvage_item *item;
	MDB_val key, val;
	int ret;

	array_foreach_modifiable(&scan->batch, item) {
		key.mv_data = (void *)item->key;
		key.mv_size = item->key_size;
		val.mv_data = (void *)item->value;
		val.mv_size = item->value_size;
		ret = mdb_put(txn, lmdb_salvage_dbi(env, item->type),
			      &key, &val, MDB_NOOVERWRITE);
		item->inserted = ret == 0;
		if (ret != 0 && ret != MDB_KEYEXIST) {
			*error_r = t_strdup_printf("mdb_put() failed: %s",
						   mdb_strerror(ret));
			return ret;
		}
	}
	return 0;
}

/* What a written record tells about its body, link or mailbox. */
static void lmdb_salvage_track(struct lmdb_salvage *sv,
			       const struct lmdb_salvage_item *item)
{
	struct lmdb_salvage_body *body;
	struct lmdb_salvage_link *link;
	struct lmdb_salvage_box *box;

	switch (item->type) {
	case LMDB_RECORD_TYPE_CHUNK:
		body = lmdb_salvage_body_get(sv, item->u.chunk.body_id);
		body->chunks++;
		body->chunk_bytes += item->u.chunk.size;
		body->max_idx = I_MAX(body->max_idx, item->u.chunk.idx);
		body->max_chunk_size = I_MAX(body->max_chunk_size,
					     item->u.chunk.size);
		sv->max_body_id = I_MAX(sv->max_body_id, body->id);
		break;
	case LMDB_RECORD_TYPE_BODY:
		body = lmdb_salvage_body_get(sv, item->u.body.id);
		body->have_record = TRUE;
		body->record_orphan = item->orphan;
		body->state = item->u.body.state;
		body->old_refcount = item->u.body.old_refcount;
		body->chunk_count = item->u.body.chunk_count;
		body->chunk_size = item->u.body.chunk_size;
		body->physical_size = item->u.body.physical_size;
		sv->max_body_id = I_MAX(sv->max_body_id, body->id);
		break;
	case LMDB_RECORD_TYPE_LINK:
		link = array_append_space(&sv->links);
		memcpy(link->guid, item->u.link.guid, sizeof(link->guid));
		link->uid = item->u.link.uid;
		link->body_id = item->u.link.body_id;
		lmdb_salvage_body_get(sv, link->body_id)->link_refs++;
		box = lmdb_salvage_box_get(sv, link->guid);
		box->highest_uid = I_MAX(box->highest_uid, link->uid);
		break;
	case LMDB_RECORD_TYPE_MAILBOX:
		box = lmdb_salvage_box_get(sv, item->key);
		box->have_record = TRUE;
		box->active = item->u.mailbox.active;
		box->name = p_strdup(sv->pool, item->u.mailbox.name);
		break;
	default:
		break;
	}
}

int lmdb_salvage_batch_flush(struct lmdb_salvage_scan *scan)
{
	struct lmdb_salvage *sv = scan->sv;
	const struct lmdb_salvage_item *item;
	const char *error;
	int ret;

	if (array_count(&scan->batch) == 0)
		return 0;
	ret = lmdb_env_write(sv->env, lmdb_salvage_batch_txn, scan, FALSE,
			     &error);
	if (ret != 0) {
		scan->error = p_strdup_printf(sv->pool,
			"writing the new environment failed: %s", error);
		return -1;
	}
	array_foreach(&scan->batch, item) {
		if (!item->inserted) {
			sv->result->records_duplicate++;
			continue;
		}
		if (item->orphan)
			sv->result->records_orphan++;
		else
			sv->result->records_tree++;
		if (item->unverified)
			sv->result->records_unverified++;
		lmdb_salvage_track(sv, item);
	}
	array_clear(&scan->batch);
	p_clear(scan->batch_pool);
	scan->batch_bytes = 0;
	return 0;
}

/* Keep what the record is, for its batch. */
static void lmdb_salvage_add(struct lmdb_salvage_scan *scan,
			     struct lmdb_salvage_item *item)
{
	pool_t pool = scan->batch_pool;

	item->key = p_memdup(pool, item->key, item->key_size);
	item->value = p_memdup(pool, item->value, item->value_size);
	if (item->type == LMDB_RECORD_TYPE_MAILBOX)
		item->u.mailbox.name = p_strdup(pool, item->u.mailbox.name);
	scan->batch_bytes += item->key_size + item->value_size;
	array_push_back(&scan->batch, item);
}

int lmdb_salvage_scan_record(const struct lmdb_pagescan_record *rec,
			     struct lmdb_salvage_scan *scan)
{
	struct lmdb_salvage *sv = scan->sv;
	struct lmdb_salvage_result *result = sv->result;
	struct lmdb_salvage_item item;

	T_BEGIN {
		if (!lmdb_salvage_classify(sv, rec, &item)) {
			if (rec->source == LMDB_PAGESCAN_SOURCE_ORPHAN)
				result->orphans_unreadable++;
			else
				result->records_damaged++;
		} else switch (item.type) {
		case LMDB_RECORD_TYPE_ENV:
			/* the first readable one (a TREE one if any): its
			   body id sequence and dates carry over */
			if (!sv->have_old_env) {
				sv->old_env = item.u.env;
				sv->have_old_env = TRUE;
			}
			break;
		case LMDB_RECORD_TYPE_GC:
		case LMDB_RECORD_TYPE_UIDL:
			/* made anew from the bodies and the links */
			result->records_regenerated++;
			break;
		case LMDB_RECORD_TYPE_LINK:
			if (item.orphan &&
			    lmdb_salvage_link_is_stale(scan, item.u.link.guid,
						       item.u.link.uid)) {
				result->records_stale++;
				break;
			}
			/* fall through */
		default:
			lmdb_salvage_add(scan, &item);
			break;
		}
	} T_END;
	if (array_count(&scan->batch) >= LMDB_SALVAGE_BATCH_RECORDS ||
	    scan->batch_bytes >= LMDB_SALVAGE_BATCH_BYTES) {
		if (lmdb_salvage_batch_flush(scan) < 0)
			return -1;
	}
	return 0;
}
