/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "ioloop.h"
#include "istream.h"
#include "lmdb-body.h"

#include <openssl/evp.h>

/* How many full chunks a writer buffers before writing them in one
   transaction: bounds both memory and how long the writer lock is held. */
#define LMDB_BODY_FLUSH_CHUNKS 256
/* Bodies deleted per GC transaction */
#define LMDB_BODY_GC_BATCH 64

struct lmdb_body_writer {
	struct lmdb_env *env;
	EVP_MD_CTX *sha;
	buffer_t *buf;

	uint64_t body_id;
	uint64_t size, bare_lf_count;
	unsigned char sha256[LMDB_SHA256_SIZE];
	uint32_t chunks_written;
	int last_ret;
	bool last_was_cr;
	bool failed, finished;
	/* finished without writing (lmdb_body_writer_finish_deferred()) */
	bool deferred;
	struct lmdb_body_info info;
	char *info_guid;
};

struct lmdb_body_flush_ctx {
	struct lmdb_body_writer *writer;
	const struct lmdb_body_info *info;
	/* chunks to write from writer->buf; a final flush also writes the
	   partial last chunk and the final body record */
	unsigned int full_chunks;
	bool final;
	/* results, valid only after a successful run */
	uint64_t body_id;
	uint32_t chunks_written;
};

struct lmdb_body_writer *lmdb_body_writer_init(struct lmdb_env *env)
{
	struct lmdb_body_writer *writer;

	writer = i_new(struct lmdb_body_writer, 1);
	writer->env = env;
	writer->buf = buffer_create_dynamic(default_pool,
		I_MIN(LMDB_BODY_CHUNK_SIZE, 8192));
	writer->sha = EVP_MD_CTX_new();
	if (writer->sha == NULL ||
	    EVP_DigestInit_ex(writer->sha, EVP_sha256(), NULL) != 1)
		i_fatal("lmdb: EVP_DigestInit_ex(sha256) failed");
	return writer;
}

static int
lmdb_body_put_record(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
		     const struct lmdb_body_record *rec, const char **error_r)
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

static int lmdb_gc_key_set(struct lmdb_env *env, MDB_txn *txn,
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

static int lmdb_body_put_chunk(struct lmdb_env *env, MDB_txn *txn,
			       uint64_t body_id, uint32_t idx,
			       const void *data, size_t size,
			       const char **error_r)
{
	unsigned char key_data[LMDB_CHUNK_KEY_SIZE];
	MDB_val key, val;
	int ret;

	lmdb_chunk_key_encode(body_id, idx, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	val.mv_size = LMDB_CHUNK_HDR_SIZE + size;
	/* MDB_RESERVE lets us write straight into the page: no extra copy
	   of the chunk */
	ret = mdb_put(txn, env->dbi_chunks, &key, &val,
		      MDB_RESERVE | MDB_APPEND);
	if (ret == MDB_KEYEXIST) {
		/* not the highest key (an older body id got chunks later,
		   e.g. a retried transaction): plain insert */
		ret = mdb_put(txn, env->dbi_chunks, &key, &val, MDB_RESERVE);
	}
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_put(chunk %"PRIu64"/%u) "
					   "failed: %s", body_id, idx,
					   mdb_strerror(ret));
		return ret;
	}
	lmdb_chunk_header_encode(val.mv_data, body_id, idx, data, size);
	memcpy((unsigned char *)val.mv_data + LMDB_CHUNK_HDR_SIZE, data, size);
	return 0;
}

/* Keep the env record's body counters exact. */
static int lmdb_body_count(struct lmdb_env *env, MDB_txn *txn, int bodies,
			   int64_t bytes, const char **error_r)
{
	return lmdb_env_add_counters(env, txn, 0, 0, bodies, bytes, error_r);
}

