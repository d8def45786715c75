/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "str.h"
#include "ioloop.h"
#include "istream.h"
#include "unlink-directory.h"
#include "test-common.h"
#include "lmdb-records.h"
#include "test-rand.h"
#include "lmdb-env.h"
#include "lmdb-body.h"
#include "lmdb-link.h"

#include <stdlib.h>
#include <unistd.h>
#include <sys/stat.h>
#include <openssl/evp.h>

#define MB (1024ULL * 1024)
#define CHUNK LMDB_BODY_CHUNK_SIZE

static char test_dir[64];


static unsigned char *test_random_data(size_t size, uint64_t seed)
{
	unsigned char *data = i_malloc(size + 1);
	size_t i;

	test_rand_seed(seed);
	for (i = 0; i < size; i++)
		data[i] = test_rand64() >> 56;
	return data;
}

static bool test_str_contains(const char *str, const char *substr)
{
	return str != NULL && strstr(str, substr) != NULL;
}

/* Environment per test */

static struct lmdb_env *
test_env_open_set(uint64_t map_initial, uint64_t map_max, uint64_t reserve)
{
	struct lmdb_env_settings set;
	struct lmdb_env *env;
	const char *error;

	i_zero(&set);
	set.map_size_initial = map_initial;
	set.map_size_max = map_max;
	set.map_reserve = reserve;
	set.max_readers = 16;
	/* durability is not under test, and fsyncs make the test slow */
	set.no_sync = TRUE;
	set.mode = 0600;
	if (lmdb_env_open(test_dir, &set, &env, &error) < 0)
		i_fatal("lmdb_env_open(%s) failed: %s", test_dir, error);
	return env;
}

static struct lmdb_env *test_env_init(void)
{
	i_strocpy(test_dir, "/tmp/test-lmdb-body.XXXXXX", sizeof(test_dir));
	if (mkdtemp(test_dir) == NULL)
		i_fatal("mkdtemp(%s) failed: %m", test_dir);
	/* the same clock for every test: the GC tests pick their own */
	ioloop_time = 1000000;
	return test_env_open_set(4 * MB, 256 * MB, 1 * MB);
}

