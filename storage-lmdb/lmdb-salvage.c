/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "hash.h"
#include "str.h"
#include "sort.h"
#include "lmdb-records.h"
#include "lmdb-salvage-private.h"

#include <sys/stat.h>

/* The scan of a salvage: every record lmdb-pagescan yields is classified
   by the record type inside its checksum, validated by that type's
   decoder and, if it passes, copied into the new environment. Copies go
   in batches of short write transactions with MDB_NOOVERWRITE: the first
   record of a key wins, and as the scanner yields every TREE record
   before any ORPHAN one, a tree's record always wins over an orphan's. */

/* a batch is written when it holds this many records or bytes */
#define LMDB_SALVAGE_BATCH_RECORDS 2048
#define LMDB_SALVAGE_BATCH_BYTES (8 * 1024 * 1024)
/* the largest record value worth decoding */
#define LMDB_SALVAGE_VALUE_MAX (LMDB_CHUNK_SIZE_MAX + 65536)
/* the new environment's map during the build: the damaged file's size
   plus a quarter plus this */
#define LMDB_SALVAGE_MAP_SLACK (64 * 1024 * 1024ULL)

/* What the scan learned of a record, kept until its batch is written. */
struct lmdb_salvage_item {
	enum lmdb_record_type type;
	bool orphan;
	/* a schema-1 record: no checksum was there to check */
	bool unverified;
	const void *key, *value;
	size_t key_size, value_size;
	union {
		struct {
			uint64_t body_id;
			uint32_t idx, size;
		} chunk;
		struct lmdb_salvage_body body;
		struct {
			guid_128_t guid;
			uint32_t uid;
			uint64_t body_id;
		} link;
		struct {
			bool active;
			const char *name;
		} mailbox;
		struct lmdb_env_record env;
	} u;
	/* set by the write: the key was new */
	bool inserted;
};

struct lmdb_salvage_scan {
	struct lmdb_salvage *sv;
	pool_t batch_pool;
	ARRAY(struct lmdb_salvage_item) batch;
	size_t batch_bytes;
	/* mailbox GUID (hex) -> what the caller knows of it */
	HASH_TABLE(char *, const struct lmdb_salvage_mailbox_info *) infos;
	/* the first failure writing the new environment */
	const char *error;
};

struct lmdb_salvage_body *
lmdb_salvage_body_get(struct lmdb_salvage *sv, uint64_t body_id)
{
	struct lmdb_salvage_body *body;

	body = hash_table_lookup(sv->bodies, POINTER_CAST(body_id));
	if (body == NULL) {
		body = p_new(sv->pool, struct lmdb_salvage_body, 1);
		body->id = body_id;
		hash_table_insert(sv->bodies, POINTER_CAST(body_id), body);
	}
	return body;
}

struct lmdb_salvage_box *
lmdb_salvage_box_get(struct lmdb_salvage *sv, const guid_128_t guid)
{
	struct lmdb_salvage_box *box;
	const char *hex = guid_128_to_string(guid);

	box = hash_table_lookup(sv->boxes, hex);
	if (box == NULL) {
		box = p_new(sv->pool, struct lmdb_salvage_box, 1);
		memcpy(box->guid, guid, sizeof(box->guid));
		hash_table_insert(sv->boxes, p_strdup(sv->pool, hex), box);
		array_push_back(&sv->box_list, &box);
	}
	return box;
}


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
static bool
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

static int lmdb_salvage_batch_flush(struct lmdb_salvage_scan *scan)
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

