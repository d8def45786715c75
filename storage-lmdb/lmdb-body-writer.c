/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "ioloop.h"
#include "istream.h"
#include "lmdb-body-private.h"

#include <openssl/evp.h>

/* Writing a body: its bytes are cut into chunks as they come and written
   in groups, each in a short unsynced transaction, so a large body never
   holds LMDB's writer long; a small one may instead be kept in memory
   for the transaction that links it. */

/* How many full chunks a writer buffers before writing them in one
   transaction: bounds both memory and how long the writer lock is held. */
#define LMDB_BODY_FLUSH_CHUNKS 256

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
	if (size > 0) {
		memcpy((unsigned char *)val.mv_data + LMDB_CHUNK_HDR_SIZE,
		       data, size);
	}
	return 0;
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
		if ((ret = lmdb_body_gc_key_set(env, txn, LMDB_GC_KIND_PENDING,
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

		ret = lmdb_body_lookup(env, txn, ctx->body_id,
				       pool_datastack_create(), &old, error_r);
		if (ret == 0) {
			/* purge freed it as a save that never finished */
			*error_r = t_strdup_printf(
				"body %"PRIu64" was freed before its save "
				"finished: the save took longer than "
				"lmdb_pending_grace", ctx->body_id);
			return MDB_NOTFOUND;
		}
		if (ret < 0)
			return MDB_CORRUPTED;
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

int lmdb_body_writer_get_last_ret(struct lmdb_body_writer *writer)
{
	return writer->last_ret;
}

void lmdb_body_writer_free(struct lmdb_body_writer **_writer)
{
	struct lmdb_body_writer *writer = *_writer;
	const char *error;

	*_writer = NULL;
	if (!writer->finished && writer->body_id != 0) {
		/* a half-written body: drop it now rather than leaving
		   megabytes for the GC */
		if (lmdb_body_discard(writer->env, writer->body_id,
				      &error) < 0) {
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

