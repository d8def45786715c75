/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "hash.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-uidls.h"
#include "lmdb-schema.h"
#include "lmdb-values.h"
#include "lmdb-salvage-private.h"

#include <unistd.h>

/* The writing half of a salvage's resolution (lmdb-salvage-resolve.c
   decides): lost links and bodies go, reference counts and states follow
   the links, gc entries are written for bodies nobody links, links are
   added back, mailbox records made or raised, the UIDL index rebuilt and
   the counters recounted (lmdb_schema_recount()) into a new env record. Writes go in batches of
   short transactions: a salvage of a large environment must not make one
   transaction of all of it. */

#define LMDB_SALVAGE_STEP_BATCH 1024

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

int lmdb_salvage_in_batches(struct lmdb_salvage *sv, unsigned int count,
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

static int lmdb_salvage_env_txn(struct lmdb_salvage *sv, MDB_txn *txn,
				unsigned int idx ATTR_UNUSED,
				const char **error_r)
{
	struct lmdb_env_record rec;
	MDB_stat st;
	int ret;

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
	if ((ret = lmdb_schema_recount(sv->env, txn, &rec, error_r)) != 0)
		return ret;
	if ((ret = mdb_stat(txn, sv->env->dbi_chunks, &st)) != 0) {
		*error_r = t_strdup_printf("mdb_stat(chunks) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	sv->result->links = rec.links;
	sv->result->bodies = rec.bodies;
	sv->result->chunks = st.ms_entries;
	return lmdb_env_record_put(sv->env, txn, &rec, error_r);
}

static int lmdb_salvage_recount(struct lmdb_salvage *sv, const char **error_r)
{
	struct lmdb_salvage_body *body;

	array_foreach_elem(&sv->resolve->kept_bodies, body) {
		if (body->links == 0)
			sv->result->bodies_unlinked++;
	}
	/* the file records the map size it was last written with: the
	   generous one of the build would count against every mail
	   process's vsz_limit; LMDB keeps it at least what is used */
	(void)mdb_env_set_mapsize(sv->env->env,
				  sv->set->env_set.map_size_initial);
	return lmdb_salvage_one_txn(sv, lmdb_salvage_env_txn, error_r);
}

int lmdb_salvage_write(struct lmdb_salvage *sv, const char **error_r)
{
	if (lmdb_salvage_apply(sv, error_r) < 0 ||
	    lmdb_salvage_mailboxes(sv, error_r) < 0 ||
	    lmdb_salvage_recount(sv, error_r) < 0)
		return -1;
	return 0;
}
