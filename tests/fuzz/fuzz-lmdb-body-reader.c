/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The body reader (lmdb-body-read.c) and the body stream (lmdb-istream.c)
   over crafted records in a real LMDB environment: one environment,
   opened once in a private directory (tmpfs when there is one); each
   input empties its bodies and chunks DBIs and writes a body record and
   chunks made from the input, then reads the body every way the storage
   does. The fuzzer chooses, record by record, whether to seal it with
   a correct checksum, so it gets past the checksums to the layout checks
   behind them.

   The harness keeps its own model of what it wrote (last write of a key
   wins, checksums computed with Dovecot's crc32) and from it knows what
   each read must return:
   - the body is whole iff every chunk 0..chunk_count-1 is there, has a
     valid header and checksum and exactly the size the layout gives it;
   - a whole body reads to the end as exactly the chunks' bytes, from
     the start and after a seek, and verifies (1), and with full=TRUE
     verifies iff its SHA-256 matches the record's;
   - a damaged one fails the stream with an error after exactly the bytes
     of the whole chunks before the first damaged one, never serves a
     damaged chunk's bytes, and verifies as 0 (never -1);
   - lmdb_body_reader_read() returns the whole chunks of a run and stops
     at the first bad one, with or without checksums;
   - a record written by the encoder opens (1) iff every chunk is there
     with its layout size (checked at open, checksums not read), else
     -2; raw bytes open as 1 (then so are the chunks), 0 (no record) or
     -2 (damaged), never -1.

   Input (fields read in order, zeros once the input runs out):
   u8 flags, u8 flags2, u8 body id (1..4), then the body record: raw
   (u16 length + bytes, F_RAW_BODY) or fields for the encoder; u8 chunk
   count, then per chunk: u8 chunk flags and what they ask for; then the
   read plan (seek offset, direct reads). */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "crc32.h"
#include "istream.h"
#include "sha2.h"
#include "unlink-directory.h"
#include "lmdb-records.h"
#include "lmdb-env.h"
#include "lmdb-body.h"
#include "lmdb-istream.h"
#include "fuzz-common.h"

#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* flags */
#define F_RAW_BODY 0x01
#define F_SEAL_BODY 0x02
#define F_VERIFY 0x04
#define F_FULL_VERIFY 0x08
#define F_SEEK 0x10
#define F_DIRECT 0x20
#define F_NO_BODY 0x40
#define F_OTHER_BODY 0x80
/* flags2 */
#define F2_SHA_RIGHT 0x01
#define F2_GARBAGE_BODY 0x02
#define F2_BIG_SIZES 0x04
#define F2_PLAIN_VERIFY 0x08

/* chunk flags */
#define C_SEAL_MASK 0x03
#define C_SEAL_V2 0
#define C_SEAL_V1 1
#define C_SEAL_INPUT 2
#define C_SEAL_WRONG_KEY 3
#define C_HDR_INPUT 0x04
#define C_KEY_MASK 0x18
#define C_KEY_NEXT 0x00
#define C_KEY_IDX 0x08
#define C_KEY_OTHER_BODY 0x10
#define C_KEY_RAW 0x18
#define C_DATA_INPUT 0x20
#define C_SIZE_DELTA 0x40

#define MAX_CHUNKS 64
#define MAX_GEN_CHUNK_SIZE 8192

struct kv {
	buffer_t *key, *value;
};

struct plan {
	uint8_t flags, flags2;
	uint64_t body_id;
	/* body record: the key it is put under and its value, if any */
	bool have_body;
	uint64_t body_key_id;
	buffer_t *body_value;
	/* the record as the encoder got it (built records) */
	bool built;
	struct lmdb_body_record rec;
	struct kv garbage_body;
	ARRAY(struct kv) chunks;
};

static char *fuzz_dir;
static struct lmdb_env *fuzz_env;

static void fuzz_cleanup(void)
{
	const char *error;

	if (fuzz_env != NULL)
		lmdb_env_unref(&fuzz_env);
	lmdb_env_deinit();
	if (fuzz_dir != NULL &&
	    unlink_directory(fuzz_dir, UNLINK_DIRECTORY_FLAG_RMDIR,
			     &error) < 0)
		i_error("unlink_directory(%s) failed: %s", fuzz_dir, error);
}

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	struct lmdb_env_settings set;
	const char *error;

	fuzz_init();
	fuzz_dir = i_strdup_printf("%s/fuzz-lmdb-body.XXXXXX", base);
	if (mkdtemp(fuzz_dir) == NULL)
		i_fatal("mkdtemp(%s) failed: %m", fuzz_dir);
	atexit(fuzz_cleanup);
	i_zero(&set);
	set.map_size_initial = 4 * 1024 * 1024;
	set.map_size_max = 256 * 1024 * 1024;
	set.map_reserve = 1024 * 1024;
	set.max_readers = 16;
	set.no_sync = TRUE;
	set.mode = 0600;
	if (lmdb_env_open(fuzz_dir, &set, &fuzz_env, &error) < 0)
		i_fatal("lmdb_env_open(%s) failed: %s", fuzz_dir, error);
	return 0;
}