/* The PENDING record of a finished body; state_since is the caller's. */
static void
lmdb_body_writer_fill_record(const struct lmdb_body_writer *writer,
			     const struct lmdb_body_info *info,
			     struct lmdb_body_record *rec)
{
	rec->state = LMDB_BODY_STATE_PENDING;
	rec->refcount = 0;
	rec->physical_size = writer->size;
	if (info->message_size != 0 || info->virtual_size != 0) {
		rec->message_size = info->message_size;
		rec->virtual_size = I_MAX(info->virtual_size,
					  rec->message_size);
	} else {
		rec->message_size = writer->size;
		rec->virtual_size = writer->size + writer->bare_lf_count;
	}
	rec->received_date = info->received_date;
	rec->save_date = info->save_date;
	rec->chunk_size = LMDB_BODY_CHUNK_SIZE;
	rec->chunk_count = (writer->size + LMDB_BODY_CHUNK_SIZE - 1) /
		LMDB_BODY_CHUNK_SIZE;
	memcpy(rec->orig_mailbox_guid, info->orig_mailbox_guid,
	       sizeof(rec->orig_mailbox_guid));
	rec->guid = info->guid;
	memcpy(rec->sha256, writer->sha256, sizeof(rec->sha256));
}

static int
lmdb_body_flush_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_body_flush_ctx *ctx = context;
	struct lmdb_body_writer *writer = ctx->writer;
	struct lmdb_env *env = writer->env;
	struct lmdb_body_record rec;
	const unsigned char *data = writer->buf->data;
	size_t pos = 0, n;
	unsigned int i;
	int ret;

	ctx->body_id = writer->body_id;
	ctx->chunks_written = writer->chunks_written;
	i_zero(&rec);

	if (ctx->body_id == 0) {
		/* first write of this body: allocate its id and leave a
		   PENDING record + gc key, so a crash from here on leaves
		   nothing the GC can't find */
		struct lmdb_env_record env_rec;

		if ((ret = lmdb_env_record_get(env, txn, &env_rec, error_r)) != 0)
			return ret;
		ctx->body_id = env_rec.next_body_id++;
		if ((ret = lmdb_env_record_put(env, txn, &env_rec, error_r)) != 0)
			return ret;
		rec.state = LMDB_BODY_STATE_PENDING;
		rec.state_since = ioloop_time;
		rec.guid = "";
		if (!ctx->final &&
		    (ret = lmdb_body_put_record(env, txn, ctx->body_id,
						&rec, error_r)) != 0)
			return ret;
		if ((ret = lmdb_gc_key_set(env, txn, LMDB_GC_KIND_PENDING,
					   rec.state_since, ctx->body_id,
					   TRUE, error_r)) != 0)
			return ret;
	}

	for (i = 0; i < ctx->full_chunks; i++) {
		ret = lmdb_body_put_chunk(env, txn, ctx->body_id,
					  ctx->chunks_written++, data + pos,
					  LMDB_BODY_CHUNK_SIZE, error_r);
		if (ret != 0)
			return ret;
		pos += LMDB_BODY_CHUNK_SIZE;
	}
	if (!ctx->final)
		return 0;

	n = writer->buf->used - pos;
	i_assert(n < LMDB_BODY_CHUNK_SIZE);
	if (n > 0) {
		ret = lmdb_body_put_chunk(env, txn, ctx->body_id,
					  ctx->chunks_written++, data + pos,
					  n, error_r);
		if (ret != 0)
			return ret;
	}

	/* the final PENDING record; its gc key was written with the first
	   chunk group and keeps that timestamp */
	if (writer->body_id != 0) {
		struct lmdb_body_record old;

		if ((ret = lmdb_body_lookup(env, txn, ctx->body_id,
					    pool_datastack_create(), &old,
					    error_r)) <= 0)
			return ret < 0 ? MDB_CORRUPTED : MDB_NOTFOUND;
		rec.state_since = old.state_since;
	} else {
		rec.state_since = ioloop_time;
	}
	lmdb_body_writer_fill_record(writer, ctx->info, &rec);
	i_assert(rec.chunk_count == ctx->chunks_written);
	if ((ret = lmdb_body_put_record(env, txn, ctx->body_id, &rec,
					error_r)) != 0)
		return ret;
	return lmdb_body_count(env, txn, 1, rec.physical_size, error_r);
}

