/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "str.h"
#include "crc32.h"
#include "test-common.h"
#include "lmdb-records.h"

#include <stdlib.h>

/* Tests for bugs that were reported but not yet fixed run only with
   LMDB_TEST_KNOWN_BUGS=1 in the environment, so that make check stays
   usable for everyone else meanwhile. */
static bool test_known_bugs;

/* Deterministic PRNG (xorshift64*): the fuzz loop must find the same
   inputs on every run, or a failure could never be reproduced. */
static uint64_t test_rand_state;

static void test_rand_seed(uint64_t seed)
{
	test_rand_state = seed == 0 ? 0x9e3779b97f4a7c15ULL : seed;
}

static uint64_t test_rand64(void)
{
	uint64_t x = test_rand_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	test_rand_state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static unsigned int test_rand_n(unsigned int n)
{
	return n == 0 ? 0 : (unsigned int)(test_rand64() % n);
}

/* Decoders get an exactly-sized heap copy, so that valgrind reports any
   read past the end of the record (a buffer_t would have slack). */
static void *test_dup_exact(const void *data, size_t size)
{
	void *p = malloc(size == 0 ? 1 : size);

	if (p == NULL)
		i_fatal("malloc() failed");
	if (size > 0)
		memcpy(p, data, size);
	return p;
}

static const char *test_str_repeat(char c, size_t len)
{
	char *str = t_malloc0(len + 1);

	memset(str, c, len);
	return str;
}

static bool test_str_contains(const char *str, const char *substr)
{
	return str != NULL && strstr(str, substr) != NULL;
}

/* Decoder wrappers with one signature, for the loops below. */

static bool test_decode_env(const void *data, size_t size, const char **error_r)
{
	struct lmdb_env_record rec;

	return lmdb_env_record_decode(data, size, &rec, error_r);
}

static bool test_decode_body(const void *data, size_t size,
			     const char **error_r)
{
	struct lmdb_body_record rec;

	return lmdb_body_record_decode(data, size, pool_datastack_create(),
				       &rec, error_r);
}

static bool test_decode_link(const void *data, size_t size,
			     const char **error_r)
{
	struct lmdb_link_record rec;

	return lmdb_link_record_decode(data, size, pool_datastack_create(),
				       &rec, error_r);
}

static bool test_decode_mailbox(const void *data, size_t size,
				const char **error_r)
{
	struct lmdb_mailbox_record rec;

	return lmdb_mailbox_record_decode(data, size, pool_datastack_create(),
					  &rec, error_r);
}

static bool test_decode_chunk(const void *data, size_t size,
			      const char **error_r)
{
	const void *chunk_data;
	size_t chunk_size;

	return lmdb_chunk_decode(data, size, &chunk_data, &chunk_size, error_r);
}

typedef bool test_decode_func_t(const void *data, size_t size,
				const char **error_r);

/* Decode an exact copy; a rejection must always come with a reason. */
static bool test_decode_exact(test_decode_func_t *decode,
			      const void *data, size_t size,
			      const char **error_r)
{
	void *copy = test_dup_exact(data, size);
	bool ret;

	*error_r = NULL;
	ret = decode(copy, size, error_r);
	free(copy);
	return ret;
}

/* Representative records */

static void test_body_record_init(struct lmdb_body_record *rec)
{
	i_zero(rec);
	rec->state = LMDB_BODY_STATE_LINKED;
	rec->refcount = 3;
	rec->physical_size = 3 * 65512 + 17;
	rec->virtual_size = rec->physical_size + 100;
	rec->received_date = 1700000000;
	rec->save_date = 1700000001;
	rec->state_since = 1700000002;
	rec->chunk_size = 65512;
	rec->chunk_count = 4;
	memset(rec->sha256, 0xab, sizeof(rec->sha256));
	memset(rec->orig_mailbox_guid, 0x5c, sizeof(rec->orig_mailbox_guid));
	rec->guid = "0123456789abcdef0123456789abcdef";
}

static const char *const test_keywords[] = {
	"$Forwarded", "Junk", "k", NULL
};

static void test_link_record_init(struct lmdb_link_record *rec)
{
	i_zero(rec);
	rec->body_id = 0x0102030405060708ULL;
	rec->save_date = 1700000000;
	rec->flags = 0x1f;
	rec->pop3_order = 42;
	rec->modseq = 123456789;
	rec->pop3_uidl = "UID-1.2.3";
	rec->keywords = test_keywords;
	rec->keywords_count = 3;
}

static void test_mailbox_record_init(struct lmdb_mailbox_record *rec)
{
	i_zero(rec);
	rec->state = LMDB_MAILBOX_STATE_ACTIVE;
	rec->uid_validity = 1700000000;
	rec->highest_uid = 4711;
	rec->highest_modseq = 99999;
	rec->created = 1600000000;
	rec->hierarchy_sep = '/';
	rec->name = "INBOX/Sub folder/\xc3\xa4";
}

static void test_env_record_init(struct lmdb_env_record *rec)
{
	i_zero(rec);
	rec->schema_version = LMDB_SCHEMA_VERSION;
	rec->generation = 7;
	rec->next_body_id = 1000;
	rec->created = 1600000000;
	rec->links = 55;
	rec->link_vsize_bytes = 123456;
	rec->bodies = 50;
	rec->body_bytes = 120000;
}

/* Field comparisons */

static bool test_env_record_equals(const struct lmdb_env_record *a,
				   const struct lmdb_env_record *b)
{
	return a->schema_version == b->schema_version &&
		a->generation == b->generation &&
		a->next_body_id == b->next_body_id &&
		a->created == b->created &&
		a->links == b->links &&
		a->link_vsize_bytes == b->link_vsize_bytes &&
		a->bodies == b->bodies &&
		a->body_bytes == b->body_bytes;
}

static bool test_body_record_equals(const struct lmdb_body_record *a,
				    const struct lmdb_body_record *b)
{
	return a->state == b->state &&
		a->refcount == b->refcount &&
		a->physical_size == b->physical_size &&
		a->virtual_size == b->virtual_size &&
		a->received_date == b->received_date &&
		a->save_date == b->save_date &&
		a->state_since == b->state_since &&
		a->chunk_count == b->chunk_count &&
		a->chunk_size == b->chunk_size &&
		memcmp(a->sha256, b->sha256, sizeof(a->sha256)) == 0 &&
		guid_128_equals(a->orig_mailbox_guid, b->orig_mailbox_guid) &&
		strcmp(a->guid == NULL ? "" : a->guid,
		       b->guid == NULL ? "" : b->guid) == 0;
}

static bool test_link_record_equals(const struct lmdb_link_record *a,
				    const struct lmdb_link_record *b)
{
	unsigned int i;

	if (a->body_id != b->body_id ||
	    a->save_date != b->save_date ||
	    a->flags != b->flags ||
	    a->pop3_order != b->pop3_order ||
	    a->modseq != b->modseq ||
	    strcmp(a->pop3_uidl == NULL ? "" : a->pop3_uidl,
		   b->pop3_uidl == NULL ? "" : b->pop3_uidl) != 0 ||
	    a->keywords_count != b->keywords_count)
		return FALSE;
	for (i = 0; i < a->keywords_count; i++) {
		if (strcmp(a->keywords[i], b->keywords[i]) != 0)
			return FALSE;
	}
	return TRUE;
}

static bool test_mailbox_record_equals(const struct lmdb_mailbox_record *a,
				       const struct lmdb_mailbox_record *b)
{
	return a->state == b->state &&
		a->uid_validity == b->uid_validity &&
		a->highest_uid == b->highest_uid &&
		a->highest_modseq == b->highest_modseq &&
		a->created == b->created &&
		a->hierarchy_sep == b->hierarchy_sep &&
		strcmp(a->name, b->name) == 0;
}

/* Round trips */

static void test_env_record_roundtrip(void)
{
	struct lmdb_env_record recs[3], dec;
	const char *error;
	unsigned int i;

	test_begin("env record round trip");
	test_env_record_init(&recs[0]);
	i_zero(&recs[1]);
	recs[2].schema_version = UINT32_MAX;
	recs[2].generation = UINT64_MAX;
	recs[2].next_body_id = UINT64_MAX;
	recs[2].created = UINT64_MAX;
	recs[2].links = UINT64_MAX;
	recs[2].link_vsize_bytes = UINT64_MAX - 1;
	recs[2].bodies = UINT64_MAX;
	recs[2].body_bytes = UINT64_MAX;
	for (i = 0; i < N_ELEMENTS(recs); i++) T_BEGIN {
		buffer_t *buf = t_buffer_create(64);

		lmdb_env_record_encode(buf, &recs[i]);
		/* version + u32 + 7 * u64 */
		test_assert_idx(buf->used == 1 + 4 + 7 * 8, i);
		test_assert_idx(((const unsigned char *)buf->data)[0] ==
				LMDB_RECORD_VERSION, i);
		error = NULL;
		test_assert_idx(test_decode_exact(test_decode_env, buf->data,
						  buf->used, &error), i);
		test_assert_idx(lmdb_env_record_decode(buf->data, buf->used,
						       &dec, &error), i);
		test_assert_idx(test_env_record_equals(&recs[i], &dec), i);

		/* a newer minor revision may append fields */
		buffer_append(buf, "\x01\x02\x03", 3);
		test_assert_idx(lmdb_env_record_decode(buf->data, buf->used,
						       &dec, &error), i);
		test_assert_idx(test_env_record_equals(&recs[i], &dec), i);
	} T_END;
	test_end();
}

static void test_body_record_roundtrip(void)
{
	struct lmdb_body_record recs[6], dec;
	const char *error;
	unsigned int i;

	test_begin("body record round trip");
	test_body_record_init(&recs[0]);

	/* empty body as the writer stores it */
	i_zero(&recs[1]);
	recs[1].state = LMDB_BODY_STATE_PENDING;
	recs[1].chunk_size = 65512;
	recs[1].guid = "";

	/* the interim record of a body still being written */
	i_zero(&recs[2]);
	recs[2].state = LMDB_BODY_STATE_PENDING;
	recs[2].guid = NULL;

	/* extremes: negative dates, maximum refcount, 255-byte GUID */
	test_body_record_init(&recs[3]);
	recs[3].state = LMDB_BODY_STATE_DEAD;
	recs[3].refcount = UINT32_MAX;
	recs[3].received_date = INT64_MIN;
	recs[3].save_date = -1;
	recs[3].state_since = INT64_MAX;
	recs[3].guid = test_str_repeat('g', LMDB_GUID_MAX_LEN);
	recs[3].virtual_size = UINT64_MAX;
	memset(recs[3].sha256, 0xff, sizeof(recs[3].sha256));
	memset(recs[3].orig_mailbox_guid, 0, sizeof(recs[3].orig_mailbox_guid));

	/* the largest body a 32-bit chunk count describes exactly */
	i_zero(&recs[4]);
	recs[4].state = LMDB_BODY_STATE_LINKED;
	recs[4].chunk_size = UINT32_MAX;
	recs[4].chunk_count = UINT32_MAX;
	recs[4].physical_size = (uint64_t)UINT32_MAX * UINT32_MAX;
	recs[4].virtual_size = recs[4].physical_size;
	recs[4].guid = "x";

	/* exactly full chunks */
	test_body_record_init(&recs[5]);
	recs[5].physical_size = 16 * 65512;
	recs[5].virtual_size = recs[5].physical_size;
	recs[5].chunk_count = 16;

	for (i = 0; i < N_ELEMENTS(recs); i++) T_BEGIN {
		buffer_t *buf = t_buffer_create(64);
		size_t guid_len = recs[i].guid == NULL ? 0 :
			strlen(recs[i].guid);

		lmdb_body_record_encode(buf, &recs[i]);
		test_assert_idx(buf->used == 106 + guid_len, i);
		error = NULL;
		test_assert_idx(test_decode_exact(test_decode_body, buf->data,
						  buf->used, &error), i);
		test_assert_idx(lmdb_body_record_decode(buf->data, buf->used,
				pool_datastack_create(), &dec, &error), i);
		test_assert_idx(test_body_record_equals(&recs[i], &dec), i);
		test_assert_idx(dec.guid != NULL, i);

		buffer_append(buf, "\0\0\0\0", 4);
		test_assert_idx(lmdb_body_record_decode(buf->data, buf->used,
				pool_datastack_create(), &dec, &error), i);
		test_assert_idx(test_body_record_equals(&recs[i], &dec), i);
	} T_END;
	test_end();
}

static void test_link_record_roundtrip(void)
{
	struct lmdb_link_record recs[4], dec;
	const char **many;
	const char *error;
	unsigned int i;

	test_begin("link record round trip");
	T_BEGIN {
		test_link_record_init(&recs[0]);

		/* nothing set */
		i_zero(&recs[1]);
		recs[1].pop3_uidl = NULL;

		/* extremes: 255-byte UIDL, the maximum number of keywords
		   with every keyword length 1..255 */
		i_zero(&recs[2]);
		recs[2].body_id = UINT64_MAX;
		recs[2].save_date = INT64_MIN;
		recs[2].flags = 0xff;
		recs[2].pop3_order = UINT32_MAX;
		recs[2].modseq = UINT64_MAX;
		recs[2].pop3_uidl = test_str_repeat('~', LMDB_UIDL_MAX_LEN);
		many = t_new(const char *, LMDB_KEYWORDS_MAX + 1);
		for (i = 0; i < LMDB_KEYWORDS_MAX; i++) {
			many[i] = t_strdup_printf("%s%u",
				test_str_repeat('a' + i % 26,
						i % LMDB_KEYWORD_MAX_LEN), i);
			if (strlen(many[i]) > LMDB_KEYWORD_MAX_LEN)
				many[i] = t_strndup(many[i], LMDB_KEYWORD_MAX_LEN);
		}
		recs[2].keywords = many;
		recs[2].keywords_count = LMDB_KEYWORDS_MAX;

		/* negative save date, single one-byte keyword */
		test_link_record_init(&recs[3]);
		recs[3].save_date = -86400;
		recs[3].pop3_uidl = "";
		recs[3].keywords_count = 1;
		recs[3].keywords = test_keywords + 2;

		for (i = 0; i < N_ELEMENTS(recs); i++) {
			buffer_t *buf = t_buffer_create(64);

			lmdb_link_record_encode(buf, &recs[i]);
			error = NULL;
			test_assert_idx(test_decode_exact(test_decode_link,
				buf->data, buf->used, &error), i);
			test_assert_idx(lmdb_link_record_decode(buf->data,
				buf->used, pool_datastack_create(), &dec,
				&error), i);
			test_assert_idx(test_link_record_equals(&recs[i], &dec), i);
			/* the keyword array is NULL-terminated */
			test_assert_idx(dec.keywords != NULL &&
					dec.keywords[dec.keywords_count] == NULL, i);

			buffer_append(buf, "trailing", 8);
			test_assert_idx(lmdb_link_record_decode(buf->data,
				buf->used, pool_datastack_create(), &dec,
				&error), i);
			test_assert_idx(test_link_record_equals(&recs[i], &dec), i);
		}
	} T_END;
	test_end();
}

static void test_mailbox_record_roundtrip(void)
{
	struct lmdb_mailbox_record recs[4], dec;
	const char *error;
	unsigned int i;

	test_begin("mailbox record round trip");
	T_BEGIN {
		test_mailbox_record_init(&recs[0]);

		i_zero(&recs[1]);
		recs[1].name = "";

		i_zero(&recs[2]);
		recs[2].state = LMDB_MAILBOX_STATE_DELETED;
		recs[2].uid_validity = UINT32_MAX;
		recs[2].highest_uid = UINT32_MAX;
		recs[2].highest_modseq = UINT64_MAX;
		recs[2].created = INT64_MIN;
		recs[2].hierarchy_sep = (char)0xff;
		recs[2].name = test_str_repeat('n', LMDB_NAME_MAX_LEN);

		test_mailbox_record_init(&recs[3]);
		recs[3].created = -1;
		recs[3].hierarchy_sep = '.';

		for (i = 0; i < N_ELEMENTS(recs); i++) {
			buffer_t *buf = t_buffer_create(64);

			lmdb_mailbox_record_encode(buf, &recs[i]);
			test_assert_idx(buf->used == 30 + strlen(recs[i].name), i);
			error = NULL;
			test_assert_idx(test_decode_exact(test_decode_mailbox,
				buf->data, buf->used, &error), i);
			test_assert_idx(lmdb_mailbox_record_decode(buf->data,
				buf->used, pool_datastack_create(), &dec,
				&error), i);
			test_assert_idx(test_mailbox_record_equals(&recs[i], &dec), i);

			buffer_append_c(buf, 0);
			test_assert_idx(lmdb_mailbox_record_decode(buf->data,
				buf->used, pool_datastack_create(), &dec,
				&error), i);
			test_assert_idx(test_mailbox_record_equals(&recs[i], &dec), i);
		}
	} T_END;
	test_end();
}

/* Keys */

static int test_sign(int v)
{
	return v < 0 ? -1 : (v > 0 ? 1 : 0);
}

static int test_cmp_u64(uint64_t a, uint64_t b)
{
	return a < b ? -1 : (a > b ? 1 : 0);
}

static const uint64_t test_u64_values[] = {
	0, 1, 2, 255, 256, 65535, 65536, 0xffffffULL, 0x1000000ULL,
	0xffffffffULL, 0x100000000ULL, 0x0100000000000000ULL,
	INT64_MAX, (uint64_t)INT64_MAX + 1, UINT64_MAX - 1, UINT64_MAX
};

static const uint32_t test_u32_values[] = {
	0, 1, 2, 127, 128, 255, 256, 257, 65535, 65536, 0xffffff,
	0x1000000, 0x7fffffff, 0x80000000, UINT32_MAX - 1, UINT32_MAX
};

static void test_body_id_keys(void)
{
	unsigned char a[LMDB_BODY_ID_SIZE], b[LMDB_BODY_ID_SIZE];
	unsigned char big[LMDB_BODY_ID_SIZE + 1];
	uint64_t id;
	unsigned int i, j;

	test_begin("body id keys");
	for (i = 0; i < N_ELEMENTS(test_u64_values); i++) {
		lmdb_body_id_encode(test_u64_values[i], a);
		test_assert_idx(lmdb_body_id_decode(a, sizeof(a), &id) &&
				id == test_u64_values[i], i);
		for (j = 0; j < N_ELEMENTS(test_u64_values); j++) {
			lmdb_body_id_encode(test_u64_values[j], b);
			test_assert_idx(test_sign(memcmp(a, b, sizeof(a))) ==
					test_cmp_u64(test_u64_values[i],
						     test_u64_values[j]),
					i * 100 + j);
		}
	}
	/* big-endian on every host */
	lmdb_body_id_encode(0x0102030405060708ULL, a);
	test_assert(memcmp(a, "\x01\x02\x03\x04\x05\x06\x07\x08", 8) == 0);
	memset(big, 0, sizeof(big));
	for (i = 0; i <= sizeof(big); i++) {
		if (i == LMDB_BODY_ID_SIZE)
			continue;
		test_assert_idx(!lmdb_body_id_decode(big, i, &id), i);
	}
	test_end();
}

static void test_link_keys(void)
{
	unsigned char a[LMDB_LINK_KEY_SIZE], b[LMDB_LINK_KEY_SIZE];
	unsigned char big[LMDB_LINK_KEY_SIZE + 1];
	guid_128_t guid1, guid2, guid_r;
	uint32_t uid;
	unsigned int i, j;

	test_begin("link keys");
	memset(guid1, 0x11, sizeof(guid1));
	memset(guid2, 0x11, sizeof(guid2));
	guid2[GUID_128_SIZE - 1] = 0x12;

	for (i = 0; i < N_ELEMENTS(test_u32_values); i++) {
		lmdb_link_key_encode(guid1, test_u32_values[i], a);
		test_assert_idx(lmdb_link_key_decode(a, sizeof(a), guid_r, &uid) &&
				uid == test_u32_values[i] &&
				guid_128_equals(guid_r, guid1), i);
		for (j = 0; j < N_ELEMENTS(test_u32_values); j++) {
			/* one mailbox: UID order */
			lmdb_link_key_encode(guid1, test_u32_values[j], b);
			test_assert_idx(test_sign(memcmp(a, b, sizeof(a))) ==
					test_cmp_u64(test_u32_values[i],
						     test_u32_values[j]),
					i * 100 + j);
			/* different mailboxes never interleave, whatever
			   the UIDs */
			lmdb_link_key_encode(guid2, test_u32_values[j], b);
			test_assert_idx(memcmp(a, b, sizeof(a)) < 0, i * 100 + j);
		}
	}
	memset(big, 0, sizeof(big));
	for (i = 0; i <= sizeof(big); i++) {
		if (i == LMDB_LINK_KEY_SIZE)
			continue;
		test_assert_idx(!lmdb_link_key_decode(big, i, guid_r, &uid), i);
	}
	test_end();
}

static void test_chunk_keys(void)
{
	unsigned char a[LMDB_CHUNK_KEY_SIZE], b[LMDB_CHUNK_KEY_SIZE];
	unsigned char big[LMDB_CHUNK_KEY_SIZE + 1];
	uint64_t id;
	uint32_t idx;
	unsigned int i, j;

	test_begin("chunk keys");
	for (i = 0; i < N_ELEMENTS(test_u32_values); i++) {
		lmdb_chunk_key_encode(test_u64_values[i], test_u32_values[i], a);
		test_assert_idx(lmdb_chunk_key_decode(a, sizeof(a), &id, &idx) &&
				id == test_u64_values[i] &&
				idx == test_u32_values[i], i);
		for (j = 0; j < N_ELEMENTS(test_u32_values); j++) {
			/* one body: chunk index order */
			lmdb_chunk_key_encode(test_u64_values[i],
					      test_u32_values[j], b);
			test_assert_idx(test_sign(memcmp(a, b, sizeof(a))) ==
					test_cmp_u64(test_u32_values[i],
						     test_u32_values[j]),
					i * 100 + j);
			/* body id first: a body's chunks are contiguous */
			lmdb_chunk_key_encode(test_u64_values[j], 0, b);
			if (i != j) {
				test_assert_idx(test_sign(memcmp(a, b, sizeof(a))) ==
						test_cmp_u64(test_u64_values[i],
							     test_u64_values[j]),
						i * 100 + j);
			}
		}
	}
	memset(big, 0, sizeof(big));
	for (i = 0; i <= sizeof(big); i++) {
		if (i == LMDB_CHUNK_KEY_SIZE)
			continue;
		test_assert_idx(!lmdb_chunk_key_decode(big, i, &id, &idx), i);
	}
	test_end();
}

static void test_gc_keys(void)
{
	static const int64_t times[] = {
		0, 1, 255, 256, 1700000000, 0x100000000LL, INT64_MAX - 1,
		INT64_MAX
	};
	unsigned char a[LMDB_GC_KEY_SIZE], b[LMDB_GC_KEY_SIZE];
	unsigned char big[LMDB_GC_KEY_SIZE + 1];
	enum lmdb_gc_kind kind;
	int64_t since;
	uint64_t id;
	unsigned int i, j, k;

	test_begin("gc keys");
	for (i = 0; i < N_ELEMENTS(times); i++) {
		for (k = LMDB_GC_KIND_PENDING; k <= LMDB_GC_KIND_DEAD; k++) {
			lmdb_gc_key_encode(k, times[i], test_u64_values[i], a);
			test_assert_idx(lmdb_gc_key_decode(a, sizeof(a), &kind,
							   &since, &id) &&
					kind == k && since == times[i] &&
					id == test_u64_values[i], i);
		}
		lmdb_gc_key_encode(LMDB_GC_KIND_PENDING, times[i], UINT64_MAX, a);
		for (j = 0; j < N_ELEMENTS(times); j++) {
			/* one kind: time order, whatever the body id */
			lmdb_gc_key_encode(LMDB_GC_KIND_PENDING, times[j], 0, b);
			if (i != j) {
				test_assert_idx(test_sign(memcmp(a, b, sizeof(a))) ==
						test_cmp_u64(times[i], times[j]),
						i * 100 + j);
			}
			/* all pending keys sort before all dead keys */
			lmdb_gc_key_encode(LMDB_GC_KIND_DEAD, times[j], 0, b);
			test_assert_idx(memcmp(a, b, sizeof(a)) < 0, i * 100 + j);
		}
	}
	/* same kind and time: body id order */
	lmdb_gc_key_encode(LMDB_GC_KIND_DEAD, 5, 1, a);
	lmdb_gc_key_encode(LMDB_GC_KIND_DEAD, 5, 256, b);
	test_assert(memcmp(a, b, sizeof(a)) < 0);

	/* times before the epoch are stored as 0, so they sort first and
	   are collected by the first GC */
	lmdb_gc_key_encode(LMDB_GC_KIND_DEAD, -12345, 9, a);
	test_assert(lmdb_gc_key_decode(a, sizeof(a), &kind, &since, &id) &&
		    kind == LMDB_GC_KIND_DEAD && since == 0 && id == 9);
	lmdb_gc_key_encode(LMDB_GC_KIND_DEAD, INT64_MIN, 9, b);
	test_assert(memcmp(a, b, sizeof(a)) == 0);

	/* unknown kinds, times that don't fit int64_t and wrong sizes */
	for (k = 0; k < 256; k++) {
		lmdb_gc_key_encode(LMDB_GC_KIND_PENDING, 1, 1, a);
		a[0] = k;
		test_assert_idx(lmdb_gc_key_decode(a, sizeof(a), &kind, &since,
						   &id) ==
				(k == LMDB_GC_KIND_PENDING ||
				 k == LMDB_GC_KIND_DEAD), k);
	}
	lmdb_gc_key_encode(LMDB_GC_KIND_PENDING, 1, 1, a);
	a[1] = 0x80;
	test_assert(!lmdb_gc_key_decode(a, sizeof(a), &kind, &since, &id));
	memset(big, 0, sizeof(big));
	big[0] = LMDB_GC_KIND_PENDING;
	for (i = 0; i <= sizeof(big); i++) {
		void *copy = test_dup_exact(big, i);

		test_assert_idx(lmdb_gc_key_decode(copy, i, &kind, &since,
						   &id) ==
				(i == LMDB_GC_KIND_SIZE_CHECK), i);
		free(copy);
	}
	test_end();
}