/* --- building the records from the input --- */

static void gen_data(buffer_t *buf, uint32_t idx, size_t size)
{
	size_t i;

	for (i = 0; i < size; i++)
		buffer_append_c(buf, (uint8_t)(idx * 31 + i * 7 + (i >> 8)));
}

static size_t layout_size(const struct lmdb_body_record *rec, uint32_t idx)
{
	/* what lmdb-body-read.c expects, including its wrap-around for an
	   index past the last chunk (which no chunk can match) */
	if (idx + 1 < rec->chunk_count)
		return rec->chunk_size;
	return rec->physical_size - (uint64_t)idx * rec->chunk_size;
}

static void
build_body_record(struct plan *plan, struct fuzz_input *in)
{
	struct lmdb_body_record *rec = &plan->rec;
	unsigned char key[LMDB_BODY_ID_SIZE];
	const unsigned char *p;
	const char *error;
	size_t n;

	plan->have_body = (plan->flags & F_NO_BODY) == 0;
	plan->body_key_id = (plan->flags & F_OTHER_BODY) != 0 ?
		plan->body_id ^ 1 : plan->body_id;
	plan->body_value = t_buffer_create(256);
	if ((plan->flags & F_RAW_BODY) != 0) {
		n = fuzz_slice(in, 4096, &p);
		buffer_append(plan->body_value, p, n);
		if ((plan->flags & F_SEAL_BODY) != 0) {
			lmdb_body_id_encode(plan->body_key_id, key);
			fuzz_seal(buffer_get_modifiable_data(plan->body_value,
							     NULL),
				  n, LMDB_RECORD_TYPE_BODY, key, sizeof(key));
		}
		return;
	}
	i_zero(rec);
	rec->state = 1 + fuzz_u8(in) % 3;
	rec->refcount = fuzz_u8(in);
	if ((plan->flags2 & F2_BIG_SIZES) != 0) {
		rec->chunk_size = fuzz_u32(in);
		rec->physical_size = fuzz_u64(in);
	} else {
		/* small layouts, which generated chunks can fill */
		rec->chunk_size = fuzz_u16(in) % (MAX_GEN_CHUNK_SIZE + 1);
		rec->physical_size = fuzz_u16(in);
	}
	if (rec->chunk_size != 0) {
		rec->chunk_count = rec->physical_size / rec->chunk_size +
			(rec->physical_size % rec->chunk_size != 0 ? 1 : 0);
	}
	rec->message_size = rec->physical_size;
	rec->virtual_size = rec->physical_size + fuzz_u8(in);
	rec->received_date = (int64_t)fuzz_u32(in);
	rec->save_date = rec->received_date;
	rec->guid = t_strdup_printf("fuzz-%u", fuzz_u8(in));
	/* the SHA-256 is filled in once the chunks are known */
	if (!lmdb_body_record_encode(plan->body_value, plan->body_key_id, rec,
				     &error)) {
		/* the layout is one the encoder refuses: no record */
		plan->have_body = FALSE;
		return;
	}
	plan->built = TRUE;
}