static void test_env_deinit(struct lmdb_env **env)
{
	const char *error;

	if (*env != NULL)
		lmdb_env_unref(env);
	/* each test starts without the environment kept open */
	lmdb_env_deinit();
	if (unlink_directory(test_dir, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0)
		i_error("unlink_directory(%s) failed: %s", test_dir, error);
}

static struct lmdb_env_record test_env_record(struct lmdb_env *env)
{
	struct lmdb_env_record rec;
	const char *error;
	MDB_txn *txn;

	i_zero(&rec);
	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("lmdb_env_read_begin() failed: %s", error);
	if (lmdb_env_record_get(env, txn, &rec, &error) != 0)
		i_fatal("lmdb_env_record_get() failed: %s", error);
	lmdb_env_read_end(env, &txn);
	return rec;
}

static uint64_t test_dbi_entries(struct lmdb_env *env, MDB_dbi dbi)
{
	MDB_stat st;
	const char *error;
	MDB_txn *txn;

	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("lmdb_env_read_begin() failed: %s", error);
	if (mdb_stat(txn, dbi, &st) != 0)
		i_fatal("mdb_stat() failed");
	lmdb_env_read_end(env, &txn);
	return st.ms_entries;
}

/* Number of chunk keys of one body, found by scanning: catches chunks
   beyond chunk_count that a delete left behind. */
static unsigned int test_body_chunk_keys(struct lmdb_env *env,
					 uint64_t body_id)
{
	unsigned char key_data[LMDB_CHUNK_KEY_SIZE];
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	MDB_txn *txn;
	uint64_t id;
	uint32_t idx;
	unsigned int count = 0;
	int ret;

	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("lmdb_env_read_begin() failed: %s", error);
	if (mdb_cursor_open(txn, env->dbi_chunks, &cursor) != 0)
		i_fatal("mdb_cursor_open() failed");
	lmdb_chunk_key_encode(body_id, 0, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	ret = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
	while (ret == 0 &&
	       lmdb_chunk_key_decode(key.mv_data, key.mv_size, &id, &idx) &&
	       id == body_id) {
		count++;
		ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
	}
	mdb_cursor_close(cursor);
	lmdb_env_read_end(env, &txn);
	return count;
}

/* Writing bodies */

static const struct lmdb_body_info test_info = {
	.guid = "test-guid-0001",
	.received_date = 1600000000,
	.save_date = 1600000100,
	.orig_mailbox_guid = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
			       14, 15, 16 },
};

/* Append data in odd-sized pieces that straddle chunk and flush
   boundaries. Returns 0, or -1 with the writer's last ret in *ret_r. */
static int test_body_write_ret(struct lmdb_env *env, const void *data,
			       size_t size, uint64_t *body_id_r,
			       uint64_t *psize_r, uint64_t *vsize_r,
			       int *last_ret_r)
{
	static const size_t pieces[] = {
		1, 7, 4093, CHUNK - 1, 2, CHUNK + 3, 65521, 131071, 333333
	};
	struct lmdb_body_writer *writer;
	const unsigned char *p = data;
	const char *error;
	size_t pos = 0, n;
	unsigned int i = 0;
	int ret = 0;

	*last_ret_r = 0;
	writer = lmdb_body_writer_init(env);
	while (pos < size && ret == 0) {
		/* I_MIN() evaluates its arguments twice */
		n = pieces[i++ % N_ELEMENTS(pieces)];
		n = I_MIN(n, size - pos);
		ret = lmdb_body_writer_append(writer, p + pos, n, &error);
		pos += n;
	}
	/* empty appends are allowed anywhere */
	if (ret == 0)
		ret = lmdb_body_writer_append(writer, "", 0, &error);
	if (ret == 0) {
		ret = lmdb_body_writer_finish(writer, &test_info, body_id_r,
					      psize_r, vsize_r, &error);
	}
	if (ret < 0)
		*last_ret_r = lmdb_body_writer_get_last_ret(writer);
	lmdb_body_writer_free(&writer);
	return ret;
}

static uint64_t test_body_write(struct lmdb_env *env, const void *data,
				size_t size)
{
	uint64_t body_id, psize, vsize;
	int last_ret;

	if (test_body_write_ret(env, data, size, &body_id, &psize, &vsize,
				&last_ret) < 0)
		i_fatal("writing a body of %zu bytes failed: %d", size, last_ret);
	test_assert(psize == size);
	return body_id;
}

static int test_body_get(struct lmdb_env *env, uint64_t body_id,
			 struct lmdb_body_record *rec_r)
{
	const char *error;
	int ret;

	/* the record's strings come from the data stack of the caller */
	ret = lmdb_body_get(env, body_id, pool_datastack_create(), rec_r, &error);
	if (ret < 0)
		i_fatal("lmdb_body_get() failed: %s", error);
	return ret;
}

static int test_body_verify(struct lmdb_env *env, uint64_t body_id,
			    bool full, const char **error_r)
{
	struct lmdb_body_record rec;

	*error_r = NULL;
	if (test_body_get(env, body_id, &rec) <= 0) {
		*error_r = "no body record";
		return -2;
	}
	return lmdb_body_verify(env, body_id, &rec, full, error_r);
}

static void test_sha256(const void *data, size_t size,
			unsigned char digest[LMDB_SHA256_SIZE])
{
	unsigned int len;

	if (EVP_Digest(data, size, digest, &len, EVP_sha256(), NULL) != 1)
		i_fatal("EVP_Digest() failed");
}

/* Write callbacks */

typedef void test_txn_func_t(struct lmdb_env *env, MDB_txn *txn,
			     void *context);

struct test_txn_ctx {
	struct lmdb_env *env;
	test_txn_func_t *func;
	void *context;
};

static int test_txn_callback(MDB_txn *txn, void *context,
			     const char **error_r ATTR_UNUSED)
{
	struct test_txn_ctx *ctx = context;

	ctx->func(ctx->env, txn, ctx->context);
	return 0;
}

/* Run func in a committed write transaction of lmdb_env_write(). */
static void test_write(struct lmdb_env *env, test_txn_func_t *func,
		       void *context)
{
	struct test_txn_ctx ctx = {
		.env = env, .func = func, .context = context
	};
	const char *error;

	if (lmdb_env_write(env, test_txn_callback, &ctx, TRUE, &error) != 0)
		i_fatal("lmdb_env_write() failed: %s", error);
}

struct test_ref_ctx {
	uint64_t body_id;
	int delta;
	int64_t now;
	int ret;
};

static void test_ref_txn(struct lmdb_env *env, MDB_txn *txn, void *context)
{
	struct test_ref_ctx *ctx = context;
	const char *error;

	ctx->ret = lmdb_body_ref(env, txn, ctx->body_id, ctx->delta,
				 ctx->now, NULL, &error);
}

static int test_body_ref(struct lmdb_env *env, uint64_t body_id, int delta,
			 int64_t now)
{
	struct test_ref_ctx ctx = {
		.body_id = body_id, .delta = delta, .now = now
	};

	test_write(env, test_ref_txn, &ctx);
	return ctx.ret;
}

enum test_chunk_damage {
	TEST_CHUNK_FLIP_BYTE,
	TEST_CHUNK_DELETE,
	/* replace the data with other data of the same size and a valid
	   CRC: only the SHA-256 notices */
	TEST_CHUNK_REPLACE_VALID,
	/* one byte shorter, with a valid CRC */
	TEST_CHUNK_SHORTEN_VALID,
};

struct test_damage_ctx {
	uint64_t body_id;
	uint32_t idx;
	enum test_chunk_damage damage;
};

static void test_damage_txn(struct lmdb_env *env, MDB_txn *txn, void *context)
{
	struct test_damage_ctx *ctx = context;
	unsigned char key_data[LMDB_CHUNK_KEY_SIZE];
	unsigned char *value;
	MDB_val key, val;
	size_t size;

	lmdb_chunk_key_encode(ctx->body_id, ctx->idx, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	if (mdb_get(txn, env->dbi_chunks, &key, &val) != 0)
		i_fatal("chunk to damage not found");
	if (ctx->damage == TEST_CHUNK_DELETE) {
		if (mdb_del(txn, env->dbi_chunks, &key, NULL) != 0)
			i_fatal("mdb_del(chunk) failed");
		return;
	}
	size = val.mv_size;
	value = t_malloc_no0(size);
	memcpy(value, val.mv_data, size);
	switch (ctx->damage) {
	case TEST_CHUNK_FLIP_BYTE:
		value[size - 1] ^= 0x01;
		break;
	case TEST_CHUNK_REPLACE_VALID:
		value[size - 1] ^= 0x01;
		lmdb_chunk_header_encode(value, ctx->body_id, ctx->idx,
					 value + LMDB_CHUNK_HDR_SIZE,
					 size - LMDB_CHUNK_HDR_SIZE);
		break;
	case TEST_CHUNK_SHORTEN_VALID:
		size--;
		lmdb_chunk_header_encode(value, ctx->body_id, ctx->idx,
					 value + LMDB_CHUNK_HDR_SIZE,
					 size - LMDB_CHUNK_HDR_SIZE);
		break;
	case TEST_CHUNK_DELETE:
		i_unreached();
	}
	val.mv_data = value;
	val.mv_size = size;
	if (mdb_put(txn, env->dbi_chunks, &key, &val, 0) != 0)
		i_fatal("mdb_put(chunk) failed");
}

static void test_damage_chunk(struct lmdb_env *env, uint64_t body_id,
			      uint32_t idx, enum test_chunk_damage damage)
{
	struct test_damage_ctx ctx = {
		.body_id = body_id, .idx = idx, .damage = damage
	};

	test_write(env, test_damage_txn, &ctx);
}

/* Read the whole body back chunk by chunk. */
static bool test_body_read_equals(struct lmdb_env *env, uint64_t body_id,
				  const void *data, size_t size)
{
	struct lmdb_body_record rec;
	buffer_t *buf;
	const char *error;
	uint32_t idx;
	bool ret = TRUE;

	if (test_body_get(env, body_id, &rec) <= 0)
		return FALSE;
	buf = buffer_create_dynamic(default_pool, size + 1);
	for (idx = 0; idx < rec.chunk_count && ret; idx++) {
		size_t old_used = buf->used;

		if (lmdb_body_read_chunk(env, body_id, idx, buf, &error) != 1)
			ret = FALSE;
		/* all chunks but the last are full */
		else if (idx + 1 < rec.chunk_count &&
			 buf->used - old_used != CHUNK)
			ret = FALSE;
	}
	if (ret && (buf->used != size || memcmp(buf->data, data, size) != 0))
		ret = FALSE;
	buffer_free(&buf);
	return ret;
}

/* Tests */

/* Sizes that are a multiple of the chunk size but not flushed completely
   by the appends hit a failing assert in the writer's final flush (see
   test_body_chunk_multiple_bug()). */
static const size_t test_body_sizes[] = {
	0, 1, CHUNK - 1, CHUNK + 1, 2 * CHUNK - 1, 16 * CHUNK,
	16 * CHUNK + 1, 3 * MB
};
static const size_t test_body_sizes_bug[] = {
	CHUNK, 2 * CHUNK, 15 * CHUNK, 17 * CHUNK, 32 * CHUNK
};

static void test_body_write_read_sizes(const size_t *sizes,
				       unsigned int sizes_count)
{
	struct lmdb_env *env;
	struct lmdb_body_record rec;
	struct lmdb_env_record before, after;
	unsigned char digest[LMDB_SHA256_SIZE];
	uint64_t ids[sizes_count], total = 0;
	const char *error;
	unsigned int i;

	env = test_env_init();
	before = test_env_record(env);
	for (i = 0; i < sizes_count; i++) {
		unsigned char *data = test_random_data(sizes[i], 100 + i);

		ids[i] = test_body_write(env, data, sizes[i]);
		total += sizes[i];
		/* ids are never reused */
		test_assert_idx(i == 0 || ids[i] > ids[i - 1], i);
		T_BEGIN {
			test_assert_idx(test_body_get(env, ids[i], &rec) == 1, i);
			test_assert_idx(rec.state == LMDB_BODY_STATE_PENDING, i);
			test_assert_idx(rec.refcount == 0, i);
			test_assert_idx(rec.physical_size == sizes[i], i);
			test_assert_idx(rec.message_size == sizes[i], i);
			test_assert_idx(rec.chunk_size == CHUNK, i);
			test_assert_idx(rec.chunk_count ==
					(sizes[i] + CHUNK - 1) / CHUNK, i);
			test_assert_idx(rec.received_date ==
					test_info.received_date, i);
			test_assert_idx(rec.save_date == test_info.save_date, i);
			test_assert_idx(rec.state_since == ioloop_time, i);
			test_assert_idx(strcmp(rec.guid, test_info.guid) == 0, i);
			test_assert_idx(guid_128_equals(rec.orig_mailbox_guid,
				test_info.orig_mailbox_guid), i);
			test_sha256(data, sizes[i], digest);
			test_assert_idx(memcmp(rec.sha256, digest,
					       sizeof(digest)) == 0, i);
			test_assert_idx(test_body_chunk_keys(env, ids[i]) ==
					rec.chunk_count, i);
			test_assert_idx(lmdb_body_verify(env, ids[i], &rec, TRUE,
							 &error) == 1, i);
			test_assert_idx(lmdb_body_verify(env, ids[i], &rec, FALSE,
							 &error) == 1, i);
		} T_END;
		test_assert_idx(test_body_read_equals(env, ids[i], data,
						      sizes[i]), i);
		i_free(data);
	}
	after = test_env_record(env);
	test_assert(after.bodies == before.bodies + sizes_count);
	test_assert(after.body_bytes == before.body_bytes + total);
	test_assert(after.next_body_id == ids[sizes_count - 1] + 1);
	/* every new body waits for the pending GC */
	test_assert(test_dbi_entries(env, env->dbi_gc) == sizes_count);
	T_BEGIN {
		buffer_t *buf = t_buffer_create(16);
		struct lmdb_body_record last;

		/* past the end of each body */
		for (i = 0; i < sizes_count; i++) {
			test_assert_idx(test_body_get(env, ids[i], &last) == 1, i);
			test_assert_idx(lmdb_body_read_chunk(env, ids[i],
				last.chunk_count, buf, &error) == 0, i);
			test_assert_idx(test_str_contains(error, "missing"), i);
		}
		test_assert(buf->used == 0);
		test_assert(test_body_get(env, 999999, &rec) == 0);
	} T_END;
	test_env_deinit(&env);
}

static void test_body_write_read(void)
{
	test_begin("body write and read back");
	test_body_write_read_sizes(test_body_sizes,
				   N_ELEMENTS(test_body_sizes));
	test_end();
}

static void test_body_chunk_multiple_bug(void)
{
	test_begin("body sizes that are chunk size multiples");
	test_body_write_read_sizes(test_body_sizes_bug,
				   N_ELEMENTS(test_body_sizes_bug));
	test_end();
}

/* The reference: each LF not preceded by CR counts one extra byte. */
static uint64_t test_virtual_size(const unsigned char *data, size_t size)
{
	uint64_t vsize = size;
	size_t i;

	for (i = 0; i < size; i++) {
		if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r'))
			vsize++;
	}
	return vsize;
}

static uint64_t test_write_pieces(struct lmdb_env *env,
				  const char *const *pieces,
				  uint64_t *vsize_r)
{
	struct lmdb_body_writer *writer = lmdb_body_writer_init(env);
	uint64_t body_id, psize;
	const char *error;
	unsigned int i;

	for (i = 0; pieces[i] != NULL; i++) {
		if (lmdb_body_writer_append(writer, pieces[i], strlen(pieces[i]),
					    &error) < 0)
			i_fatal("append failed: %s", error);
	}
	if (lmdb_body_writer_finish(writer, &test_info, &body_id, &psize,
				    vsize_r, &error) < 0)
		i_fatal("finish failed: %s", error);
	lmdb_body_writer_free(&writer);
	return body_id;
}

static void test_body_virtual_size(void)
{
	static const char *const texts[][8] = {
		{ "a\r\nb\nc\r", "\nd\n", "\n", "e\r\n\r\n", "\r", "x\n", NULL },
		/* LF first in the body, and first in a piece after a
		   piece that didn't end in CR */
		{ "\n", "\n", "a", "\nb\r", "\r\n", NULL },
		/* CR alone at the end of a piece, LF after an empty
		   append */
		{ "abc\r", "", "\n", "\r", "", "\r\n", "\n\n\n", NULL },
		{ "no newlines", NULL },
		{ "\r\n\r\n", NULL },
		{ "\n", NULL },
		{ "\r", NULL },
		{ NULL },
	};
	struct lmdb_env *env;
	struct lmdb_body_record rec;
	uint64_t body_id, vsize;
	unsigned int i, j;

	test_begin("body virtual size");
	env = test_env_init();
	for (i = 0; i < N_ELEMENTS(texts); i++) T_BEGIN {
		string_t *full = t_str_new(64);

		for (j = 0; texts[i][j] != NULL; j++)
			str_append(full, texts[i][j]);
		body_id = test_write_pieces(env, texts[i], &vsize);
		test_assert_idx(vsize == test_virtual_size(full->data,
							   full->used), i);
		test_assert_idx(test_body_get(env, body_id, &rec) == 1, i);
		test_assert_idx(rec.virtual_size == vsize, i);
		test_assert_idx(rec.physical_size == full->used, i);
		test_assert_idx(rec.message_size == full->used, i);
	} T_END;
	/* the first set, counted by hand: 4 bare LFs */
	T_BEGIN {
		body_id = test_write_pieces(env, texts[0], &vsize);
		test_assert(vsize == strlen("a\r\nb\nc\r\nd\n\ne\r\n\r\n\rx\n") + 4);
	} T_END;

	/* random CR/LF text in random pieces, across chunk boundaries */
	T_BEGIN {
		static const char alphabet[] = "\r\n\n\rab";
		size_t size = 3 * CHUNK + 12345, pos = 0, n;
		unsigned char *data = i_malloc(size);
		struct lmdb_body_writer *writer;
		uint64_t psize;
		const char *error;

		test_rand_seed(77);
		for (j = 0; j < size; j++)
			data[j] = alphabet[test_rand64() % (sizeof(alphabet) - 1)];
		writer = lmdb_body_writer_init(env);
		while (pos < size) {
			n = 1 + test_rand64() % 50;
			n = I_MIN(n, size - pos);
			test_assert(lmdb_body_writer_append(writer, data + pos,
							    n, &error) == 0);
			pos += n;
		}
		test_assert(lmdb_body_writer_finish(writer, &test_info,
						    &body_id, &psize, &vsize,
						    &error) == 0);
		lmdb_body_writer_free(&writer);
		test_assert(psize == size);
		test_assert(vsize == test_virtual_size(data, size));
		test_assert(vsize > size);
		test_assert(test_body_read_equals(env, body_id, data, size));
		i_free(data);
	} T_END;

	/* a transforming plugin passes the message's own sizes */
	T_BEGIN {
		struct lmdb_body_writer *writer = lmdb_body_writer_init(env);
		struct lmdb_body_info info = test_info;
		uint64_t psize;
		const char *error;

		info.message_size = 5000;
		info.virtual_size = 5100;
		test_assert(lmdb_body_writer_append(writer, "compressed\n", 11,
						    &error) == 0);
		test_assert(lmdb_body_writer_finish(writer, &info, &body_id,
						    &psize, &vsize,
						    &error) == 0);
		lmdb_body_writer_free(&writer);
		test_assert(psize == 11 && vsize == 5100);
		test_assert(test_body_get(env, body_id, &rec) == 1);
		test_assert(rec.physical_size == 11);
		test_assert(rec.message_size == 5000);
		test_assert(rec.virtual_size == 5100);
	} T_END;
	test_env_deinit(&env);
	test_end();
}

static void test_body_damage(void)
{
	size_t size = 2 * CHUNK + 100;
	unsigned char *data = test_random_data(size, 5);
	struct lmdb_env *env;
	uint64_t body_id, other_id;
	const char *error;

	test_begin("body damage is detected");
	env = test_env_init();
	T_BEGIN {
		buffer_t *buf = t_buffer_create(CHUNK);

		body_id = test_body_write(env, data, size);
		other_id = test_body_write(env, data, size);
		test_assert(test_body_verify(env, body_id, TRUE, &error) == 1);

		/* one byte of the last chunk */
		test_damage_chunk(env, body_id, 2, TEST_CHUNK_FLIP_BYTE);
		test_assert(test_body_verify(env, body_id, TRUE, &error) == 0);
		test_assert(test_str_contains(error, "chunk 2 of 3"));
		test_assert(test_str_contains(error, "checksum"));
		test_assert(test_body_verify(env, body_id, FALSE, &error) == 0);
		test_assert(test_str_contains(error, "chunk 2 of 3"));
		test_assert(lmdb_body_read_chunk(env, body_id, 2, buf,
						 &error) == 0);
		test_assert(test_str_contains(error, "chunk 2"));
		test_assert(buf->used == 0);
		test_assert(lmdb_body_read_chunk(env, body_id, 1, buf,
						 &error) == 1);
		test_assert(buf->used == CHUNK &&
			    memcmp(buf->data, data + CHUNK, CHUNK) == 0);
		/* damage stays where it is */
		test_assert(test_body_verify(env, other_id, TRUE, &error) == 1);

		/* a missing chunk in the middle */
		test_damage_chunk(env, body_id, 1, TEST_CHUNK_DELETE);
		test_assert(test_body_verify(env, body_id, FALSE, &error) == 0);
		test_assert(test_str_contains(error, "chunk 1 of 3 is missing"));
		buffer_set_used_size(buf, 0);
		test_assert(lmdb_body_read_chunk(env, body_id, 1, buf,
						 &error) == 0);
		test_assert(test_str_contains(error, "missing"));

		/* valid CRC, wrong data: only the full check finds it */
		test_damage_chunk(env, other_id, 0, TEST_CHUNK_REPLACE_VALID);
		test_assert(test_body_verify(env, other_id, FALSE, &error) == 1);
		test_assert(test_body_verify(env, other_id, TRUE, &error) == 0);
		test_assert(test_str_contains(error, "SHA-256"));
		buffer_set_used_size(buf, 0);
		test_assert(lmdb_body_read_chunk(env, other_id, 0, buf,
						 &error) == 1);

		/* valid CRC, short chunk */
		test_damage_chunk(env, other_id, 1, TEST_CHUNK_SHORTEN_VALID);
		test_assert(test_body_verify(env, other_id, FALSE, &error) == 0);
		test_assert(test_str_contains(error, "chunk 1 of 3 has"));
	} T_END;
	i_free(data);
	test_env_deinit(&env);
	test_end();
}

static void test_body_refcount_gc(void)
{
	const unsigned int pending_grace = 3600, dead_grace = 86400;
	size_t size = 3 * CHUNK + 7;
	unsigned char *data = test_random_data(size, 9);
	struct lmdb_env_record before, after;
	struct lmdb_body_record rec;
	struct lmdb_env *env;
	uint64_t body_id, keep_id;
	int64_t dead_at = 2000000;
	unsigned int freed, damaged;
	const char *damage;
	const char *error;

	test_begin("body refcount states and gc");
	env = test_env_init();
	keep_id = test_body_write(env, "keep me", 7);
	test_assert(test_body_ref(env, keep_id, 1, ioloop_time) == 0);
	before = test_env_record(env);
	T_BEGIN {
		body_id = test_body_write(env, data, size);
		after = test_env_record(env);
		test_assert(after.bodies == before.bodies + 1);
		test_assert(after.body_bytes == before.body_bytes + size);
		test_assert(test_body_get(env, body_id, &rec) == 1 &&
			    rec.state == LMDB_BODY_STATE_PENDING &&
			    rec.refcount == 0);
		test_assert(test_dbi_entries(env, env->dbi_gc) == 1);

		/* first link: no longer collectable */
		test_assert(test_body_ref(env, body_id, 1, 1500000) == 0);
		test_assert(test_body_get(env, body_id, &rec) == 1 &&
			    rec.state == LMDB_BODY_STATE_LINKED &&
			    rec.refcount == 1 && rec.state_since == 1500000);
		test_assert(test_dbi_entries(env, env->dbi_gc) == 0);
		test_assert(test_body_ref(env, body_id, 1, 1600000) == 0);
		test_assert(test_body_get(env, body_id, &rec) == 1 &&
			    rec.state == LMDB_BODY_STATE_LINKED &&
			    rec.refcount == 2);
		test_assert(test_body_ref(env, body_id, -1, 1700000) == 0);
		test_assert(test_body_get(env, body_id, &rec) == 1 &&
			    rec.state == LMDB_BODY_STATE_LINKED &&
			    rec.refcount == 1);
		test_assert(test_dbi_entries(env, env->dbi_gc) == 0);
		/* last link gone */
		test_assert(test_body_ref(env, body_id, -1, dead_at) == 0);
		test_assert(test_body_get(env, body_id, &rec) == 1 &&
			    rec.state == LMDB_BODY_STATE_DEAD &&
			    rec.refcount == 0 && rec.state_since == dead_at);
		test_assert(test_dbi_entries(env, env->dbi_gc) == 1);
		/* a dead body doesn't go below zero */
		test_assert(test_body_ref(env, body_id, -1, dead_at) == 0);
		test_assert(test_body_get(env, body_id, &rec) == 1 &&
			    rec.state == LMDB_BODY_STATE_DEAD &&
			    rec.refcount == 0 && rec.state_since == dead_at);
		test_assert(test_dbi_entries(env, env->dbi_gc) == 1);

		/* within the grace period */
		test_assert(lmdb_body_gc(env, dead_at + dead_grace - 1,
					 pending_grace, dead_grace, 100,
					 &freed, &damaged, &damage, &error) == 0);
		test_assert(freed == 0);
		test_assert(test_body_verify(env, body_id, TRUE, &error) == 1);
		test_assert(test_env_record(env).bodies == before.bodies + 1);

		/* the grace period is over */
		test_assert(lmdb_body_gc(env, dead_at + dead_grace,
					 pending_grace, dead_grace, 100,
					 &freed, &damaged, &damage, &error) == 0);
		test_assert(freed == 1);
		test_assert(test_body_get(env, body_id, &rec) == 0);
		test_assert(test_body_chunk_keys(env, body_id) == 0);
		test_assert(test_dbi_entries(env, env->dbi_gc) == 0);
		after = test_env_record(env);
		test_assert(after.bodies == before.bodies);
		test_assert(after.body_bytes == before.body_bytes);
		/* a linked neighbour is untouched */
		test_assert(test_body_verify(env, keep_id, TRUE, &error) == 1);
		test_assert(test_body_chunk_keys(env, keep_id) == 1);
		/* references to a freed body fail */
		test_assert(test_body_ref(env, body_id, 1, dead_at) ==
			    MDB_NOTFOUND);
	} T_END;
	i_free(data);
	test_env_deinit(&env);
	test_end();
}

static void test_body_gc_pending(void)
{
	const unsigned int pending_grace = 3600, dead_grace = 86400;
	struct lmdb_env_record before, after;
	struct lmdb_body_record rec;
	struct lmdb_env *env;
	uint64_t old_id, new_id, relinked_id, large_id;
	size_t large_size = 17 * CHUNK + 5;
	unsigned char *large = test_random_data(large_size, 3);
	unsigned int freed, damaged;
	const char *damage;
	const char *error;

	test_begin("body gc of pending and re-linked bodies");
	env = test_env_init();
	before = test_env_record(env);
	T_BEGIN {
		ioloop_time = 10000;
		old_id = test_body_write(env, "old pending", 11);
		/* written in two transactions: the gc key keeps the time
		   of the first */
		large_id = test_body_write(env, large, large_size);
		ioloop_time = 20000;
		new_id = test_body_write(env, "new pending", 11);

		/* a dead body that is linked again before the GC */
		relinked_id = test_body_write(env, "relinked", 8);
		test_assert(test_body_ref(env, relinked_id, 1, 20000) == 0);
		test_assert(test_body_ref(env, relinked_id, -1, 20000) == 0);
		test_assert(test_body_get(env, relinked_id, &rec) == 1 &&
			    rec.state == LMDB_BODY_STATE_DEAD);
		test_assert(test_body_ref(env, relinked_id, 1, 20001) == 0);
		test_assert(test_body_get(env, relinked_id, &rec) == 1 &&
			    rec.state == LMDB_BODY_STATE_LINKED &&
			    rec.refcount == 1);

		test_assert(lmdb_body_gc(env, 10000 + pending_grace - 1,
					 pending_grace, dead_grace, 100,
					 &freed, &damaged, &damage, &error) == 0);
		test_assert(freed == 0);
		test_assert(lmdb_body_gc(env, 10000 + pending_grace,
					 pending_grace, dead_grace, 100,
					 &freed, &damaged, &damage, &error) == 0);
		test_assert(freed == 2);
		test_assert(test_body_get(env, old_id, &rec) == 0);
		test_assert(test_body_get(env, large_id, &rec) == 0);
		test_assert(test_body_chunk_keys(env, large_id) == 0);
		test_assert(test_body_get(env, new_id, &rec) == 1 &&
			    rec.state == LMDB_BODY_STATE_PENDING);
		test_assert(test_body_verify(env, new_id, TRUE, &error) == 1);

		/* far in the future: the pending one goes, the re-linked
		   one stays */
		test_assert(lmdb_body_gc(env, 1000000000, pending_grace,
					 dead_grace, 100, &freed,
				 &damaged, &damage,
					 &error) == 0);
		test_assert(freed == 1);
		test_assert(test_body_get(env, new_id, &rec) == 0);
		test_assert(test_body_get(env, relinked_id, &rec) == 1 &&
			    rec.state == LMDB_BODY_STATE_LINKED);
		test_assert(test_body_verify(env, relinked_id, TRUE,
					     &error) == 1);
		test_assert(test_dbi_entries(env, env->dbi_gc) == 0);
		after = test_env_record(env);
		test_assert(after.bodies == before.bodies + 1);
		test_assert(after.body_bytes == before.body_bytes + 8);
	} T_END;
	i_free(large);
	test_env_deinit(&env);
	test_end();
}

static void test_flip_record_txn(struct lmdb_env *env, MDB_txn *txn,
				 void *context)
{
	const uint64_t *body_id = context;
	unsigned char key_data[LMDB_BODY_ID_SIZE];
	unsigned char *value;
	MDB_val key, val;

	lmdb_body_id_encode(*body_id, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	if (mdb_get(txn, env->dbi_bodies, &key, &val) != 0)
		i_fatal("body record to damage not found");
	value = t_malloc_no0(val.mv_size);
	memcpy(value, val.mv_data, val.mv_size);
	value[val.mv_size / 2] ^= 0x10;
	val.mv_data = value;
	if (mdb_put(txn, env->dbi_bodies, &key, &val, 0) != 0)
		i_fatal("mdb_put(body) failed");
}

static void test_body_gc_damaged_record(void)
{
	struct lmdb_env *env;
	struct lmdb_body_record rec;
	uint64_t ids[3];
	unsigned int i, freed, damaged;
	const char *damage = NULL, *error;

	test_begin("body gc leaves a damaged record, frees the others");
	env = test_env_init();
	for (i = 0; i < N_ELEMENTS(ids); i++)
		ids[i] = test_body_write(env, "x", 1);
	/* the first in gc order: one damaged record must not stop purge */
	test_write(env, test_flip_record_txn, &ids[0]);
	test_assert(lmdb_body_gc(env, ioloop_time + 10, 1, 1, 100, &freed,
				 &damaged, &damage, &error) == 0);
	test_assert(freed == 2);
	test_assert(damaged == 1);
	test_assert(damage != NULL && strstr(damage, "body ") != NULL);
	/* kept, with its gc entry, for verify -r */
	test_assert(test_dbi_entries(env, env->dbi_bodies) == 1);
	test_assert(test_dbi_entries(env, env->dbi_gc) == 1);
	test_assert(test_body_get(env, ids[1], &rec) == 0);
	test_env_deinit(&env);
	test_end();
}

static void test_body_gc_max_bodies(void)
{
	struct lmdb_env *env;
	unsigned int i, freed, damaged;
	const char *damage, *error;

	test_begin("body gc stops at max_bodies");
	env = test_env_init();
	for (i = 0; i < 10; i++)
		(void)test_body_write(env, "x", 1);
	test_assert(lmdb_body_gc(env, ioloop_time + 10, 1, 1, 3, &freed,
				 &damaged, &damage,
				 &error) == 0);
	test_assert(freed == 3);
	test_assert(test_env_record(env).bodies == 7);
	test_assert(lmdb_body_gc(env, ioloop_time + 10, 1, 1, 0, &freed,
				 &damaged, &damage,
				 &error) == 0);
	test_assert(freed == 0);
	test_assert(lmdb_body_gc(env, ioloop_time + 10, 1, 1, 100, &freed,
				 &damaged, &damage,
				 &error) == 0);
	test_assert(freed == 7);
	test_assert(test_env_record(env).bodies == 0);
	test_assert(test_dbi_entries(env, env->dbi_bodies) == 0);
	test_assert(test_dbi_entries(env, env->dbi_chunks) == 0);
	test_env_deinit(&env);
	test_end();
}

static void test_body_discard(void)
{
	size_t size = 2 * CHUNK + 1;
	unsigned char *data = test_random_data(size, 11);
	struct lmdb_env_record before, after;
	struct lmdb_body_record rec;
	struct lmdb_env *env;
	uint64_t pending_id, linked_id, dead_id;
	const char *error;

	test_begin("body discard");
	env = test_env_init();
	T_BEGIN {
		linked_id = test_body_write(env, data, size);
		test_assert(test_body_ref(env, linked_id, 1, ioloop_time) == 0);
		dead_id = test_body_write(env, data, 10);
		test_assert(test_body_ref(env, dead_id, 1, ioloop_time) == 0);
		test_assert(test_body_ref(env, dead_id, -1, ioloop_time) == 0);
		before = test_env_record(env);
		pending_id = test_body_write(env, data, size);
		test_assert(test_dbi_entries(env, env->dbi_gc) == 2);

		test_assert(lmdb_body_discard(env, pending_id, &error) == 0);
		test_assert(test_body_get(env, pending_id, &rec) == 0);
		test_assert(test_body_chunk_keys(env, pending_id) == 0);
		after = test_env_record(env);
		test_assert(after.bodies == before.bodies);
		test_assert(after.body_bytes == before.body_bytes);
		/* only the dead body's gc key is left */
		test_assert(test_dbi_entries(env, env->dbi_gc) == 1);

		/* linked and dead bodies are not the writer's to drop */
		test_assert(lmdb_body_discard(env, linked_id, &error) == 0);
		test_assert(test_body_get(env, linked_id, &rec) == 1 &&
			    rec.state == LMDB_BODY_STATE_LINKED &&
			    rec.refcount == 1);
		test_assert(test_body_verify(env, linked_id, TRUE, &error) == 1);
		test_assert(lmdb_body_discard(env, dead_id, &error) == 0);
		test_assert(test_body_get(env, dead_id, &rec) == 1 &&
			    rec.state == LMDB_BODY_STATE_DEAD);
		test_assert(test_body_verify(env, dead_id, TRUE, &error) == 1);
		after = test_env_record(env);
		test_assert(after.bodies == before.bodies);
		test_assert(after.body_bytes == before.body_bytes);
	} T_END;
	i_free(data);
	test_env_deinit(&env);
	test_end();
}

static void test_body_writer_abort(void)
{
	/* more than the writer's flush group of 256 chunks */
	size_t size = 300 * CHUNK;
	unsigned char *data = test_random_data(size, 13);
	struct lmdb_env_record before, after;
	struct lmdb_body_writer *writer;
	struct lmdb_env *env;
	uint64_t next_id;
	const char *error;

	test_begin("body writer freed before finish");
	env = test_env_init();
	before = test_env_record(env);
	next_id = before.next_body_id;
	writer = lmdb_body_writer_init(env);
	/* enough for one flushed chunk group */
	test_assert(lmdb_body_writer_append(writer, data, size, &error) == 0);
	test_assert(test_body_chunk_keys(env, next_id) >= 256);
	test_assert(test_dbi_entries(env, env->dbi_gc) == 1);
	lmdb_body_writer_free(&writer);
	test_assert(test_body_chunk_keys(env, next_id) == 0);
	test_assert(test_dbi_entries(env, env->dbi_bodies) == 0);
	test_assert(test_dbi_entries(env, env->dbi_gc) == 0);
	after = test_env_record(env);
	test_assert(after.bodies == before.bodies);
	test_assert(after.body_bytes == before.body_bytes);
	/* the id is used up */
	test_assert(after.next_body_id == next_id + 1);

	/* a writer that never flushed leaves nothing */
	writer = lmdb_body_writer_init(env);
	test_assert(lmdb_body_writer_append(writer, data, 100, &error) == 0);
	lmdb_body_writer_free(&writer);
	test_assert(test_dbi_entries(env, env->dbi_bodies) == 0);
	test_assert(test_dbi_entries(env, env->dbi_chunks) == 0);
	test_assert(test_env_record(env).next_body_id == next_id + 1);
	i_free(data);
	test_env_deinit(&env);
	test_end();
}

static void test_body_interleaved_writers(void)
{
	/* two flush groups and a partial chunk each */
	size_t size = 600 * CHUNK + 333, piece = 100000, pos;
	unsigned char *data1 = test_random_data(size, 21);
	unsigned char *data2 = test_random_data(size, 22);
	struct lmdb_body_writer *w1, *w2;
	struct lmdb_env *env;
	uint64_t id1, id2, psize, vsize;
	const char *error;

	test_begin("interleaved body writers");
	env = test_env_init();
	/* the older body gets chunks after the newer one: chunk keys are
	   no longer appended at the end */
	w1 = lmdb_body_writer_init(env);
	w2 = lmdb_body_writer_init(env);
	for (pos = 0; pos < size; pos += piece) {
		size_t n = I_MIN(piece, size - pos);

		test_assert(lmdb_body_writer_append(w1, data1 + pos, n,
						    &error) == 0);
		test_assert(lmdb_body_writer_append(w2, data2 + pos, n,
						    &error) == 0);
	}
	test_assert(lmdb_body_writer_finish(w2, &test_info, &id2, &psize,
					    &vsize, &error) == 0);
	test_assert(lmdb_body_writer_finish(w1, &test_info, &id1, &psize,
					    &vsize, &error) == 0);
	lmdb_body_writer_free(&w1);
	lmdb_body_writer_free(&w2);
	test_assert(id1 < id2);
	test_assert(test_body_read_equals(env, id1, data1, size));
	test_assert(test_body_read_equals(env, id2, data2, size));
	test_assert(test_body_verify(env, id1, TRUE, &error) == 1);
	test_assert(test_body_verify(env, id2, TRUE, &error) == 1);
	test_assert(test_env_record(env).body_bytes == 2 * size);
	i_free(data1);
	i_free(data2);
	test_env_deinit(&env);
	test_end();
}

struct test_big_put_ctx {
	struct lmdb_env *env;
	size_t size;
	int ret;
};

static int test_big_put_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct test_big_put_ctx *ctx = context;
	MDB_val key, val;

	key.mv_data = (void *)"test-big";
	key.mv_size = 8;
	val.mv_size = ctx->size;
	ctx->ret = mdb_put(txn, ctx->env->dbi_meta, &key, &val, MDB_RESERVE);
	if (ctx->ret != 0) {
		*error_r = mdb_strerror(ctx->ret);
		return ctx->ret;
	}
	memset(val.mv_data, 'b', ctx->size);
	return 0;
}

static void test_env_map_growth(void)
{
	size_t body_size = 5 * MB;
	unsigned char *data = test_random_data(body_size, 31);
	struct lmdb_env *env;
	uint64_t ids[4], body_id, psize, vsize;
	unsigned int i;
	const char *error;
	int last_ret;

	test_begin("map grows up to map_size_max");
	i_strocpy(test_dir, "/tmp/test-lmdb-body.XXXXXX", sizeof(test_dir));
	if (mkdtemp(test_dir) == NULL)
		i_fatal("mkdtemp() failed: %m");
	env = test_env_open_set(1 * MB, 64 * MB, 1 * MB);
	test_assert(env->map_size == 1 * MB);
	/* 20 MB of bodies */
	for (i = 0; i < N_ELEMENTS(ids); i++) {
		data[0] = i;
		test_assert_idx(test_body_write_ret(env, data, body_size,
						    &ids[i], &psize, &vsize,
						    &last_ret) == 0, i);
		test_assert_idx(last_ret == 0, i);
	}
	test_assert(env->map_size >= 20 * MB && env->map_size <= 64 * MB);
	for (i = 0; i < N_ELEMENTS(ids); i++) {
		test_assert_idx(test_body_verify(env, ids[i], TRUE, &error) == 1,
				i);
	}
	test_assert(test_env_record(env).body_bytes == 4 * body_size);
	test_env_deinit(&env);

	/* a 4 MB ceiling */
	if (mkdtemp(strcpy(test_dir, "/tmp/test-lmdb-body.XXXXXX")) == NULL)
		i_fatal("mkdtemp() failed: %m");
	env = test_env_open_set(1 * MB, 4 * MB, 1 * MB);
	test_assert(lmdb_env_check_space(env, 64 * 1024, &error) == 1);
	test_assert(lmdb_env_check_space(env, 3 * MB, &error) == 0);
	test_assert(test_str_contains(error, "is full"));
	test_assert(test_body_write_ret(env, data, body_size, &body_id,
					&psize, &vsize, &last_ret) < 0);
	test_assert(last_ret == MDB_MAP_FULL);
	test_assert(lmdb_env_error_is_space(last_ret));
	test_assert(env->map_size <= 4 * MB);
	/* the failed body was cleaned up, small mail still fits */
	test_assert(test_dbi_entries(env, env->dbi_bodies) == 0);
	test_assert(test_dbi_entries(env, env->dbi_chunks) == 0);
	body_id = test_body_write(env, "small", 5);
	test_assert(test_body_verify(env, body_id, TRUE, &error) == 1);
	test_assert(test_env_record(env).bodies == 1);

	/* lmdb_env_write() itself stops growing at the ceiling */
	T_BEGIN {
		struct test_big_put_ctx ctx = { .env = env, .size = 5 * MB };

		test_assert(lmdb_env_write(env, test_big_put_txn, &ctx, TRUE,
					   &error) == MDB_MAP_FULL);
		test_assert(test_str_contains(error, "ceiling"));
		test_assert(env->map_size == 4 * MB);
		test_assert(env->open_txns == 0);
		/* a write that fits works after growing */
		ctx.size = 1 * MB;
		test_assert(lmdb_env_write(env, test_big_put_txn, &ctx, TRUE,
					   &error) == 0);
	} T_END;
	/* with the space used, new mail is refused early */
	test_assert(lmdb_env_check_space(env, 2 * MB, &error) == 0);
	test_env_deinit(&env);
	i_free(data);
	test_end();
}

static void test_env_share(void)
{
	struct lmdb_env *env, *env2, *env3;
	struct lmdb_env_settings set;
	const char *error, *link_path;
	char dir2[64];
	uint64_t body_id;

	test_begin("env sharing");
	env = test_env_init();
	env2 = test_env_open_set(4 * MB, 256 * MB, 1 * MB);
	test_assert(env2 == env);
	test_assert(env->refcount == 2);
	/* the same directory through a symlink is the same environment */
	link_path = t_strconcat(test_dir, "/link", NULL);
	if (symlink(test_dir, link_path) < 0)
		i_fatal("symlink() failed: %m");
	i_zero(&set);
	set.map_size_initial = set.map_size_max = 4 * MB;
	set.max_readers = 16;
	set.mode = 0600;
	test_assert(lmdb_env_open(link_path, &set, &env3, &error) == 0);
	test_assert(env3 == env && env->refcount == 3);
	lmdb_env_unref(&env3);
	test_assert(env3 == NULL);
	test_assert(env->refcount == 2);
	if (unlink(link_path) < 0)
		i_fatal("unlink() failed: %m");

	/* another directory is another environment */
	i_strocpy(dir2, "/tmp/test-lmdb-body.XXXXXX", sizeof(dir2));
	if (mkdtemp(dir2) == NULL)
		i_fatal("mkdtemp() failed: %m");
	test_assert(lmdb_env_open(dir2, &set, &env3, &error) == 0);
	test_assert(env3 != env && env3->refcount == 1);
	lmdb_env_unref(&env3);
	if (unlink_directory(dir2, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0)
		i_error("unlink_directory(%s) failed: %s", dir2, error);

	body_id = test_body_write(env, "shared", 6);
	lmdb_env_unref(&env2);
	test_assert(env2 == NULL);
	test_assert(env->refcount == 1);
	/* still usable through the remaining reference */
	test_assert(test_body_verify(env, body_id, TRUE, &error) == 1);
	lmdb_env_unref(&env);

	/* closed: opening again starts a fresh refcount, the data is on
	   disk */
	ioloop_time = 5;
	env = test_env_open_set(4 * MB, 256 * MB, 1 * MB);
	test_assert(env->refcount == 1);
	test_assert(test_body_verify(env, body_id, TRUE, &error) == 1);
	test_assert(test_env_record(env).created == 1000000);
	test_assert(test_env_record(env).next_body_id == body_id + 1);
	test_assert(test_env_record(env).schema_version == LMDB_SCHEMA_VERSION);

	/* a missing directory */
	test_assert(lmdb_env_open("/tmp/test-lmdb-body-nonexistent/x", &set,
				  &env2, &error) < 0);
	test_assert(test_str_contains(error, "stat("));
	test_env_deinit(&env);
	test_end();
}

struct test_deferred_ctx {
	struct lmdb_body_writer *writer;
	uint64_t body_id;
};

static void test_deferred_write_txn(struct lmdb_env *env ATTR_UNUSED,
				    MDB_txn *txn, void *context)
{
	struct test_deferred_ctx *ctx = context;
	const char *error;

	if (lmdb_body_writer_write_txn(ctx->writer, txn, &ctx->body_id,
				       &error) != 0)
		i_fatal("lmdb_body_writer_write_txn() failed: %s", error);
}

static void test_body_deferred(void)
{
	struct lmdb_env *env = test_env_init();
	struct test_deferred_ctx ctx;
	struct lmdb_body_record rec;
	struct istream *input;
	const unsigned char *data;
	unsigned char *body;
	uint64_t psize, vsize, body_id;
	size_t size, body_size = CHUNK * 2 + 100;
	const char *error;
	unsigned int i;

	test_begin("body written in the caller's transaction");
	body = i_malloc(body_size);
	for (i = 0; i < body_size; i++)
		body[i] = i % 71 == 70 ? '\n' : 'a' + i % 26;

	/* over max_size: finished the ordinary way */
	ctx.writer = lmdb_body_writer_init(env);
	test_assert(lmdb_body_writer_append(ctx.writer, body, body_size,
					    &error) == 0);
	test_assert(lmdb_body_writer_finish_deferred(ctx.writer, &test_info,
			0, body_size - 1, &psize, &vsize, &error) == 0);
	test_assert(lmdb_body_writer_finish(ctx.writer, &test_info, &body_id,
					    &psize, &vsize, &error) == 0);
	lmdb_body_writer_free(&ctx.writer);
	test_assert(test_body_verify(env, body_id, TRUE, &error) == 1);

	/* deferred: nothing in LMDB until the caller's transaction */
	ctx.writer = lmdb_body_writer_init(env);
	test_assert(lmdb_body_writer_append(ctx.writer, body, body_size,
					    &error) == 0);
	test_assert(lmdb_body_writer_finish_deferred(ctx.writer, &test_info,
			0, body_size, &psize, &vsize, &error) == 1);
	test_assert(psize == body_size);
	test_assert(vsize == body_size + body_size / 71);
	test_assert(test_env_record(env).next_body_id == body_id + 1);

	/* readable from memory meanwhile */
	lmdb_body_writer_get_record(ctx.writer, &rec);
	test_assert(rec.physical_size == body_size &&
		    rec.virtual_size == vsize && rec.chunk_count == 3 &&
		    strcmp(rec.guid, test_info.guid) == 0 &&
		    rec.received_date == test_info.received_date);
	input = lmdb_body_writer_open_stream(ctx.writer);
	test_assert(i_stream_read_more(input, &data, &size) > 0);
	while (size < body_size && i_stream_read_more(input, &data, &size) > 0) ;
	test_assert(size == body_size && memcmp(data, body, size) == 0);

	test_write(env, test_deferred_write_txn, &ctx);
	test_assert(ctx.body_id == body_id + 1);
	lmdb_body_writer_free(&ctx.writer);
	/* the stream has its own copy */
	test_assert(i_stream_get_data_size(input) == body_size &&
		    memcmp(i_stream_get_data(input, &size), body, body_size) == 0);
	i_stream_unref(&input);

	test_assert(test_body_get(env, ctx.body_id, &rec) == 1);
	test_assert(rec.state == LMDB_BODY_STATE_PENDING &&
		    rec.physical_size == body_size && rec.virtual_size == vsize);
	test_assert(test_body_verify(env, ctx.body_id, TRUE, &error) == 1);
	i_free(body);
	test_env_deinit(&env);
	test_end();
}

/* Does this process map path? */
static bool test_maps_file(const char *path)
{
	char line[1024];
	bool found = FALSE;
	FILE *f;

	if ((f = fopen("/proc/self/maps", "r")) == NULL)
		i_fatal("fopen(/proc/self/maps) failed: %m");
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found = strstr(line, path) != NULL;
	fclose(f);
	return found;
}

static void test_env_idle(void)
{
	struct lmdb_env *env, *env2;
	struct lmdb_env_settings set;
	struct lmdb_body_record rec;
	const char *error;
	uint64_t body_id;
	struct stat st;
	char dir2[64];

	test_begin("env kept open after the last reference");
	env = test_env_init();
	body_id = test_body_write(env, "idle", 4);
	set = env->set;
	env2 = env;
	lmdb_env_unref(&env);
	/* the same directory and settings: the same, still open env */
	test_assert(lmdb_env_open(test_dir, &set, &env, &error) == 0);
	test_assert(env == env2 && env->refcount == 1);
	test_assert(test_body_verify(env, body_id, TRUE, &error) == 1);

	/* other settings: opened anew */
	lmdb_env_unref(&env);
	set.map_reserve = 2 * MB;
	test_assert(lmdb_env_open(test_dir, &set, &env, &error) == 0);
	test_assert(env->refcount == 1 && env->set.map_reserve == 2 * MB);
	test_assert(test_body_verify(env, body_id, TRUE, &error) == 1);

	/* the files were deleted and the directory made again: the kept
	   map of the deleted files must not be used */
	lmdb_env_unref(&env);
	if (unlink_directory(test_dir, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0 ||
	    mkdir(test_dir, 0700) < 0 || stat(test_dir, &st) < 0)
		i_fatal("recreating %s failed: %m", test_dir);
	test_assert(lmdb_env_open(test_dir, &set, &env, &error) == 0);
	test_assert(test_body_get(env, body_id, &rec) == 0);
	test_assert(test_env_record(env).next_body_id == 1);

	/* opening another environment unmaps the kept one first */
	lmdb_env_unref(&env);
	test_assert(test_maps_file(t_strconcat(test_dir, "/data.mdb", NULL)));
	i_strocpy(dir2, "/tmp/test-lmdb-body.XXXXXX", sizeof(dir2));
	if (mkdtemp(dir2) == NULL)
		i_fatal("mkdtemp() failed: %m");
	test_assert(lmdb_env_open(dir2, &set, &env2, &error) == 0);
	test_assert(!test_maps_file(t_strconcat(test_dir, "/data.mdb", NULL)));
	lmdb_env_unref(&env2);
	lmdb_env_deinit();
	test_assert(!test_maps_file(t_strconcat(dir2, "/data.mdb", NULL)));
	if (unlink_directory(dir2, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0)
		i_error("unlink_directory(%s) failed: %s", dir2, error);
	test_env_deinit(&env);
	test_end();
}

static void test_env_newer_schema_txn(struct lmdb_env *env, MDB_txn *txn,
				      void *context ATTR_UNUSED)
{
	struct lmdb_env_record rec;
	const char *error;

	if (lmdb_env_record_get(env, txn, &rec, &error) != 0)
		i_fatal("%s", error);
	rec.schema_version = LMDB_SCHEMA_VERSION + 1;
	if (lmdb_env_record_put(env, txn, &rec, &error) != 0)
		i_fatal("%s", error);
}

static void test_env_newer_schema(void)
{
	struct lmdb_env *env, *env2;
	struct lmdb_env_settings set;
	const char *error;

	test_begin("env with a newer schema is refused");
	env = test_env_init();
	test_write(env, test_env_newer_schema_txn, NULL);
	set = env->set;
	lmdb_env_unref(&env);
	test_assert(lmdb_env_open(test_dir, &set, &env2, &error) < 0);
	test_assert(test_str_contains(error, "schema version"));
	test_env_deinit(&env);
	test_end();
}

/* Links */

struct test_link_ctx {
	const guid_128_t *guid;
	uint32_t uid;
	struct lmdb_link_record rec;
	bool delete;
	int ret;
};

static void test_link_put_txn(struct lmdb_env *env, MDB_txn *txn,
			      void *context)
{
	struct test_link_ctx *ctx = context;
	const char *error;

	if (ctx->delete)
		ctx->ret = lmdb_link_delete(env, txn, *ctx->guid, ctx->uid,
					    &error);
	else
		ctx->ret = lmdb_link_put(env, txn, *ctx->guid, ctx->uid,
					 &ctx->rec, &error);
}

static int test_link_put(struct lmdb_env *env, const guid_128_t guid,
			 uint32_t uid, uint64_t body_id)
{
	struct test_link_ctx ctx;

	i_zero(&ctx);
	ctx.guid = (const guid_128_t *)guid;
	ctx.uid = uid;
	ctx.rec.body_id = body_id;
	ctx.rec.modseq = uid;
	ctx.rec.pop3_uidl = "";
	test_write(env, test_link_put_txn, &ctx);
	return ctx.ret;
}

static int test_link_delete(struct lmdb_env *env, const guid_128_t guid,
			    uint32_t uid)
{
	struct test_link_ctx ctx;

	i_zero(&ctx);
	ctx.guid = (const guid_128_t *)guid;
	ctx.uid = uid;
	ctx.delete = TRUE;
	test_write(env, test_link_put_txn, &ctx);
	return ctx.ret;
}

static uint32_t test_highest_uid(struct lmdb_env *env, const guid_128_t guid)
{
	const char *error;
	MDB_txn *txn;
	uint32_t uid = 12345;

	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("%s", error);
	if (lmdb_link_get_highest_uid(env, txn, guid, &uid, &error) != 0)
		i_fatal("lmdb_link_get_highest_uid() failed: %s", error);
	lmdb_env_read_end(env, &txn);
	return uid;
}

/* The UIDs iterated from first_uid, as a string "1,5,256"; "!10" marks
   UID 10 whose record was reported damaged, "E" an LMDB failure. */
static const char *test_iter_uids(struct lmdb_env *env, const guid_128_t guid,
				  uint32_t first_uid, int *deinit_ret_r)
{
	struct lmdb_link_iter *iter;
	struct lmdb_link_record rec;
	string_t *str = t_str_new(64);
	const char *error;
	MDB_txn *txn;
	uint32_t uid;
	unsigned int damaged = 0;
	int ret;

	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("%s", error);
	iter = lmdb_link_iter_init(env, txn, guid, first_uid);
	while ((ret = lmdb_link_iter_next(iter, pool_datastack_create(),
					  &uid, &rec)) != 0) {
		if (str_len(str) > 0)
			str_append_c(str, ',');
		if (ret == 2) {
			str_printfa(str, "!%u", uid);
			damaged++;
			test_assert(test_str_contains(
				lmdb_link_iter_get_error(iter), "damaged"));
		} else if (ret < 0)
			str_append_c(str, 'E');
		else {
			str_printfa(str, "%u", uid);
			/* the record belongs to this key */
			if (rec.body_id != (uint64_t)uid + 1000)
				str_append_c(str, '?');
		}
	}
	test_assert(lmdb_link_iter_get_damaged(iter) == damaged);
	*deinit_ret_r = lmdb_link_iter_deinit(&iter, &error);
	lmdb_env_read_end(env, &txn);
	return str_c(str);
}

struct test_raw_put_ctx {
	const void *key, *value;
	size_t key_size, value_size;
};

static void test_raw_put_txn(struct lmdb_env *env, MDB_txn *txn,
			     void *context)
{
	struct test_raw_put_ctx *ctx = context;
	MDB_val key, val;

	key.mv_data = (void *)ctx->key;
	key.mv_size = ctx->key_size;
	val.mv_data = (void *)ctx->value;
	val.mv_size = ctx->value_size;
	if (mdb_put(txn, env->dbi_links, &key, &val, 0) != 0)
		i_fatal("mdb_put() failed");
}

static void test_links(void)
{
	static const uint32_t mid_uids[] = {
		1, 5, 256, 65536, 0xfffffffe
	};
	guid_128_t g_lo, g_mid, g_hi, g_between, g_after;
	struct lmdb_env *env;
	unsigned int i;
	int deinit_ret;

	test_begin("links");
	env = test_env_init();
	memset(g_lo, 0, sizeof(g_lo));
	g_lo[GUID_128_SIZE - 1] = 1;
	memset(g_mid, 0x80, sizeof(g_mid));
	memset(g_between, 0x90, sizeof(g_between));
	memset(g_hi, 0xfe, sizeof(g_hi));
	memset(g_after, 0xff, sizeof(g_after));

	/* empty environment */
	test_assert(test_highest_uid(env, g_mid) == 0);
	T_BEGIN {
		test_assert(strcmp(test_iter_uids(env, g_mid, 0, &deinit_ret),
				   "") == 0 && deinit_ret == 0);
	} T_END;

	/* insert interleaved, out of order */
	for (i = N_ELEMENTS(mid_uids); i > 0; i--) {
		test_assert(test_link_put(env, g_mid, mid_uids[i - 1],
					  (uint64_t)mid_uids[i - 1] + 1000) == 0);
		if (i == 3) {
			test_assert(test_link_put(env, g_lo, 7, 1007) == 0);
			test_assert(test_link_put(env, g_hi, 3, 1003) == 0);
		}
	}
	test_assert(test_link_put(env, g_lo, 0xffffffff, 0xffffffffU + 1000ULL) == 0);

	test_assert(test_highest_uid(env, g_mid) == 0xfffffffe);
	/* the highest possible UID is found exactly */
	test_assert(test_highest_uid(env, g_lo) == 0xffffffff);
	/* the last mailbox in the DBI */
	test_assert(test_highest_uid(env, g_hi) == 3);
	/* mailboxes without links, between and after others */
	test_assert(test_highest_uid(env, g_between) == 0);
	test_assert(test_highest_uid(env, g_after) == 0);

	T_BEGIN {
		test_assert(strcmp(test_iter_uids(env, g_mid, 0, &deinit_ret),
				   "1,5,256,65536,4294967294") == 0);
		test_assert(deinit_ret == 0);
		test_assert(strcmp(test_iter_uids(env, g_mid, 5, &deinit_ret),
				   "5,256,65536,4294967294") == 0);
		test_assert(strcmp(test_iter_uids(env, g_mid, 6, &deinit_ret),
				   "256,65536,4294967294") == 0);
		test_assert(strcmp(test_iter_uids(env, g_mid, 0xffffffff,
						  &deinit_ret), "") == 0);
		test_assert(strcmp(test_iter_uids(env, g_lo, 0, &deinit_ret),
				   "7,4294967295") == 0);
		test_assert(strcmp(test_iter_uids(env, g_hi, 4, &deinit_ret),
				   "") == 0);
		test_assert(strcmp(test_iter_uids(env, g_between, 0,
						  &deinit_ret), "") == 0);
		test_assert(deinit_ret == 0);
	} T_END;

	/* get, delete */
	T_BEGIN {
		struct lmdb_link_record rec;
		const char *error;
		MDB_txn *txn;

		if (lmdb_env_read_begin(env, &txn, &error) < 0)
			i_fatal("%s", error);
		test_assert(lmdb_link_get(env, txn, g_mid, 256,
					  pool_datastack_create(), &rec,
					  &error) == 1);
		test_assert(rec.body_id == 1256 && rec.modseq == 256);
		test_assert(lmdb_link_get(env, txn, g_mid, 257,
					  pool_datastack_create(), &rec,
					  &error) == 0);
		test_assert(lmdb_link_get(env, txn, g_between, 256,
					  pool_datastack_create(), &rec,
					  &error) == 0);
		lmdb_env_read_end(env, &txn);
	} T_END;
	test_assert(test_link_delete(env, g_mid, 0xfffffffe) == 0);
	test_assert(test_link_delete(env, g_mid, 0xfffffffe) == MDB_NOTFOUND);
	test_assert(test_highest_uid(env, g_mid) == 65536);
	test_assert(test_link_delete(env, g_lo, 0xffffffff) == 0);
	test_assert(test_highest_uid(env, g_lo) == 7);
	test_assert(test_link_delete(env, g_hi, 3) == 0);
	test_assert(test_highest_uid(env, g_hi) == 0);
	test_assert(test_highest_uid(env, g_mid) == 65536);

	/* a corrupted record: the iterator reports it and goes on */
	T_BEGIN {
		unsigned char key[LMDB_LINK_KEY_SIZE];
		struct test_raw_put_ctx ctx = {
			.key = key, .key_size = sizeof(key),
			.value = "\x01garbage", .value_size = 8,
		};
		struct lmdb_link_record rec;
		const char *error;
		MDB_txn *txn;

		lmdb_link_key_encode(g_mid, 10, key);
		test_write(env, test_raw_put_txn, &ctx);
		test_assert(strcmp(test_iter_uids(env, g_mid, 0, &deinit_ret),
				   "1,5,!10,256,65536") == 0);
		/* a damaged record is not an LMDB failure */
		test_assert(deinit_ret == 0);
		if (lmdb_env_read_begin(env, &txn, &error) < 0)
			i_fatal("%s", error);
		test_assert(lmdb_link_get(env, txn, g_mid, 10,
					  pool_datastack_create(), &rec,
					  &error) < 0);
		test_assert(test_str_contains(error, "damaged"));
		lmdb_env_read_end(env, &txn);
	} T_END;
	test_env_deinit(&env);
	test_end();
}

struct test_count_ctx {
	int links;
	int64_t vsize;
};

struct test_link_update_ctx {
	const guid_128_t *guid;
	struct lmdb_link_record rec;
	int ret[4];
	int found;
	struct lmdb_link_record taken;
};

static void test_link_update_txn(struct lmdb_env *env, MDB_txn *txn,
				 void *context)
{
	static const char *const kw_many[] = {
		"$Label1", "$Junk", "a-rather-long-keyword-name", NULL
	};
	struct test_link_update_ctx *ctx = context;
	struct lmdb_link_record flags;
	const char *error;

	/* uids 1 and 3 grow (three keywords); after the first update the
	   page is dirty, so the second one changes it in place: the bug
	   this catches re-added uid 3 under a key read from moved bytes */
	i_zero(&flags);
	flags.flags = 0x12;
	flags.modseq = 99;
	flags.keywords = kw_many;
	flags.keywords_count = 3;
	ctx->ret[0] = lmdb_link_set_flags(env, txn, *ctx->guid, 1, &flags,
					  &error);
	if (ctx->ret[0] == 0) {
		ctx->ret[0] = lmdb_link_set_flags(env, txn, *ctx->guid, 3,
						  &flags, &error);
	}
	ctx->ret[1] = lmdb_link_add(env, txn, *ctx->guid, 4, &ctx->rec,
				    &error);
	/* a missing link is not an error */
	ctx->ret[2] = lmdb_link_set_flags(env, txn, *ctx->guid, 77, &flags,
					  &error);
	ctx->ret[3] = lmdb_link_take(env, txn, *ctx->guid, 2,
				     pool_datastack_create(), &ctx->taken,
				     &ctx->found, &error);
}

static void test_link_update_in_place(void)
{
	struct test_link_update_ctx ctx;
	struct lmdb_link_record rec;
	struct lmdb_env *env;
	guid_128_t guid;
	MDB_txn *txn;
	const char *error;
	uint32_t uid;

	test_begin("links updated in place keep their keys");
	env = test_env_init();
	memset(guid, 0x42, sizeof(guid));
	for (uid = 1; uid <= 5; uid++)
		test_assert(test_link_put(env, guid, uid, 100 + uid) == 0);

	i_zero(&ctx);
	ctx.guid = (const guid_128_t *)&guid;
	ctx.rec.body_id = 999;
	ctx.rec.pop3_uidl = "";
	test_write(env, test_link_update_txn, &ctx);
	test_assert(ctx.ret[0] == 0);
	test_assert(ctx.ret[1] == MDB_KEYEXIST);
	test_assert(ctx.ret[2] == 0);
	test_assert(ctx.ret[3] == 0 && ctx.found == 1 &&
		    ctx.taken.body_id == 102);

	T_BEGIN {
		pool_t pool = pool_datastack_create();

		if (lmdb_env_read_begin(env, &txn, &error) < 0)
			i_fatal("lmdb_env_read_begin() failed: %s", error);
		/* every link is still under its own key with its own body,
		   and nothing appeared elsewhere */
		for (uid = 1; uid <= 5; uid++) {
			int ret = lmdb_link_get(env, txn, guid, uid, pool,
						&rec, &error);
			if (uid == 2) {
				test_assert_idx(ret == 0, uid);
				continue;
			}
			test_assert_idx(ret == 1 && rec.body_id == 100 + uid,
					uid);
			if (uid == 1 || uid == 3) {
				test_assert(rec.flags == 0x12 &&
					    rec.modseq == 99 &&
					    rec.keywords_count == 3 &&
					    strcmp(rec.keywords[2],
						   "a-rather-long-keyword-name") == 0);
			}
		}
		lmdb_env_read_end(env, &txn);
	} T_END;
	test_assert(test_highest_uid(env, guid) == 5);
	test_env_deinit(&env);
	test_end();
}

static void test_link_count_txn(struct lmdb_env *env, MDB_txn *txn,
				void *context)
{
	struct test_count_ctx *ctx = context;
	const char *error;

	if (lmdb_link_count(env, txn, ctx->links, ctx->vsize, &error) != 0)
		i_fatal("lmdb_link_count() failed: %s", error);
}

static void test_link_counters(void)
{
	struct test_count_ctx ctx;
	struct lmdb_env_record rec;
	struct lmdb_env *env;

	test_begin("link counters");
	env = test_env_init();
	ctx.links = 3;
	ctx.vsize = 3000;
	test_write(env, test_link_count_txn, &ctx);
	rec = test_env_record(env);
	test_assert(rec.links == 3 && rec.link_vsize_bytes == 3000);
	ctx.links = -1;
	ctx.vsize = -1000;
	test_write(env, test_link_count_txn, &ctx);
	rec = test_env_record(env);
	test_assert(rec.links == 2 && rec.link_vsize_bytes == 2000);
	/* never below zero */
	ctx.links = -100;
	ctx.vsize = -1000000;
	test_write(env, test_link_count_txn, &ctx);
	rec = test_env_record(env);
	test_assert(rec.links == 0 && rec.link_vsize_bytes == 0);
	/* body counters are separate */
	test_assert(rec.bodies == 0 && rec.body_bytes == 0);
	test_env_deinit(&env);
	test_end();
}

struct test_mailbox_ctx {
	guid_128_t guid;
	struct lmdb_mailbox_record rec;
};

static void test_mailbox_put_txn(struct lmdb_env *env, MDB_txn *txn,
				 void *context)
{
	struct test_mailbox_ctx *ctx = context;
	const char *error;

	if (lmdb_mailbox_put(env, txn, ctx->guid, &ctx->rec, &error) != 0)
		i_fatal("lmdb_mailbox_put() failed: %s", error);
}

static void test_mailbox_records(void)
{
	struct test_mailbox_ctx ctx;
	struct lmdb_mailbox_record rec;
	struct lmdb_env *env;
	guid_128_t other;
	const char *error;
	MDB_txn *txn;

	test_begin("mailbox records");
	env = test_env_init();
	i_zero(&ctx);
	memset(ctx.guid, 0x42, sizeof(ctx.guid));
	memset(other, 0x43, sizeof(other));
	ctx.rec.state = LMDB_MAILBOX_STATE_ACTIVE;
	ctx.rec.uid_validity = 1234567;
	ctx.rec.highest_uid = 99;
	ctx.rec.highest_modseq = 500;
	ctx.rec.created = 1600000000;
	ctx.rec.hierarchy_sep = '/';
	ctx.rec.name = "INBOX/Work";
	test_write(env, test_mailbox_put_txn, &ctx);
	T_BEGIN {
		if (lmdb_env_read_begin(env, &txn, &error) < 0)
			i_fatal("%s", error);
		test_assert(lmdb_mailbox_get(env, txn, ctx.guid,
					     pool_datastack_create(), &rec,
					     &error) == 1);
		test_assert(rec.uid_validity == 1234567 &&
			    rec.highest_uid == 99 && rec.highest_modseq == 500 &&
			    rec.created == 1600000000 &&
			    rec.hierarchy_sep == '/' &&
			    strcmp(rec.name, "INBOX/Work") == 0 &&
			    rec.state == LMDB_MAILBOX_STATE_ACTIVE);
		test_assert(lmdb_mailbox_get(env, txn, other,
					     pool_datastack_create(), &rec,
					     &error) == 0);
		lmdb_env_read_end(env, &txn);
	} T_END;
	/* rename + delete overwrite */
	ctx.rec.state = LMDB_MAILBOX_STATE_DELETED;
	ctx.rec.name = "Trash/Work";
	test_write(env, test_mailbox_put_txn, &ctx);
	T_BEGIN {
		if (lmdb_env_read_begin(env, &txn, &error) < 0)
			i_fatal("%s", error);
		test_assert(lmdb_mailbox_get(env, txn, ctx.guid,
					     pool_datastack_create(), &rec,
					     &error) == 1);
		test_assert(rec.state == LMDB_MAILBOX_STATE_DELETED &&
			    strcmp(rec.name, "Trash/Work") == 0);
		lmdb_env_read_end(env, &txn);
	} T_END;
	test_assert(test_dbi_entries(env, env->dbi_mailboxes) == 1);
	test_env_deinit(&env);
	test_end();
}

/* Reported bugs in the body counters and the GC limit. */

struct test_fake_pending_ctx {
	uint64_t body_id;
};

/* What a crash after the writer's first chunk group leaves behind: the
   interim PENDING record (no size yet), its gc key and chunks. */
static void test_fake_pending_txn(struct lmdb_env *env, MDB_txn *txn,
				  void *context)
{
	struct test_fake_pending_ctx *ctx = context;
	struct lmdb_env_record env_rec;
	struct lmdb_body_record rec;
	unsigned char key_data[LMDB_GC_KEY_SIZE];
	unsigned char hdr[LMDB_CHUNK_HDR_SIZE];
	buffer_t *buf = t_buffer_create(128);
	MDB_val key, val;
	const char *error;

	if (lmdb_env_record_get(env, txn, &env_rec, &error) != 0)
		i_fatal("%s", error);
	ctx->body_id = env_rec.next_body_id++;
	if (lmdb_env_record_put(env, txn, &env_rec, &error) != 0)
		i_fatal("%s", error);

	i_zero(&rec);
	rec.state = LMDB_BODY_STATE_PENDING;
	rec.state_since = ioloop_time;
	rec.guid = "";
	if (!lmdb_body_record_encode(buf, ctx->body_id, &rec, &error))
		i_fatal("%s", error);
	lmdb_body_id_encode(ctx->body_id, key_data);
	key.mv_data = key_data;
	key.mv_size = LMDB_BODY_ID_SIZE;
	val.mv_data = (void *)buf->data;
	val.mv_size = buf->used;
	if (mdb_put(txn, env->dbi_bodies, &key, &val, 0) != 0)
		i_fatal("mdb_put(body) failed");

	lmdb_gc_key_encode(LMDB_GC_KIND_PENDING, ioloop_time, ctx->body_id,
			   key_data);
	key.mv_size = LMDB_GC_KEY_SIZE;
	buffer_set_used_size(buf, 0);
	lmdb_gc_value_encode(buf, key_data);
	val.mv_data = (void *)buf->data;
	val.mv_size = buf->used;
	if (mdb_put(txn, env->dbi_gc, &key, &val, 0) != 0)
		i_fatal("mdb_put(gc) failed");

	buffer_set_used_size(buf, 0);
	lmdb_chunk_header_encode(hdr, ctx->body_id, 0, "data", 4);
	buffer_append(buf, hdr, sizeof(hdr));
	buffer_append(buf, "data", 4);
	lmdb_chunk_key_encode(ctx->body_id, 0, key_data);
	key.mv_size = LMDB_CHUNK_KEY_SIZE;
	val.mv_data = (void *)buf->data;
	val.mv_size = buf->used;
	if (mdb_put(txn, env->dbi_chunks, &key, &val, 0) != 0)
		i_fatal("mdb_put(chunk) failed");
}

static void test_body_counter_bugs(void)
{
	struct test_fake_pending_ctx fake;
	struct lmdb_env_record before, after;
	struct lmdb_body_record rec;
	struct lmdb_env *env;
	uint64_t empty_id;
	unsigned int freed, damaged;
	const char *damage;
	const char *error;

	test_begin("body counters: empty bodies and crashed writers");
	env = test_env_init();
	(void)test_body_write(env, "counted", 7);
	before = test_env_record(env);

	/* a finished empty body is counted, so discarding it must
	   uncount it */
	empty_id = test_body_write(env, "", 0);
	after = test_env_record(env);
	test_assert(after.bodies == before.bodies + 1);
	test_assert(lmdb_body_discard(env, empty_id, &error) == 0);
	test_assert(test_body_get(env, empty_id, &rec) == 0);
	after = test_env_record(env);
	test_assert(after.bodies == before.bodies);

	/* discarding a body that is already gone changes nothing (and
	   reads no uninitialized record: run under valgrind) */
	before = test_env_record(env);
	test_assert(lmdb_body_discard(env, empty_id, &error) == 0);
	test_assert(lmdb_body_discard(env, 987654, &error) == 0);
	after = test_env_record(env);
	test_assert(after.bodies == before.bodies);
	test_assert(after.body_bytes == before.body_bytes);

	/* a crashed writer's body was never counted, so collecting it
	   must not uncount anything */
	before = test_env_record(env);
	test_write(env, test_fake_pending_txn, &fake);
	test_assert(lmdb_body_gc(env, ioloop_time + 100000, 10, 10, 100,
				 &freed, &damaged, &damage, &error) == 0);
	test_assert(freed == 2);
	test_assert(test_body_get(env, fake.body_id, &rec) == 0);
	test_assert(test_body_chunk_keys(env, fake.body_id) == 0);
	after = test_env_record(env);
	/* only the "counted" body was collected */
	test_assert(after.bodies == before.bodies - 1);
	test_assert(after.body_bytes == before.body_bytes - 7);
	test_env_deinit(&env);
	test_end();
}

static void test_body_gc_max_bodies_bug(void)
{
	struct lmdb_env *env;
	unsigned int i, freed, damaged;
	const char *damage, *error;

	test_begin("body gc max_bodies across batches");
	env = test_env_init();
	/* more than one GC batch (64) */
	for (i = 0; i < 70; i++)
		(void)test_body_write(env, "x", 1);
	test_assert(lmdb_body_gc(env, ioloop_time + 10, 1, 1, 65, &freed,
				 &damaged, &damage,
				 &error) == 0);
	test_assert(freed == 65);
	test_assert(test_env_record(env).bodies == 5);
	test_env_deinit(&env);
	test_end();
}

int main(void)
{
	static void (*const tests[])(void) = {
		test_body_write_read,
		test_body_virtual_size,
		test_body_damage,
		test_body_refcount_gc,
		test_body_gc_pending,
		test_body_gc_max_bodies,
		test_body_gc_damaged_record,
		test_body_discard,
		test_body_writer_abort,
		test_body_deferred,
		test_body_interleaved_writers,
		test_env_map_growth,
		test_env_share,
		test_env_idle,
		test_env_newer_schema,
		test_links,
		test_link_update_in_place,
		test_link_counters,
		test_mailbox_records,
		test_body_counter_bugs,
		test_body_gc_max_bodies_bug,
		test_body_chunk_multiple_bug,
		NULL
	};
	return test_run(tests);
}