static int lmdb_body_writer_flush(struct lmdb_body_writer *writer,
				  const struct lmdb_body_info *info,
				  bool final, const char **error_r)
{
	struct lmdb_body_flush_ctx ctx;
	size_t written;
	int ret;

	i_zero(&ctx);
	ctx.writer = writer;
	ctx.info = info;
	ctx.final = final;
	ctx.full_chunks = writer->buf->used / LMDB_BODY_CHUNK_SIZE;
	/* new mail must leave the reserve free for expunges and flag
	   changes, which have to keep working on a full map */
	ret = lmdb_env_check_space(writer->env, writer->buf->used, error_r);
	if (ret <= 0) {
		writer->last_ret = ret < 0 ? EIO : MDB_MAP_FULL;
		writer->failed = TRUE;
		return -1;
	}
	ret = lmdb_env_write(writer->env, lmdb_body_flush_txn, &ctx,
			     FALSE, error_r);
	if (ret != 0) {
		writer->last_ret = ret;
		writer->failed = TRUE;
		return -1;
	}
	writer->body_id = ctx.body_id;
	written = (size_t)(ctx.chunks_written - writer->chunks_written) *
		LMDB_BODY_CHUNK_SIZE;
	writer->chunks_written = ctx.chunks_written;
	if (final)
		buffer_set_used_size(writer->buf, 0);
	else
		buffer_delete(writer->buf, 0, written);
	return 0;
}

int lmdb_body_writer_append(struct lmdb_body_writer *writer,
			    const void *data, size_t size,
			    const char **error_r)
{
	const unsigned char *p = data, *end = p + size, *lf;

	i_assert(!writer->finished);
	if (writer->failed) {
		*error_r = "body writer already failed";
		return -1;
	}
	if (size == 0)
		return 0;

	/* the virtual size counts every LF as CRLF */
	if (p[0] == '\n' && !writer->last_was_cr)
		writer->bare_lf_count++;
	for (lf = memchr(p + 1, '\n', size - 1); lf != NULL;
	     lf = memchr(lf + 1, '\n', end - lf - 1)) {
		if (lf[-1] != '\r')
			writer->bare_lf_count++;
		if (lf + 1 == end)
			break;
	}
	writer->last_was_cr = end[-1] == '\r';
	writer->size += size;
	if (EVP_DigestUpdate(writer->sha, data, size) != 1)
		i_fatal("lmdb: EVP_DigestUpdate() failed");

	buffer_append(writer->buf, data, size);
	if (writer->buf->used >= LMDB_BODY_CHUNK_SIZE * LMDB_BODY_FLUSH_CHUNKS)
		return lmdb_body_writer_flush(writer, NULL, FALSE, error_r);
	return 0;
}

int lmdb_body_writer_finish(struct lmdb_body_writer *writer,
			    const struct lmdb_body_info *info,
			    uint64_t *body_id_r, uint64_t *physical_size_r,
			    uint64_t *virtual_size_r, const char **error_r)
{
	i_assert(!writer->finished);
	if (writer->failed) {
		*error_r = "body writer already failed";
		return -1;
	}
	if (EVP_DigestFinal_ex(writer->sha, writer->sha256, NULL) != 1)
		i_fatal("lmdb: EVP_DigestFinal_ex() failed");
	if (lmdb_body_writer_flush(writer, info, TRUE, error_r) < 0)
		return -1;
	writer->finished = TRUE;
	*body_id_r = writer->body_id;
	*physical_size_r = writer->size;
	*virtual_size_r = info->virtual_size != 0 ? info->virtual_size :
		writer->size + writer->bare_lf_count;
	return 0;
}