static void
build_chunk(struct plan *plan, struct fuzz_input *in, uint32_t *next_idx)
{
	struct kv *kv = array_append_space(&plan->chunks);
	unsigned char hdr[LMDB_CHUNK_HDR_SIZE], key[LMDB_CHUNK_KEY_SIZE];
	uint8_t cflags = fuzz_u8(in);
	const unsigned char *p;
	uint64_t key_body_id = plan->body_id;
	uint32_t idx, crc;
	size_t n, data_size;
	buffer_t *data = t_buffer_create(256);

	switch (cflags & C_KEY_MASK) {
	case C_KEY_NEXT:
		idx = (*next_idx)++;
		break;
	case C_KEY_IDX:
		idx = fuzz_u8(in);
		break;
	case C_KEY_OTHER_BODY:
		key_body_id ^= 1;
		idx = fuzz_u8(in);
		break;
	default:
		idx = 0;
		break;
	}
	kv->key = t_buffer_create(LMDB_CHUNK_KEY_SIZE);
	if ((cflags & C_KEY_MASK) == C_KEY_RAW) {
		/* LMDB keys are 1..511 bytes */
		n = fuzz_bytes(in, 1 + fuzz_u8(in) % 40, &p);
		buffer_append(kv->key, p, n);
		if (n == 0)
			buffer_append_c(kv->key, 0);
	} else {
		lmdb_chunk_key_encode(key_body_id, idx, key);
		buffer_append(kv->key, key, sizeof(key));
	}

	if ((cflags & C_DATA_INPUT) != 0) {
		n = fuzz_slice(in, 65536, &p);
		buffer_append(data, p, n);
	} else {
		data_size = plan->built && plan->rec.chunk_count > 0 ?
			layout_size(&plan->rec, idx) : 0;
		if (data_size > MAX_GEN_CHUNK_SIZE)
			data_size = 0;
		if ((cflags & C_SIZE_DELTA) != 0)
			data_size += (int8_t)fuzz_u8(in);
		if (data_size > MAX_GEN_CHUNK_SIZE + 128)
			data_size = 0;
		gen_data(data, idx, data_size);
	}

	/* the header: version by seal, no flags, the checksum the seal
	   asks for */
	hdr[0] = (cflags & C_SEAL_MASK) == C_SEAL_V1 ? 1 : 2;
	hdr[1] = hdr[2] = hdr[3] = 0;
	switch (cflags & C_SEAL_MASK) {
	case C_SEAL_V1:
		crc = crc32_data(data->data, data->used);
		break;
	case C_SEAL_INPUT:
		crc = fuzz_u32(in);
		break;
	case C_SEAL_WRONG_KEY:
		/* sealed for the chunk of another body: the checksum
		   binds a chunk to its key */
		lmdb_chunk_key_encode(key_body_id ^ 2, idx, key);
		crc = fuzz_record_crc(LMDB_RECORD_TYPE_CHUNK, key, sizeof(key),
				      data->data, data->used);
		break;
	default:
		crc = fuzz_record_crc(LMDB_RECORD_TYPE_CHUNK, kv->key->data,
				      kv->key->used, data->data, data->used);
		break;
	}
	if ((cflags & C_HDR_INPUT) != 0) {
		uint32_t h = fuzz_u32(in);

		hdr[0] = h >> 24;
		hdr[1] = h >> 16;
		hdr[2] = h >> 8;
		hdr[3] = h;
	}
	cpu32_to_be_unaligned(crc, hdr + 4);
	kv->value = t_buffer_create(data->used + sizeof(hdr));
	buffer_append(kv->value, hdr, sizeof(hdr));
	buffer_append_buf(kv->value, data, 0, SIZE_MAX);
}

/* --- the model --- */

/* The last value written under the chunk key, or NULL. */
static const buffer_t *
model_chunk_value(const struct plan *plan, uint64_t body_id, uint32_t idx)
{
	unsigned char key[LMDB_CHUNK_KEY_SIZE];
	const struct kv *kvs;
	unsigned int i, count;

	lmdb_chunk_key_encode(body_id, idx, key);
	kvs = array_get(&plan->chunks, &count);
	for (i = count; i > 0; i--) {
		if (kvs[i-1].key->used == sizeof(key) &&
		    memcmp(kvs[i-1].key->data, key, sizeof(key)) == 0)
			return kvs[i-1].value;
	}
	return NULL;
}