static int lmdb_salvage_scan_record(const struct lmdb_pagescan_record *rec,
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

/* --- the whole build --- */

static int lmdb_salvage_stop(const struct lmdb_pagescan_record *rec ATTR_UNUSED,
			     void *context ATTR_UNUSED)
{
	return -1;
}

/* Before the scan proper: which DBIs does the file have, and is its free
   list whole? The trees are walked before the first record is yielded,
   so a run stopped at once knows both. A file without the DBIs schema 2
   added is read as schema 1. */
static void lmdb_salvage_survey(struct lmdb_salvage *sv,
				struct lmdb_pagescan *scan)
{
	const struct lmdb_pagescan_dbi *dbis;
	const struct lmdb_pagescan_damage *damages;
	unsigned int i, count;
	const char *error;

	(void)lmdb_pagescan_run(scan, lmdb_salvage_stop, (void *)NULL, &error);
	sv->allow_v1 = TRUE;
	dbis = lmdb_pagescan_get_dbis(scan, &count);
	for (i = 0; i < count; i++) {
		if (strcmp(dbis[i].name, "uidls") == 0 ||
		    strcmp(dbis[i].name, "quarantine") == 0)
			sv->allow_v1 = FALSE;
	}
	sv->orphans_trusted = TRUE;
	damages = lmdb_pagescan_get_damages(scan, &count);
	for (i = 0; i < count; i++) {
		if (damages[i].tree == LMDB_PAGESCAN_TREE_FREE)
			sv->orphans_trusted = FALSE;
	}
}

static int lmdb_salvage_scan(struct lmdb_salvage *sv, const char **error_r)
{
	const struct lmdb_salvage_settings *set = sv->set;
	struct lmdb_salvage_scan scan;
	struct lmdb_pagescan *pagescan;
	const struct lmdb_pagescan_stats *stats;
	const char *error;
	unsigned int i;
	int ret;

	if (lmdb_pagescan_open(set->data_path, &pagescan, error_r) < 0)
		return -1;
	lmdb_salvage_survey(sv, pagescan);

	i_zero(&scan);
	scan.sv = sv;
	scan.batch_pool = pool_alloconly_create("lmdb salvage batch",
						LMDB_SALVAGE_BATCH_BYTES + 65536);
	i_array_init(&scan.batch, LMDB_SALVAGE_BATCH_RECORDS);
	hash_table_create(&scan.infos, sv->pool, 16, str_hash, strcmp);
	for (i = 0; i < set->mailboxes_count; i++) {
		const char *hex = guid_128_to_string(set->mailboxes[i].guid);

		/* two list entries with one GUID: the first is the one */
		if (hash_table_lookup(scan.infos, hex) == NULL) {
			hash_table_insert(scan.infos, p_strdup(sv->pool, hex),
					  &set->mailboxes[i]);
		}
		lmdb_salvage_box_get(sv, set->mailboxes[i].guid);
	}

	ret = lmdb_pagescan_run(pagescan, lmdb_salvage_scan_record, &scan,
				&error);
	if (ret == 0)
		ret = lmdb_salvage_batch_flush(&scan);
	if (ret < 0)
		*error_r = scan.error != NULL ? scan.error : error;

	stats = lmdb_pagescan_get_stats(pagescan);
	sv->result->scan = *stats;
	sv->result->meta_fallback_reason =
		p_strdup(sv->result->pool, stats->meta_fallback_reason);
	sv->result->scan.meta_fallback_reason =
		sv->result->meta_fallback_reason;
	lmdb_pagescan_close(&pagescan);

	/* the index's view of each mailbox, for the resolution */
	for (i = 0; i < set->mailboxes_count; i++) {
		struct lmdb_salvage_box *box =
			lmdb_salvage_box_get(sv, set->mailboxes[i].guid);

		if (box->info == NULL)
			box->info = &set->mailboxes[i];
	}
	hash_table_destroy(&scan.infos);
	array_free(&scan.batch);
	pool_unref(&scan.batch_pool);
	return ret;
}

int lmdb_salvage_build(const struct lmdb_salvage_settings *set,
		       struct lmdb_salvage_result **result_r,
		       const char **error_r)
{
	struct lmdb_salvage sv;
	struct lmdb_salvage_result *result;
	struct lmdb_env_settings env_set = set->env_set;
	struct stat st;
	pool_t pool;
	int ret;

	*result_r = NULL;
	/* records already there would win over the salvaged ones */
	if (stat(t_strconcat(set->dest_dir, "/data.mdb", NULL), &st) == 0) {
		*error_r = t_strdup_printf("%s already holds an environment",
					   set->dest_dir);
		return -1;
	}
	pool = pool_alloconly_create("lmdb salvage result", 16384);
	result = p_new(pool, struct lmdb_salvage_result, 1);
	result->pool = pool;
	p_array_init(&result->lost, pool, 16);
	p_array_init(&result->restored, pool, 16);
	p_array_init(&result->relinked, pool, 4);
	p_array_init(&result->mailboxes, pool, 4);

	i_zero(&sv);
	sv.set = set;
	sv.result = result;
	sv.pool = pool_alloconly_create("lmdb salvage", 65536);
	hash_table_create_direct(&sv.bodies, sv.pool, 1024);
	hash_table_create(&sv.boxes, sv.pool, 16, str_hash, strcmp);
	p_array_init(&sv.box_list, sv.pool, 16);
	i_array_init(&sv.links, 1024);

	/* durability comes from one sync of the finished file: a crash
	   during the build leaves only the directory the caller removes */
	env_set.no_sync = TRUE;
	/* room for everything at once: lmdb_body_rebuild() can't report a
	   full map as such (the map is shrunk again before the last
	   commit, lmdb-salvage-resolve.c) */
	if (stat(set->data_path, &st) == 0) {
		uint64_t size = (uint64_t)st.st_size;

		size += size / 4 + LMDB_SALVAGE_MAP_SLACK;
		env_set.map_size_initial = I_MAX(env_set.map_size_initial,
						 size);
		env_set.map_size_max = I_MAX(env_set.map_size_max, size * 4);
	}
	if (lmdb_env_open(set->dest_dir, &env_set, &sv.env, error_r) < 0) {
		*error_r = t_strdup_printf("creating the new environment "
					   "failed: %s", *error_r);
		ret = -1;
	} else {
		ret = lmdb_salvage_scan(&sv, error_r);
		if (ret == 0)
			ret = lmdb_salvage_resolve(&sv, error_r);
		if (ret == 0 && mdb_env_sync(sv.env->env, 1) != 0) {
			*error_r = t_strdup_printf("mdb_env_sync(%s) failed: %m",
						   set->dest_dir);
			ret = -1;
		}
		lmdb_env_unref(&sv.env);
		/* closed now, not kept for a next open: the caller moves
		   the file */
		lmdb_env_deinit();
	}
	hash_table_destroy(&sv.bodies);
	hash_table_destroy(&sv.boxes);
	array_free(&sv.links);
	pool_unref(&sv.pool);
	if (ret < 0) {
		pool_unref(&pool);
		return -1;
	}
	*result_r = result;
	return 0;
}

void lmdb_salvage_result_free(struct lmdb_salvage_result **_result)
{
	struct lmdb_salvage_result *result = *_result;

	if (result == NULL)
		return;
	*_result = NULL;
	pool_unref(&result->pool);
}

/* --- Message-ID --- */

#define LMDB_SALVAGE_MESSAGE_ID_MAX_LEN 255

static bool lmdb_salvage_header_is(const unsigned char *p, size_t len,
				   const char *name)
{
	size_t name_len = strlen(name);

	return len > name_len && p[name_len] == ':' &&
		strncasecmp((const char *)p, name, name_len) == 0;
}

const char *lmdb_salvage_parse_message_id(const void *data, size_t size)
{
	const unsigned char *p = data, *end = p + size, *eol, *line;
	string_t *str = NULL;
	size_t len;

	while (p < end) {
		line = p;
		eol = memchr(p, '\n', end - p);
		if (eol == NULL)
			eol = end;
		len = eol - line;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		p = eol < end ? eol + 1 : end;
		if (len == 0)
			break;
		if (str != NULL) {
			/* a folded continuation, else the header is over */
			if (line[0] != ' ' && line[0] != '\t')
				break;
		} else if (lmdb_salvage_header_is(line, len, "Message-ID")) {
			str = t_str_new(64);
			line += 11;
			len -= 11;
		} else {
			continue;
		}
		for (size_t i = 0; i < len; i++) {
			/* whitespace and control bytes go; what is left
			   is printed in a tab-separated report */
			if (line[i] > 0x20 && line[i] < 0x7f &&
			    str_len(str) < LMDB_SALVAGE_MESSAGE_ID_MAX_LEN)
				str_append_c(str, line[i]);
		}
	}
	return str == NULL || str_len(str) == 0 ? NULL : str_c(str);
}