int lmdb_body_writer_finish_deferred(struct lmdb_body_writer *writer,
				     const struct lmdb_body_info *info,
				     uint64_t kept_bytes, uint64_t max_size,
				     uint64_t *physical_size_r,
				     uint64_t *virtual_size_r,
				     const char **error_r)
{
	struct lmdb_body_record rec;
	int ret;

	i_assert(!writer->finished);
	if (writer->failed) {
		*error_r = "body writer already failed";
		return -1;
	}
	if (writer->body_id != 0 || writer->size > max_size)
		return 0;
	/* refused now, as a written body would be, not at commit; the
	   bodies already kept for the same transaction count too */
	ret = lmdb_env_check_space(writer->env, kept_bytes + writer->buf->used,
				   error_r);
	if (ret <= 0) {
		writer->last_ret = ret < 0 ? EIO : MDB_MAP_FULL;
		writer->failed = TRUE;
		return -1;
	}
	if (EVP_DigestFinal_ex(writer->sha, writer->sha256, NULL) != 1)
		i_fatal("lmdb: EVP_DigestFinal_ex() failed");
	writer->info = *info;
	writer->info_guid = i_strdup(info->guid);
	writer->info.guid = writer->info_guid;
	writer->finished = TRUE;
	writer->deferred = TRUE;
	lmdb_body_writer_fill_record(writer, &writer->info, &rec);
	*physical_size_r = rec.physical_size;
	*virtual_size_r = rec.virtual_size;
	return 1;
}

int lmdb_body_writer_write_txn(struct lmdb_body_writer *writer,
			       MDB_txn *txn, uint64_t *body_id_r,
			       const char **error_r)
{
	struct lmdb_body_flush_ctx ctx;
	int ret;

	i_assert(writer->deferred && writer->body_id == 0);
	i_zero(&ctx);
	ctx.writer = writer;
	ctx.info = &writer->info;
	ctx.final = TRUE;
	ctx.full_chunks = writer->buf->used / LMDB_BODY_CHUNK_SIZE;
	if ((ret = lmdb_body_flush_txn(txn, &ctx, error_r)) != 0)
		return ret;
	*body_id_r = ctx.body_id;
	return 0;
}

void lmdb_body_writer_get_record(const struct lmdb_body_writer *writer,
				 struct lmdb_body_record *rec_r)
{
	i_assert(writer->deferred);
	i_zero(rec_r);
	lmdb_body_writer_fill_record(writer, &writer->info, rec_r);
	rec_r->state_since = ioloop_time;
}

struct istream *
lmdb_body_writer_open_stream(const struct lmdb_body_writer *writer)
{
	i_assert(writer->deferred);
	/* a copy: the stream may outlive the writer */
	return i_stream_create_copy_from_data(writer->buf->data,
					      writer->buf->used);
}

static int lmdb_body_delete_txn(MDB_txn *txn, void *context,
				const char **error_r);

struct lmdb_body_delete_ctx {
	struct lmdb_env *env;
	uint64_t body_id;
};