/* Is chunk idx readable (with or without checksums), and what data? */
static bool
model_chunk(const struct plan *plan, const struct lmdb_body_record *rec,
	    uint32_t idx, bool verify, const unsigned char **data_r,
	    size_t *size_r)
{
	const buffer_t *value = model_chunk_value(plan, plan->body_id, idx);
	const unsigned char *v;
	unsigned char key[LMDB_CHUNK_KEY_SIZE];
	uint32_t crc;

	if (value == NULL || value->used < LMDB_CHUNK_HDR_SIZE)
		return FALSE;
	v = value->data;
	*data_r = v + LMDB_CHUNK_HDR_SIZE;
	*size_r = value->used - LMDB_CHUNK_HDR_SIZE;
	if (verify) {
		if (v[1] != 0 || v[2] != 0 || v[3] != 0)
			return FALSE;
		lmdb_chunk_key_encode(plan->body_id, idx, key);
		if (v[0] == 1)
			crc = crc32_data(*data_r, *size_r);
		else if (v[0] == 2) {
			crc = fuzz_record_crc(LMDB_RECORD_TYPE_CHUNK, key,
					      sizeof(key), *data_r, *size_r);
		} else {
			return FALSE;
		}
		if (crc != be32_to_cpu_unaligned(v + 4))
			return FALSE;
	}
	return *size_r == layout_size(rec, idx);
}

/* The bytes of the whole chunks before the first bad one; TRUE if all
   chunk_count chunks are whole. */
static bool model_body(const struct plan *plan,
		       const struct lmdb_body_record *rec, buffer_t *content)
{
	const unsigned char *data;
	size_t size;
	uint32_t idx;

	for (idx = 0; idx < rec->chunk_count; idx++) {
		if (!model_chunk(plan, rec, idx, TRUE, &data, &size))
			return FALSE;
		buffer_append(content, data, size);
	}
	return TRUE;
}

/* Every chunk 0..chunk_count-1 there with its layout size, checksums
   not read: what an open checks. */
static bool model_laid_out(const struct plan *plan,
			   const struct lmdb_body_record *rec)
{
	const unsigned char *data;
	size_t size;
	uint32_t idx;

	for (idx = 0; idx < rec->chunk_count; idx++) {
		if (!model_chunk(plan, rec, idx, FALSE, &data, &size))
			return FALSE;
	}
	return TRUE;
}

/* --- writing --- */

static int put(MDB_txn *txn, MDB_dbi dbi, const buffer_t *key,
	       const buffer_t *value, const char **error_r)
{
	MDB_val k, v;
	int ret;

	k.mv_data = (void *)key->data;
	k.mv_size = key->used;
	v.mv_data = (void *)value->data;
	v.mv_size = value->used;
	if ((ret = mdb_put(txn, dbi, &k, &v, 0)) != 0)
		*error_r = t_strdup_printf("mdb_put() failed: %s",
					   mdb_strerror(ret));
	return ret;
}

