/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "lmdb-body-private.h"

#include <openssl/evp.h>

/* Reading and verifying bodies. A reader keeps one read snapshot for its
   whole life (a pinned transaction, lmdb-env.h), so the body it reads
   can't change or vanish under it while other processes expunge and
   purge: bodies are freed as soon as their last link goes. */

/* Position the cursor on chunk idx of the body: a B-tree search for the
   first chunk, a step for each following one (chunk keys are adjacent).
   A step that doesn't land on the chunk searches for it: a key that is
   no chunk's (damage) may sit between two chunks, and must not make the
   next one look missing. */
int lmdb_body_chunk_next(MDB_cursor *cursor, uint64_t body_id,
			 uint32_t idx, bool first, MDB_val *val_r)
{
	unsigned char key_data[LMDB_CHUNK_KEY_SIZE];
	MDB_val key;
	uint64_t id;
	uint32_t got_idx;
	int ret;

	if (!first) {
		ret = mdb_cursor_get(cursor, &key, val_r, MDB_NEXT);
		if (ret != 0 && ret != MDB_NOTFOUND)
			return ret;
		if (ret == 0 &&
		    lmdb_chunk_key_decode(key.mv_data, key.mv_size, &id,
					  &got_idx) &&
		    id == body_id && got_idx == idx)
			return 0;
	}
	lmdb_chunk_key_encode(body_id, idx, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	return mdb_cursor_get(cursor, &key, val_r, MDB_SET_KEY);
}

/* Every chunk present with the size the layout gives it; with crc, also
   its checksum (and its data into sha, if given). Without crc only the
   leaf pages of the chunks tree are read: LMDB gives a value's size
   without touching the page holding it. */
static int
lmdb_body_verify_txn(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
		     const struct lmdb_body_record *rec, bool crc,
		     EVP_MD_CTX *sha, const char **error_r)
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
		if (!crc) {
			if (val.mv_size < LMDB_CHUNK_HDR_SIZE) {
				*error_r = t_strdup_printf("chunk %u of %u is "
					"shorter than its header", idx,
					rec->chunk_count);
				ret = 0;
				break;
			}
			data = NULL;
			size = val.mv_size - LMDB_CHUNK_HDR_SIZE;
		} else if (!lmdb_chunk_decode(body_id, idx, val.mv_data,
					      val.mv_size, &data, &size,
					      error_r)) {
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

static EVP_MD_CTX *lmdb_body_sha_init(void)
{
	EVP_MD_CTX *sha = EVP_MD_CTX_new();

	if (sha == NULL || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1)
		i_fatal("lmdb: EVP_DigestInit_ex(sha256) failed");
	return sha;
}

/* Check a full verification's digest. */
static int lmdb_body_sha_check(EVP_MD_CTX *sha,
			       const struct lmdb_body_record *rec,
			       const char **error_r)
{
	unsigned char digest[LMDB_SHA256_SIZE];

	if (EVP_DigestFinal_ex(sha, digest, NULL) != 1)
		i_fatal("lmdb: EVP_DigestFinal_ex() failed");
	if (memcmp(digest, rec->sha256, sizeof(digest)) != 0) {
		*error_r = "SHA-256 of the body doesn't match";
		return 0;
	}
	return 1;
}

int lmdb_body_verify(struct lmdb_env *env, uint64_t body_id,
		     const struct lmdb_body_record *rec, bool full,
		     const char **error_r)
{
	EVP_MD_CTX *sha = full ? lmdb_body_sha_init() : NULL;
	MDB_txn *txn;
	int ret;

	if (lmdb_env_read_begin(env, &txn, error_r) < 0) {
		EVP_MD_CTX_free(sha);
		return -1;
	}
	ret = lmdb_body_verify_txn(env, txn, body_id, rec, TRUE, sha,
				   error_r);
	lmdb_env_read_end(env, &txn);
	if (ret > 0 && sha != NULL)
		ret = lmdb_body_sha_check(sha, rec, error_r);
	EVP_MD_CTX_free(sha);
	return ret;
}

/* The size chunk idx must have: all are full but the last. */
static size_t lmdb_body_chunk_expected_size(const struct lmdb_body_record *rec,
					    uint32_t idx)
{
	if (idx + 1 < rec->chunk_count)
		return rec->chunk_size;
	return rec->physical_size - (uint64_t)idx * rec->chunk_size;
}

/* Append up to count chunks to dest. With rec, each chunk's size is
   checked against the layout (a header-only read doesn't verify the
   whole body first, and a short chunk would shift every later byte). */
static int
lmdb_body_read_txn(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
		   const struct lmdb_body_record *rec, uint32_t first_idx,
		   uint32_t count, buffer_t *dest, bool verify,
		   const char **error_r)
{
	MDB_cursor *cursor;
	MDB_val val;
	const void *data;
	size_t size;
	uint32_t n, idx;
	int ret = 0;

	if ((ret = mdb_cursor_open(txn, env->dbi_chunks, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(chunks) failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	for (n = 0; n < count; n++) {
		idx = first_idx + n;
		ret = lmdb_body_chunk_next(cursor, body_id, idx, n == 0, &val);
		if (ret == MDB_NOTFOUND) {
			*error_r = t_strdup_printf("chunk %u of body %"PRIu64
						   " is missing", idx, body_id);
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
		} else if (!lmdb_chunk_decode(body_id, idx, val.mv_data,
					      val.mv_size, &data, &size,
					      error_r)) {
			*error_r = t_strdup_printf("chunk %u of body %"PRIu64": %s",
						   idx, body_id, *error_r);
			ret = 0;
			break;
		}
		if (rec != NULL && size != lmdb_body_chunk_expected_size(rec, idx)) {
			*error_r = t_strdup_printf(
				"chunk %u of body %"PRIu64" has %zu bytes, "
				"expected %zu", idx, body_id, size,
				lmdb_body_chunk_expected_size(rec, idx));
			ret = 0;
			break;
		}
		buffer_append(dest, data, size);
	}
	mdb_cursor_close(cursor);
	if (n > 0)
		return (int)n;
	return ret;
}

int lmdb_body_read_chunks(struct lmdb_env *env, uint64_t body_id,
			  uint32_t first_idx, uint32_t count, buffer_t *dest,
			  bool verify, const char **error_r)
{
	MDB_txn *txn;
	int ret;

	if (lmdb_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	ret = lmdb_body_read_txn(env, txn, body_id, NULL, first_idx, count,
				 dest, verify, error_r);
	lmdb_env_read_end(env, &txn);
	return ret;
}

int lmdb_body_read_chunk(struct lmdb_env *env, uint64_t body_id,
			 uint32_t idx, buffer_t *dest, const char **error_r)
{
	return lmdb_body_read_chunks(env, body_id, idx, 1, dest, TRUE, error_r);
}

/* --- reader: one snapshot for a stream's life --- */

struct lmdb_body_reader {
	struct lmdb_env *env;
	struct lmdb_env_pin pin;
	uint64_t body_id;
	struct lmdb_body_record rec;
};

/* The reader's snapshot. After a dropped one, the new snapshot must
   still hold the same body (it may have been expunged and freed in
   between): a read never mixes two bodies. */
static int lmdb_body_reader_txn(struct lmdb_body_reader *reader,
				MDB_txn **txn_r, const char **error_r)
{
	struct lmdb_body_record rec;
	bool renewed;
	int ret;

	if (lmdb_env_pin_txn(reader->env, &reader->pin, txn_r, &renewed,
			     error_r) < 0)
		return -1;
	if (!renewed)
		return 1;
	ret = lmdb_body_lookup(reader->env, *txn_r, reader->body_id,
			       pool_datastack_create(), &rec, error_r);
	if (ret <= 0) {
		if (ret == 0) {
			*error_r = t_strdup_printf(
				"body %"PRIu64" was freed while it was being "
				"read", reader->body_id);
		}
		return ret;
	}
	if (rec.physical_size != reader->rec.physical_size ||
	    rec.chunk_size != reader->rec.chunk_size ||
	    memcmp(rec.sha256, reader->rec.sha256, sizeof(rec.sha256)) != 0) {
		*error_r = t_strdup_printf("body %"PRIu64" changed while it "
					   "was being read", reader->body_id);
		return 0;
	}
	return 1;
}

int lmdb_body_reader_open(struct lmdb_env *env, uint64_t body_id,
			  pool_t pool, struct lmdb_body_record *rec_r,
			  struct lmdb_body_reader **reader_r,
			  const char **error_r)
{
	struct lmdb_body_reader *reader;
	MDB_txn *txn;
	bool renewed;
	int ret;

	reader = i_new(struct lmdb_body_reader, 1);
	reader->env = env;
	reader->body_id = body_id;
	lmdb_env_ref(env);
	if (lmdb_env_pin_txn(env, &reader->pin, &txn, &renewed, error_r) < 0)
		ret = -1;
	else {
		ret = lmdb_body_lookup(env, txn, body_id, pool, rec_r,
				       error_r);
	}
	/* every chunk there with its size, before the first byte: a read
	   that meets a short or missing chunk later can only fail the
	   stream half way (cheap: leaf pages only) */
	if (ret > 0) {
		ret = lmdb_body_verify_txn(env, txn, body_id, rec_r, FALSE,
					   NULL, error_r);
		if (ret == 0) {
			*error_r = t_strdup_printf("body %"PRIu64": %s",
						   body_id, *error_r);
			ret = -2;
		}
	}
	if (ret <= 0) {
		lmdb_body_reader_close(&reader);
		return ret;
	}
	reader->rec = *rec_r;
	/* the guid string lives in the caller's pool; the reader needs
	   only the layout */
	reader->rec.guid = "";
	*reader_r = reader;
	return 1;
}

int lmdb_body_reader_verify(struct lmdb_body_reader *reader, bool full,
			    const char **error_r)
{
	EVP_MD_CTX *sha;
	MDB_txn *txn;
	int ret;

	if ((ret = lmdb_body_reader_txn(reader, &txn, error_r)) <= 0)
		return ret;
	sha = full ? lmdb_body_sha_init() : NULL;
	ret = lmdb_body_verify_txn(reader->env, txn, reader->body_id,
				   &reader->rec, TRUE, sha, error_r);
	if (ret > 0 && sha != NULL)
		ret = lmdb_body_sha_check(sha, &reader->rec, error_r);
	EVP_MD_CTX_free(sha);
	return ret;
}

int lmdb_body_reader_read(struct lmdb_body_reader *reader, uint32_t first_idx,
			  uint32_t count, buffer_t *dest, bool verify,
			  const char **error_r)
{
	MDB_txn *txn;
	int ret;

	if ((ret = lmdb_body_reader_txn(reader, &txn, error_r)) <= 0)
		return ret;
	return lmdb_body_read_txn(reader->env, txn, reader->body_id,
				  &reader->rec, first_idx, count, dest, verify,
				  error_r);
}

void lmdb_body_reader_close(struct lmdb_body_reader **_reader)
{
	struct lmdb_body_reader *reader = *_reader;

	if (reader == NULL)
		return;
	*_reader = NULL;
	lmdb_env_pin_release(reader->env, &reader->pin);
	lmdb_env_unref(&reader->env);
	i_free(reader);
}