int lmdb_body_writer_get_last_ret(struct lmdb_body_writer *writer)
{
	return writer->last_ret;
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

void lmdb_body_writer_free(struct lmdb_body_writer **_writer)
{
	struct lmdb_body_writer *writer = *_writer;
	const char *error;

	*_writer = NULL;
	if (!writer->finished && writer->body_id != 0) {
		/* a half-written body: drop it now rather than leaving
		   megabytes for the GC */
		struct lmdb_body_delete_ctx ctx = {
			.env = writer->env,
			.body_id = writer->body_id,
		};

		if (lmdb_env_write(writer->env, lmdb_body_delete_txn,
				   &ctx, FALSE, &error) != 0) {
			i_error("lmdb: %s: Failed to delete aborted body "
				"%"PRIu64" (left for the GC): %s",
				writer->env->path, writer->body_id, error);
		}
	}
	EVP_MD_CTX_free(writer->sha);
	buffer_free(&writer->buf);
	i_free(writer->info_guid);
	i_free(writer);
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
		*error_r = t_strdup_printf("body %"PRIu64" record is corrupted: %s",
					   body_id, *error_r);
		return -1;
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

/* Position the cursor on chunk idx of the body: a B-tree search for the
   first chunk, a step for each following one (chunk keys are adjacent). */
static int lmdb_body_chunk_next(MDB_cursor *cursor, uint64_t body_id,
				uint32_t idx, bool first, MDB_val *val_r)
{
	unsigned char key_data[LMDB_CHUNK_KEY_SIZE];
	MDB_val key;
	uint64_t id;
	uint32_t got_idx;
	int ret;

	if (first) {
		lmdb_chunk_key_encode(body_id, idx, key_data);
		key.mv_data = key_data;
		key.mv_size = sizeof(key_data);
		return mdb_cursor_get(cursor, &key, val_r, MDB_SET_KEY);
	}
	ret = mdb_cursor_get(cursor, &key, val_r, MDB_NEXT);
	if (ret != 0)
		return ret;
	if (!lmdb_chunk_key_decode(key.mv_data, key.mv_size, &id, &got_idx) ||
	    id != body_id || got_idx != idx)
		return MDB_NOTFOUND;
	return 0;
}

static int
lmdb_body_verify_txn(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
		     const struct lmdb_body_record *rec, EVP_MD_CTX *sha,
		     const char **error_r)
{
	MDB_cursor *cursor;
	MDB_val val;
	const void *data;
	size_t size, expected;
	uint64_t left = rec->physical_size;
	uint32_t idx;
	int ret;

	if (rec->chunk_count == 0)
		return 1;
	if ((ret = mdb_cursor_open(txn, env->dbi_chunks, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(chunks) failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	for (idx = 0; idx < rec->chunk_count; idx++) {
		ret = lmdb_body_chunk_next(cursor, body_id, idx, idx == 0, &val);
		if (ret == MDB_NOTFOUND) {
			*error_r = t_strdup_printf("chunk %u of %u is missing",
						   idx, rec->chunk_count);
			ret = 0;
			break;
		}
		if (ret != 0) {
			*error_r = t_strdup_printf("reading chunk failed: %s",
						   mdb_strerror(ret));
			ret = -1;
			break;
		}
		if (!lmdb_chunk_decode(body_id, idx, val.mv_data, val.mv_size,
				       &data, &size, error_r)) {
			*error_r = t_strdup_printf("chunk %u of %u: %s", idx,
						   rec->chunk_count, *error_r);
			ret = 0;
			break;
		}
		expected = I_MIN(left, rec->chunk_size);
		if (size != expected) {
			*error_r = t_strdup_printf("chunk %u of %u has %zu bytes, "
						   "expected %zu", idx,
						   rec->chunk_count, size,
						   expected);
			ret = 0;
			break;
		}
		left -= size;
		if (sha != NULL && EVP_DigestUpdate(sha, data, size) != 1)
			i_fatal("lmdb: EVP_DigestUpdate() failed");
		ret = 1;
	}
	mdb_cursor_close(cursor);
	return ret;
}

int lmdb_body_verify(struct lmdb_env *env, uint64_t body_id,
		     const struct lmdb_body_record *rec, bool full,
		     const char **error_r)
{
	unsigned char digest[LMDB_SHA256_SIZE];
	EVP_MD_CTX *sha = NULL;
	MDB_txn *txn;
	int ret;

	if (full) {
		sha = EVP_MD_CTX_new();
		if (sha == NULL ||
		    EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1)
			i_fatal("lmdb: EVP_DigestInit_ex(sha256) failed");
	}
	if (lmdb_env_read_begin(env, &txn, error_r) < 0) {
		EVP_MD_CTX_free(sha);
		return -1;
	}
	ret = lmdb_body_verify_txn(env, txn, body_id, rec, sha, error_r);
	lmdb_env_read_end(env, &txn);
	if (ret > 0 && sha != NULL) {
		if (EVP_DigestFinal_ex(sha, digest, NULL) != 1)
			i_fatal("lmdb: EVP_DigestFinal_ex() failed");
		if (memcmp(digest, rec->sha256, sizeof(digest)) != 0) {
			*error_r = "SHA-256 of the body doesn't match";
			ret = 0;
		}
	}
	EVP_MD_CTX_free(sha);
	return ret;
}

int lmdb_body_read_chunks(struct lmdb_env *env, uint64_t body_id,
			  uint32_t first_idx, uint32_t count, buffer_t *dest,
			  bool verify, const char **error_r)
{
	MDB_txn *txn;
	MDB_cursor *cursor;
	MDB_val val;
	const void *data;
	size_t size;
	uint32_t n;
	int ret = 0;

	if (lmdb_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	if ((ret = mdb_cursor_open(txn, env->dbi_chunks, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(chunks) failed: %s",
					   mdb_strerror(ret));
		lmdb_env_read_end(env, &txn);
		return -1;
	}
	for (n = 0; n < count; n++) {
		ret = lmdb_body_chunk_next(cursor, body_id, first_idx + n,
					   n == 0, &val);
		if (ret == MDB_NOTFOUND) {
			*error_r = t_strdup_printf("chunk %u of body %"PRIu64
						   " is missing",
						   first_idx + n, body_id);
			ret = 0;
			break;
		} else if (ret != 0) {
			*error_r = t_strdup_printf("reading chunk failed: %s",
						   mdb_strerror(ret));
			ret = -1;
			break;
		} else if (!verify && val.mv_size >= LMDB_CHUNK_HDR_SIZE) {
			data = CONST_PTR_OFFSET(val.mv_data,
						LMDB_CHUNK_HDR_SIZE);
			size = val.mv_size - LMDB_CHUNK_HDR_SIZE;
		} else if (!lmdb_chunk_decode(body_id, first_idx + n,
					      val.mv_data, val.mv_size, &data,
					      &size, error_r)) {
			*error_r = t_strdup_printf("chunk %u of body %"PRIu64": %s",
						   first_idx + n, body_id,
						   *error_r);
			ret = 0;
			break;
		}
		buffer_append(dest, data, size);
	}
	mdb_cursor_close(cursor);
	lmdb_env_read_end(env, &txn);
	if (n > 0)
		return (int)n;
	return ret;
}

int lmdb_body_read_chunk(struct lmdb_env *env, uint64_t body_id,
			 uint32_t idx, buffer_t *dest, const char **error_r)
{
	return lmdb_body_read_chunks(env, body_id, idx, 1, dest, TRUE, error_r);
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
		    (ret = lmdb_gc_key_set(env, txn, old_state ==
					   LMDB_BODY_STATE_PENDING ?
					   LMDB_GC_KIND_PENDING :
					   LMDB_GC_KIND_DEAD, old_since,
					   body_id, FALSE, error_r)) != 0) {
			mdb_cursor_close(cursor);
			return ret;
		}
		rec.state_since = now;
		if (rec.state == LMDB_BODY_STATE_DEAD &&
		    (ret = lmdb_gc_key_set(env, txn, LMDB_GC_KIND_DEAD, now,
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
	    (ret = lmdb_gc_key_set(ctx->env, txn, LMDB_GC_KIND_PENDING,
				   rec.state_since, ctx->body_id, FALSE,
				   error_r)) != 0)
		return ret;
	if ((ret = lmdb_body_delete(ctx->env, txn, ctx->body_id, &bytes,
				    error_r)) != 0)
		return ret;
	return !counted ? 0 :
		lmdb_body_count(ctx->env, txn, -1, -(int64_t)bytes, error_r);
}

struct lmdb_body_gc_ctx {
	struct lmdb_env *env;
	int64_t now;
	unsigned int pending_grace, dead_grace, max_bodies;
	unsigned int freed;
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
	bool counted;
	int ret;

	ctx->freed = 0;
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
		 const char **error_r)
{
	struct lmdb_body_gc_ctx ctx;

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
	} while (ctx.more && *freed_r < max_bodies);
	return 0;
}