static int write_plan(MDB_txn *txn, void *context, const char **error_r)
{
	struct plan *plan = context;
	const struct kv *kv;
	unsigned char key[LMDB_BODY_ID_SIZE];
	buffer_t keybuf;
	int ret;

	/* may run again after the map grew: start from empty DBIs */
	if ((ret = mdb_drop(txn, fuzz_env->dbi_bodies, 0)) != 0 ||
	    (ret = mdb_drop(txn, fuzz_env->dbi_chunks, 0)) != 0) {
		*error_r = t_strdup_printf("mdb_drop() failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	if (plan->garbage_body.key != NULL &&
	    (ret = put(txn, fuzz_env->dbi_bodies, plan->garbage_body.key,
		       plan->garbage_body.value, error_r)) != 0)
		return ret;
	if (plan->have_body) {
		lmdb_body_id_encode(plan->body_key_id, key);
		buffer_create_from_const_data(&keybuf, key, sizeof(key));
		if ((ret = put(txn, fuzz_env->dbi_bodies, &keybuf,
			       plan->body_value, error_r)) != 0)
			return ret;
	}
	array_foreach(&plan->chunks, kv) {
		if ((ret = put(txn, fuzz_env->dbi_chunks, kv->key, kv->value,
			       error_r)) != 0)
			return ret;
	}
	return 0;
}

/* --- reading --- */

static void read_stream(struct istream *input, buffer_t *got)
{
	const unsigned char *data;
	size_t size;

	while (i_stream_read_more(input, &data, &size) > 0) {
		buffer_append(got, data, size);
		i_stream_skip(input, size);
	}
}

static void
check_stream(struct plan *plan, struct fuzz_input *in,
	     struct lmdb_body_reader *reader, const struct lmdb_body_record *rec,
	     bool whole, const buffer_t *content)
{
	struct istream *input;
	buffer_t *got = t_buffer_create(content->used + 1);
	const char *error = NULL;
	uoff_t size, offset;
	int ret;

	input = lmdb_istream_create(reader, plan->body_id, rec);
	fuzz_assert(i_stream_get_size(input, TRUE, &size) == 1);
	fuzz_assert(size == rec->physical_size);
	if ((plan->flags & F_VERIFY) != 0) {
		ret = lmdb_istream_verify(input, &error);
		fuzz_assert(ret == (whole ? 1 : 0));
		if (ret == 0)
			fuzz_assert(error != NULL && error[0] != '\0');
	}
	read_stream(input, got);
	if (whole) {
		if (input->stream_errno != 0)
			fuzz_fail("whole body failed: %s", i_stream_get_error(input));
		fuzz_assert(input->eof);
		fuzz_assert_bytes("body read", content->data, content->used,
				  got->data, got->used);
		if ((plan->flags & F_SEEK) != 0) {
			offset = fuzz_u32(in) % (rec->physical_size + 1);
			i_stream_seek(input, offset);
			buffer_set_used_size(got, 0);
			read_stream(input, got);
			fuzz_assert(input->stream_errno == 0);
			fuzz_assert_bytes("body read after seek",
					  CONST_PTR_OFFSET(content->data, offset),
					  content->used - offset,
					  got->data, got->used);
		}
	} else {
		/* fails, after the whole chunks before the damage */
		fuzz_assert(input->stream_errno != 0);
		fuzz_assert(i_stream_get_error(input)[0] != '\0');
		fuzz_assert_bytes("damaged body's readable part",
				  content->data, content->used,
				  got->data, got->used);
	}
	i_stream_unref(&input);
}

static void
check_direct_reads(struct plan *plan, struct fuzz_input *in,
		   struct lmdb_body_reader *reader,
		   const struct lmdb_body_record *rec)
{
	buffer_t *got = t_buffer_create(256), *expected = t_buffer_create(256);
	const unsigned char *data;
	const char *error = NULL;
	uint32_t first, count, n;
	size_t size;
	unsigned int i;
	bool verify;
	int ret;

	for (i = 0; i < 4; i++) {
		first = fuzz_u8(in) % (rec->chunk_count + 2);
		count = 1 + fuzz_u8(in) % 20;
		verify = (fuzz_u8(in) & 1) != 0;
		buffer_set_used_size(got, 0);
		buffer_set_used_size(expected, 0);
		for (n = 0; n < count; n++) {
			if (!model_chunk(plan, rec, first + n, verify, &data,
					 &size))
				break;
			buffer_append(expected, data, size);
		}
		ret = lmdb_body_reader_read(reader, first, count, got, verify,
					    &error);
		fuzz_assert(ret == (int)n);
		if (ret == 0)
			fuzz_assert(error != NULL && error[0] != '\0');
		fuzz_assert_bytes("direct read", expected->data, expected->used,
				  got->data, got->used);
	}
}

static void check_reads(struct plan *plan, struct fuzz_input *in)
{
	struct lmdb_body_record rec;
	struct lmdb_body_reader *reader;
	buffer_t *content = t_buffer_create(1024);
	unsigned char sha[SHA256_RESULTLEN];
	const char *error = NULL;
	pool_t pool = fuzz_pool_create();
	bool whole;
	int ret;

	ret = lmdb_body_reader_open(fuzz_env, plan->body_id, pool, &rec,
				    &reader, &error);
	if (ret != 1) {
		fuzz_assert(ret == 0 || ret == -2);
		/* no record, a damaged one, or a chunk missing or of
		   the wrong size: a record we built opens unless a chunk
		   is */
		fuzz_assert(ret == 0 || (error != NULL && error[0] != '\0'));
		if (plan->built && plan->have_body &&
		    plan->body_key_id == plan->body_id &&
		    (ret != -2 || model_laid_out(plan, &plan->rec))) {
			fuzz_fail("the encoder's record did not open (%d): %s",
				  ret, error == NULL ? "" : error);
		}
		if (ret == 0) {
			fuzz_assert(!plan->have_body ||
				    plan->body_key_id != plan->body_id);
		}
		pool_unref(&pool);
		return;
	}
	fuzz_assert(plan->have_body && plan->body_key_id == plan->body_id);
	fuzz_assert(model_laid_out(plan, &rec));
	whole = model_body(plan, &rec, content);

	if ((plan->flags2 & F2_PLAIN_VERIFY) != 0) {
		/* the same check outside a reader's snapshot */
		ret = lmdb_body_verify(fuzz_env, plan->body_id, &rec, FALSE,
				       &error);
		fuzz_assert(ret == (whole ? 1 : 0));
	}
	if ((plan->flags & F_FULL_VERIFY) != 0) {
		ret = lmdb_body_reader_verify(reader, TRUE, &error);
		sha256_get_digest(content->data, content->used, sha);
		fuzz_assert(ret == (whole && memcmp(sha, rec.sha256,
						   sizeof(sha)) == 0 ? 1 : 0));
	}
	if ((plan->flags & F_DIRECT) != 0)
		check_direct_reads(plan, in, reader, &rec);
	/* the stream takes the reader over */
	check_stream(plan, in, reader, &rec, whole, content);
	pool_unref(&pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in;
	struct plan plan;
	const unsigned char *p;
	const char *error;
	unsigned int i, n;
	uint32_t next_idx = 0;
	size_t len;

	fuzz_input_init(&in, data, size);
	T_BEGIN {
		i_zero(&plan);
		t_array_init(&plan.chunks, 16);
		plan.flags = fuzz_u8(&in);
		plan.flags2 = fuzz_u8(&in);
		plan.body_id = 1 + fuzz_u8(&in) % 4;
		build_body_record(&plan, &in);
		if ((plan.flags2 & F2_GARBAGE_BODY) != 0) {
			/* another record in the bodies DBI, any key */
			plan.garbage_body.key = t_buffer_create(16);
			len = fuzz_bytes(&in, 1 + fuzz_u8(&in) % 16, &p);
			buffer_append(plan.garbage_body.key, p, len);
			if (len == 0)
				buffer_append_c(plan.garbage_body.key, 1);
			plan.garbage_body.value = t_buffer_create(64);
			len = fuzz_slice(&in, 256, &p);
			buffer_append(plan.garbage_body.value, p, len);
		}
		n = fuzz_u8(&in) % (MAX_CHUNKS + 1);
		for (i = 0; i < n; i++)
			build_chunk(&plan, &in, &next_idx);
		if (plan.built) {
			/* seal the built record with the body's real digest,
			   or one from the input */
			buffer_t *content = t_buffer_create(1024);

			(void)model_body(&plan, &plan.rec, content);
			if ((plan.flags2 & F2_SHA_RIGHT) != 0) {
				sha256_get_digest(content->data, content->used,
						  plan.rec.sha256);
			} else {
				len = fuzz_bytes(&in, LMDB_SHA256_SIZE, &p);
				memcpy(plan.rec.sha256, p, len);
			}
			buffer_set_used_size(plan.body_value, 0);
			if (!lmdb_body_record_encode(plan.body_value,
						     plan.body_key_id,
						     &plan.rec, &error))
				fuzz_fail("encoding failed: %s", error);
		}
		if (lmdb_env_write(fuzz_env, write_plan, &plan, FALSE,
				   &error) != 0)
			i_fatal("writing the records failed: %s", error);
		check_reads(&plan, &in);
	} T_END;
	return 0;
}
