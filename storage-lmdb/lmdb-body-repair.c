/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "lmdb-body-private.h"

#include <openssl/evp.h>

/* What doveadm lmdb verify -r can do for a body whose record is damaged
   (its checksum fails): every chunk carries its own checksum over its
   key and data, so a body whose chunks are all there and whole can be
   described again from them. */

/* A damaged body record, rebuilt from its chunks when every one of them
   is there and whole: sizes, digest, the links' count and dates. The
   message GUID was only in the record: the body gets a new one. */
int lmdb_body_rebuild(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
		      uint32_t refcount, int64_t now, const char **error_r)
{
	struct lmdb_body_record rec;
	unsigned char key_data[LMDB_CHUNK_KEY_SIZE];
	unsigned char digest[LMDB_SHA256_SIZE];
	const unsigned char *data;
	MDB_cursor *cursor;
	MDB_val key, val;
	const void *chunk;
	size_t size;
	uint64_t id, bare_lfs = 0;
	uint32_t idx, count = 0;
	guid_128_t guid;
	EVP_MD_CTX *sha;
	bool last_cr = FALSE, short_seen = FALSE;
	int ret;

	i_zero(&rec);
	if ((ret = mdb_cursor_open(txn, env->dbi_chunks, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(chunks) failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	sha = EVP_MD_CTX_new();
	if (sha == NULL || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1)
		i_fatal("lmdb: EVP_DigestInit_ex(sha256) failed");
	lmdb_chunk_key_encode(body_id, 0, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	ret = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
	for (; ret == 0; ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) {
		if (!lmdb_chunk_key_decode(key.mv_data, key.mv_size, &id,
					   &idx) || id != body_id)
			break;
		if (idx != count) {
			*error_r = t_strdup_printf("chunk %u is missing", count);
			ret = 1;
			break;
		}
		if (!lmdb_chunk_decode(body_id, idx, val.mv_data, val.mv_size,
				       &chunk, &size, error_r)) {
			*error_r = t_strdup_printf("chunk %u: %s", idx, *error_r);
			ret = 1;
			break;
		}
		/* every chunk but the last is full: all have one size */
		if (short_seen || size == 0 ||
		    (count > 0 && size > rec.chunk_size)) {
			*error_r = t_strdup_printf("chunk %u has %zu bytes",
						   idx, size);
			ret = 1;
			break;
		}
		if (count == 0)
			rec.chunk_size = size;
		else if (size < rec.chunk_size)
			short_seen = TRUE;
		data = chunk;
		for (size_t i = 0; i < size; i++) {
			if (data[i] == '\n' && !last_cr)
				bare_lfs++;
			last_cr = data[i] == '\r';
		}
		if (EVP_DigestUpdate(sha, chunk, size) != 1)
			i_fatal("lmdb: EVP_DigestUpdate() failed");
		rec.physical_size += size;
		count++;
	}
	mdb_cursor_close(cursor);
	if (ret == 0 || ret == MDB_NOTFOUND) {
		if (EVP_DigestFinal_ex(sha, digest, NULL) != 1)
			i_fatal("lmdb: EVP_DigestFinal_ex() failed");
	}
	EVP_MD_CTX_free(sha);
	if (ret == 1)
		return 0;
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("reading chunks failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	if (count == 0) {
		*error_r = "it has no chunks";
		return 0;
	}
	/* a lone chunk is shorter than the chunk size the writer used */
	if (count == 1 && rec.chunk_size < LMDB_BODY_CHUNK_SIZE)
		rec.chunk_size = LMDB_BODY_CHUNK_SIZE;
	rec.chunk_count = count;
	memcpy(rec.sha256, digest, sizeof(rec.sha256));
	/* zlib or mail_crypt sizes can't be known without the plugin:
	   Dovecot corrects a wrong cached size when it parses the mail */
	rec.message_size = rec.physical_size;
	rec.virtual_size = rec.physical_size + bare_lfs;
	rec.received_date = rec.save_date = rec.state_since = now;
	rec.refcount = refcount;
	rec.state = refcount > 0 ? LMDB_BODY_STATE_LINKED : LMDB_BODY_STATE_DEAD;
	guid_128_generate(guid);
	rec.guid = guid_128_to_string(guid);
	if (lmdb_body_put_record(env, txn, body_id, &rec, error_r) != 0)
		return -1;
	if (rec.state == LMDB_BODY_STATE_DEAD &&
	    lmdb_body_gc_key_set(env, txn, LMDB_GC_KIND_DEAD, rec.state_since,
				 body_id, TRUE, error_r) != 0)
		return -1;
	return 1;
}
