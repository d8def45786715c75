/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "ioloop.h"
#include "lmdb-body-private.h"

/* Body records, reference counts and the collection of bodies nobody
   links: the only code that deletes mail. */

/* Bodies deleted per GC transaction */
#define LMDB_BODY_GC_BATCH 64

int lmdb_body_put_record(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
			 const struct lmdb_body_record *rec,
			 const char **error_r)
{
	unsigned char key_data[LMDB_BODY_ID_SIZE];
	buffer_t *buf = t_buffer_create(128);
	MDB_val key, val;
	int ret;

	if (!lmdb_body_record_encode(buf, body_id, rec, error_r)) {
		*error_r = t_strdup_printf("body %"PRIu64": %s", body_id,
					   *error_r);
		return EINVAL;
	}
	lmdb_body_id_encode(body_id, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	val.mv_data = (void *)buf->data;
	val.mv_size = buf->used;
	if ((ret = mdb_put(txn, env->dbi_bodies, &key, &val, 0)) != 0) {
		*error_r = t_strdup_printf("mdb_put(body %"PRIu64") failed: %s",
					   body_id, mdb_strerror(ret));
	}
	return ret;
}

int lmdb_body_gc_key_set(struct lmdb_env *env, MDB_txn *txn,
			 enum lmdb_gc_kind kind, int64_t since,
			 uint64_t body_id, bool add, const char **error_r)
{
	unsigned char key_data[LMDB_GC_KEY_SIZE];
	buffer_t *value = t_buffer_create(LMDB_RECORD_HDR_SIZE);
	MDB_val key, val;
	int ret;

	lmdb_gc_key_encode(kind, since, body_id, key_data);
	lmdb_gc_value_encode(value, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	val.mv_data = (void *)value->data;
	val.mv_size = value->used;
	ret = add ? mdb_put(txn, env->dbi_gc, &key, &val, 0) :
		mdb_del(txn, env->dbi_gc, &key, NULL);
	if (ret == MDB_NOTFOUND && !add)
		ret = 0;
	if (ret != 0) {
		*error_r = t_strdup_printf("updating gc key of body %"PRIu64
					   " failed: %s", body_id,
					   mdb_strerror(ret));
	}
	return ret;
}

int lmdb_body_count(struct lmdb_env *env, MDB_txn *txn, int bodies,
		    int64_t bytes, const char **error_r)
{
	return lmdb_env_add_counters(env, txn, 0, 0, bodies, bytes, error_r);
}

int lmdb_body_lookup(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
		     pool_t pool, struct lmdb_body_record *rec_r,
		     const char **error_r)
{
	unsigned char key_data[LMDB_BODY_ID_SIZE];
	MDB_val key, val;
	int ret;

	lmdb_body_id_encode(body_id, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	ret = mdb_get(txn, env->dbi_bodies, &key, &val);
	if (ret == MDB_NOTFOUND)
		return 0;
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_get(body %"PRIu64") failed: %s",
					   body_id, mdb_strerror(ret));
		return -1;
	}
	if (!lmdb_body_record_decode(body_id, val.mv_data, val.mv_size, pool,
				     rec_r, error_r)) {
		*error_r = t_strdup_printf("body %"PRIu64" record is damaged: %s",
					   body_id, *error_r);
		return -2;
	}
	return 1;
}

int lmdb_body_get(struct lmdb_env *env, uint64_t body_id, pool_t pool,
		  struct lmdb_body_record *rec_r, const char **error_r)
{
	MDB_txn *txn;
	int ret;

	if (lmdb_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	ret = lmdb_body_lookup(env, txn, body_id, pool, rec_r, error_r);
	lmdb_env_read_end(env, &txn);
	return ret;
}

int lmdb_body_ref(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
		  int delta, int64_t now, uint64_t *virtual_size_r,
		  const char **error_r)
{
	unsigned char key_data[LMDB_BODY_ID_SIZE];
	struct lmdb_body_record rec;
	buffer_t *buf;
	MDB_cursor *cursor;
	MDB_val key, val;
	int64_t old_since;
	enum lmdb_body_state old_state;
	int ret;

	/* a cursor: the record is rewritten where it was found, without a
	   second B-tree search */
	if ((ret = mdb_cursor_open(txn, env->dbi_bodies, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(bodies) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	lmdb_body_id_encode(body_id, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	ret = mdb_cursor_get(cursor, &key, &val, MDB_SET);
	if (ret != 0) {
		mdb_cursor_close(cursor);
		*error_r = ret == MDB_NOTFOUND ?
			t_strdup_printf("body %"PRIu64" not found", body_id) :
			t_strdup_printf("mdb_get(body %"PRIu64") failed: %s",
					body_id, mdb_strerror(ret));
		return ret;
	}
	if (!lmdb_body_record_decode(body_id, val.mv_data, val.mv_size,
				     pool_datastack_create(), &rec, error_r)) {
		mdb_cursor_close(cursor);
		*error_r = t_strdup_printf("body %"PRIu64" record is corrupted: %s",
					   body_id, *error_r);
		return MDB_CORRUPTED;
	}
	if (virtual_size_r != NULL)
		*virtual_size_r = rec.virtual_size;
	old_state = rec.state;
	old_since = rec.state_since;
	if (delta < 0 && rec.refcount < (uint32_t)-delta) {
		/* never wrap: a refcount that is already too low is fixed
		   by verify --repair, not made worse */
		rec.refcount = 0;
	} else {
		rec.refcount += delta;
	}
	if (rec.refcount > 0)
		rec.state = LMDB_BODY_STATE_LINKED;
	else if (old_state != LMDB_BODY_STATE_PENDING)
		rec.state = LMDB_BODY_STATE_DEAD;
	if (rec.state != old_state) {
		if (old_state != LMDB_BODY_STATE_LINKED &&
		    (ret = lmdb_body_gc_key_set(env, txn, old_state ==
					   LMDB_BODY_STATE_PENDING ?
					   LMDB_GC_KIND_PENDING :
					   LMDB_GC_KIND_DEAD, old_since,
					   body_id, FALSE, error_r)) != 0) {
			mdb_cursor_close(cursor);
			return ret;
		}
		rec.state_since = now;
		if (rec.state == LMDB_BODY_STATE_DEAD &&
		    (ret = lmdb_body_gc_key_set(env, txn, LMDB_GC_KIND_DEAD, now,
					   body_id, TRUE, error_r)) != 0) {
			mdb_cursor_close(cursor);
			return ret;
		}
	}
	buf = t_buffer_create(128);
	if (!lmdb_body_record_encode(buf, body_id, &rec, error_r)) {
		mdb_cursor_close(cursor);
		*error_r = t_strdup_printf("body %"PRIu64": %s", body_id,
					   *error_r);
		return EINVAL;
	}
	ret = lmdb_env_cursor_put_current(cursor, key_data, sizeof(key_data),
					  buf);
	mdb_cursor_close(cursor);
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_put(body %"PRIu64") failed: %s",
					   body_id, mdb_strerror(ret));
	}
	return ret;
}

/* Delete a body's record and chunks (no gc key handling). */
static int lmdb_body_delete(struct lmdb_env *env, MDB_txn *txn,
			    uint64_t body_id, uint64_t *bytes_r,
			    const char **error_r)
{
	unsigned char key_data[LMDB_CHUNK_KEY_SIZE];
	MDB_cursor *cursor;
	MDB_val key, val;
	uint64_t id;
	uint32_t idx;
	int ret;

	*bytes_r = 0;
	if ((ret = mdb_cursor_open(txn, env->dbi_chunks, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open() failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	lmdb_chunk_key_encode(body_id, 0, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	ret = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
	while (ret == 0 &&
	       lmdb_chunk_key_decode(key.mv_data, key.mv_size, &id, &idx) &&
	       id == body_id) {
		if (val.mv_size > LMDB_CHUNK_HDR_SIZE)
			*bytes_r += val.mv_size - LMDB_CHUNK_HDR_SIZE;
		if ((ret = mdb_cursor_del(cursor, 0)) != 0)
			break;
		ret = mdb_cursor_get(cursor, &key, &val, MDB_GET_CURRENT);
		if (ret == MDB_NOTFOUND || ret == EINVAL)
			ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
	}
	mdb_cursor_close(cursor);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("deleting chunks of body %"PRIu64
					   " failed: %s", body_id,
					   mdb_strerror(ret));
		return ret;
	}
	lmdb_body_id_encode(body_id, key_data);
	key.mv_data = key_data;
	key.mv_size = LMDB_BODY_ID_SIZE;
	ret = mdb_del(txn, env->dbi_bodies, &key, NULL);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("mdb_del(body %"PRIu64") failed: %s",
					   body_id, mdb_strerror(ret));
		return ret;
	}
	return 0;
}

struct lmdb_body_delete_ctx {
	struct lmdb_env *env;
	uint64_t body_id;
};

int lmdb_body_release(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
		      int64_t now, uint64_t *virtual_size_r,
		      const char **error_r)
{
	struct lmdb_body_record rec;
	uint64_t bytes;
	int ret;

	ret = lmdb_body_lookup(env, txn, body_id, pool_datastack_create(),
			       &rec, error_r);
	if (ret == 0) {
		*error_r = t_strdup_printf("body %"PRIu64" not found", body_id);
		return MDB_NOTFOUND;
	}
	if (ret < 0)
		return MDB_CORRUPTED;
	*virtual_size_r = rec.virtual_size;
	if (rec.refcount != 1 || rec.state != LMDB_BODY_STATE_LINKED) {
		/* other links remain; or the count is already wrong, and
		   then the body waits as DEAD for verify -r or purge
		   rather than going at once */
		return lmdb_body_ref(env, txn, body_id, -1, now, NULL,
				     error_r);
	}
	/* the last link: free it now. Readers that still stream it keep
	   their own snapshot (lmdb-body-read.c), so no grace period is
	   needed, and expunged mail never takes space */
	if ((ret = lmdb_body_delete(env, txn, body_id, &bytes, error_r)) != 0)
		return ret;
	return lmdb_body_count(env, txn, -1, -(int64_t)bytes, error_r);
}

int lmdb_body_restore_gc_entry(struct lmdb_env *env, MDB_txn *txn,
			       uint64_t body_id, const char **error_r)
{
	struct lmdb_body_record rec;
	int ret;

	ret = lmdb_body_lookup(env, txn, body_id, pool_datastack_create(),
			       &rec, error_r);
	if (ret <= 0)
		return ret < 0 ? MDB_CORRUPTED : 0;
	if (rec.state == LMDB_BODY_STATE_LINKED)
		return 0;
	return lmdb_body_gc_key_set(env, txn, rec.state ==
				    LMDB_BODY_STATE_PENDING ?
				    LMDB_GC_KIND_PENDING : LMDB_GC_KIND_DEAD,
				    rec.state_since, body_id, TRUE, error_r);
}

/* Drop a PENDING body that never got linked. */
static int lmdb_body_delete_txn(MDB_txn *txn, void *context,
				const char **error_r)
{
	struct lmdb_body_delete_ctx *ctx = context;
	struct lmdb_body_record rec;
	uint64_t bytes;
	bool counted;
	int ret;

	ret = lmdb_body_lookup(ctx->env, txn, ctx->body_id,
			       pool_datastack_create(), &rec, error_r);
	if (ret < 0)
		return MDB_CORRUPTED;
	if (ret > 0 && rec.state != LMDB_BODY_STATE_PENDING)
		return 0;
	/* only finished bodies were counted; the placeholder written with
	   a large body's first chunks is the one with no chunk size */
	counted = ret > 0 && rec.chunk_size != 0;
	if (ret > 0 &&
	    (ret = lmdb_body_gc_key_set(ctx->env, txn, LMDB_GC_KIND_PENDING,
				   rec.state_since, ctx->body_id, FALSE,
				   error_r)) != 0)
		return ret;
	if ((ret = lmdb_body_delete(ctx->env, txn, ctx->body_id, &bytes,
				    error_r)) != 0)
		return ret;
	return !counted ? 0 :
		lmdb_body_count(ctx->env, txn, -1, -(int64_t)bytes, error_r);
}

int lmdb_body_discard(struct lmdb_env *env, uint64_t body_id,
		      const char **error_r)
{
	struct lmdb_body_delete_ctx ctx = {
		.env = env,
		.body_id = body_id,
	};

	return lmdb_env_write(env, lmdb_body_delete_txn, &ctx, FALSE,
			      error_r) == 0 ? 0 : -1;
}

struct lmdb_body_gc_ctx {
	struct lmdb_env *env;
	int64_t now;
	unsigned int pending_grace, dead_grace, max_bodies;
	unsigned int freed;
	/* damaged body records whose gc entries were left alone */
	unsigned int damaged;
	char first_damage[256];
	bool more;
};

static int lmdb_body_gc_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_body_gc_ctx *ctx = context;
	struct lmdb_body_record rec;
	MDB_cursor *cursor;
	MDB_val key, val;
	ARRAY(uint64_t) ids;
	enum lmdb_gc_kind kind;
	int64_t since;
	uint64_t body_id, bytes, *idp;
	const char *error;
	bool counted;
	int ret;

	ctx->freed = 0;
	ctx->damaged = 0;
	ctx->more = FALSE;
	t_array_init(&ids, LMDB_BODY_GC_BATCH);
	if ((ret = mdb_cursor_open(txn, ctx->env->dbi_gc, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(gc) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	/* keys sort by kind, then time: stop each kind at its cutoff */
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		if (!lmdb_gc_key_decode(key.mv_data, key.mv_size, &kind,
					&since, &body_id)) {
			/* junk key: remove it, it points nowhere we know */
			if ((ret = mdb_cursor_del(cursor, 0)) != 0)
				break;
			continue;
		}
		if (since > ctx->now - (int64_t)(kind == LMDB_GC_KIND_PENDING ?
						ctx->pending_grace :
						ctx->dead_grace)) {
			if (kind == LMDB_GC_KIND_DEAD)
				break;
			continue;
		}
		if (array_count(&ids) >= LMDB_BODY_GC_BATCH ||
		    array_count(&ids) >= ctx->max_bodies) {
			ctx->more = TRUE;
			break;
		}
		if (lmdb_body_lookup(ctx->env, txn, body_id,
				     pool_datastack_create(), &rec,
				     &error) < 0) {
			/* a damaged record can't say whether the body was
			   linked again: keep it and its entry for verify -r,
			   and free the others */
			if (ctx->damaged++ == 0) {
				i_snprintf(ctx->first_damage,
					   sizeof(ctx->first_damage),
					   "body %"PRIu64": %s", body_id, error);
			}
			continue;
		}
		if ((ret = mdb_cursor_del(cursor, 0)) != 0)
			break;
		array_push_back(&ids, &body_id);
	}
	mdb_cursor_close(cursor);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("scanning gc keys failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	array_foreach_modifiable(&ids, idp) {
		ret = lmdb_body_lookup(ctx->env, txn, *idp,
				       pool_datastack_create(), &rec, error_r);
		if (ret < 0)
			return MDB_CORRUPTED;
		/* a body that was linked again meanwhile keeps living */
		if (ret > 0 && rec.state == LMDB_BODY_STATE_LINKED)
			continue;
		counted = ret > 0 && rec.chunk_size != 0;
		if ((ret = lmdb_body_delete(ctx->env, txn, *idp, &bytes,
					    error_r)) != 0)
			return ret;
		if (counted &&
		    (ret = lmdb_body_count(ctx->env, txn, -1, -(int64_t)bytes,
					   error_r)) != 0)
			return ret;
		ctx->freed++;
	}
	return 0;
}

int lmdb_body_gc(struct lmdb_env *env, int64_t now,
		 unsigned int pending_grace, unsigned int dead_grace,
		 unsigned int max_bodies, unsigned int *freed_r,
		 unsigned int *damaged_r, const char **damage_r,
		 const char **error_r)
{
	struct lmdb_body_gc_ctx ctx;
	unsigned int damaged = 0;

	i_zero(&ctx);
	ctx.env = env;
	ctx.now = now;
	ctx.pending_grace = pending_grace;
	ctx.dead_grace = dead_grace;
	ctx.max_bodies = max_bodies;
	*freed_r = 0;
	do {
		/* each batch may free only what is left of the limit */
		ctx.max_bodies = max_bodies - *freed_r;
		if (lmdb_env_write(env, lmdb_body_gc_txn, &ctx, TRUE,
				   error_r) != 0)
			return -1;
		*freed_r += ctx.freed;
		/* every batch scans from the start: the same damaged
		   entries again */
		if (ctx.damaged > damaged) {
			damaged = ctx.damaged;
			*damage_r = t_strdup(ctx.first_damage);
		}
	} while (ctx.more && *freed_r < max_bodies);
	*damaged_r = damaged;
	return 0;
}
