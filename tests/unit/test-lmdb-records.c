/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "str.h"
#include "crc32.h"
#include "test-common.h"
#include "crc32.h"
#include "lmdb-crc32.h"
#include "lmdb-records.h"
#include "test-rand.h"

#include <stdlib.h>


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

/* Record sizes as documented in docs/schema.md: catches layout changes
   that were not meant to happen. */
#define TEST_ENV_RECORD_SIZE (1 + 4 + 8 * 8)
/* version, state, reserved, refcount, 6 * u64, chunk_count, chunk_size,
   sha256, orig_mailbox_guid (the guid's str16 follows) */
#define TEST_BODY_RECORD_FIXED_SIZE \
	(1 + 1 + 2 + 4 + 6 * 8 + 4 + 4 + LMDB_SHA256_SIZE + GUID_128_SIZE)
/* version, state, hierarchy_sep, reserved, 2 * u32, 2 * u64 */
#define TEST_MAILBOX_RECORD_FIXED_SIZE (1 + 1 + 1 + 1 + 2 * 4 + 2 * 8)

/* Representative records */

static void test_body_record_init(struct lmdb_body_record *rec)
{
	i_zero(rec);
	rec->state = LMDB_BODY_STATE_LINKED;
	rec->refcount = 3;
	rec->physical_size = 3 * 65512 + 17;
	/* stored compressed: the message is bigger than the chunks */
	rec->message_size = rec->physical_size * 3;
	rec->virtual_size = rec->message_size + 100;
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
	rec->last_purge = 1700000000;
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
		a->body_bytes == b->body_bytes &&
		a->last_purge == b->last_purge;
}

static bool test_body_record_equals(const struct lmdb_body_record *a,
				    const struct lmdb_body_record *b)
{
	return a->state == b->state &&
		a->refcount == b->refcount &&
		a->physical_size == b->physical_size &&
		a->message_size == b->message_size &&
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
	recs[2].last_purge = UINT64_MAX;
	for (i = 0; i < N_ELEMENTS(recs); i++) T_BEGIN {
		buffer_t *buf = t_buffer_create(64);

		lmdb_env_record_encode(buf, &recs[i]);
		/* docs/schema.md: version, u32, 8 * u64 */
		test_assert_idx(buf->used == TEST_ENV_RECORD_SIZE, i);
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
	recs[3].message_size = UINT64_MAX;
	recs[3].virtual_size = UINT64_MAX;
	memset(recs[3].sha256, 0xff, sizeof(recs[3].sha256));
	memset(recs[3].orig_mailbox_guid, 0, sizeof(recs[3].orig_mailbox_guid));

	/* the largest body a 32-bit chunk count describes exactly */
	i_zero(&recs[4]);
	recs[4].state = LMDB_BODY_STATE_LINKED;
	recs[4].chunk_size = UINT32_MAX;
	recs[4].chunk_count = UINT32_MAX;
	recs[4].physical_size = (uint64_t)UINT32_MAX * UINT32_MAX;
	recs[4].message_size = recs[4].physical_size;
	recs[4].virtual_size = recs[4].physical_size;
	recs[4].guid = "x";

	/* exactly full chunks */
	test_body_record_init(&recs[5]);
	recs[5].physical_size = 16 * 65512;
	/* stored bigger than the message (mail_crypt overhead) */
	recs[5].message_size = recs[5].physical_size - 1000;
	recs[5].virtual_size = recs[5].message_size;
	recs[5].chunk_count = 16;

	for (i = 0; i < N_ELEMENTS(recs); i++) T_BEGIN {
		buffer_t *buf = t_buffer_create(64);
		size_t guid_len = recs[i].guid == NULL ? 0 :
			strlen(recs[i].guid);

		lmdb_body_record_encode(buf, &recs[i]);
		test_assert_idx(buf->used == TEST_BODY_RECORD_FIXED_SIZE + 2 +
				guid_len, i);
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
			test_assert_idx(buf->used == TEST_MAILBOX_RECORD_FIXED_SIZE +
					2 + strlen(recs[i].name), i);
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
				(i == LMDB_GC_KEY_SIZE), i);
		free(copy);
	}
	test_end();
}

/* Malformed records */

enum test_record_type {
	TEST_RECORD_ENV,
	TEST_RECORD_BODY,
	TEST_RECORD_LINK,
	TEST_RECORD_MAILBOX,
	TEST_RECORD_CHUNK,

	TEST_RECORD_TYPE_COUNT
};

static test_decode_func_t *const test_decoders[TEST_RECORD_TYPE_COUNT] = {
	test_decode_env,
	test_decode_body,
	test_decode_link,
	test_decode_mailbox,
	test_decode_chunk,
};

/* A valid encoding of each record type that uses every field, including
   strings and keywords, so truncations hit every field boundary. */
static buffer_t *test_encode_sample(enum test_record_type type,
				    unsigned int variant)
{
	buffer_t *buf = t_buffer_create(256);
	struct lmdb_env_record env_rec;
	struct lmdb_body_record body_rec;
	struct lmdb_link_record link_rec;
	struct lmdb_mailbox_record mailbox_rec;
	unsigned char hdr[LMDB_CHUNK_HDR_SIZE];
	const char *data;

	switch (type) {
	case TEST_RECORD_ENV:
		test_env_record_init(&env_rec);
		if (variant % 2 == 1)
			env_rec.body_bytes = UINT64_MAX;
		lmdb_env_record_encode(buf, &env_rec);
		break;
	case TEST_RECORD_BODY:
		test_body_record_init(&body_rec);
		if (variant % 2 == 1) {
			body_rec.guid = "";
			body_rec.state = LMDB_BODY_STATE_PENDING;
		}
		lmdb_body_record_encode(buf, &body_rec);
		break;
	case TEST_RECORD_LINK:
		test_link_record_init(&link_rec);
		if (variant % 2 == 1) {
			link_rec.keywords_count = 0;
			link_rec.pop3_uidl = "";
		}
		lmdb_link_record_encode(buf, &link_rec);
		break;
	case TEST_RECORD_MAILBOX:
		test_mailbox_record_init(&mailbox_rec);
		if (variant % 2 == 1)
			mailbox_rec.name = "";
		lmdb_mailbox_record_encode(buf, &mailbox_rec);
		break;
	case TEST_RECORD_CHUNK:
		data = variant % 2 == 1 ? "" :
			"Subject: hello\r\n\r\nchunk data\r\n";
		lmdb_chunk_header_encode(hdr, data, strlen(data));
		buffer_append(buf, hdr, sizeof(hdr));
		buffer_append(buf, data, strlen(data));
		break;
	case TEST_RECORD_TYPE_COUNT:
		i_unreached();
	}
	return buf;
}

static void test_records_truncated(void)
{
	enum test_record_type type;
	const char *error;
	unsigned int variant;
	size_t len;

	test_begin("truncated records are rejected");
	for (type = 0; type < TEST_RECORD_TYPE_COUNT; type++) {
		for (variant = 0; variant < 2; variant++) T_BEGIN {
			buffer_t *buf = test_encode_sample(type, variant);

			test_assert_idx(test_decode_exact(test_decoders[type],
				buf->data, buf->used, &error), type);
			for (len = 0; len < buf->used; len++) {
				bool ret = test_decode_exact(test_decoders[type],
							     buf->data, len,
							     &error);
				test_assert_idx(!ret, type * 1000 + len);
				if (type == TEST_RECORD_CHUNK) {
					/* a shorter chunk fails its checksum */
					test_assert_idx(test_str_contains(error,
						len < LMDB_CHUNK_HDR_SIZE ?
						"shorter than its header" :
						"checksum mismatch"),
						type * 1000 + len);
				} else {
					test_assert_idx(test_str_contains(error,
						"truncated"), type * 1000 + len);
				}
			}
		} T_END;
	}
	test_end();
}

static void test_records_unknown_version(void)
{
	enum test_record_type type;
	const char *error;
	unsigned int version;

	test_begin("unknown record versions are rejected");
	for (type = 0; type < TEST_RECORD_TYPE_COUNT; type++) T_BEGIN {
		buffer_t *buf = test_encode_sample(type, 0);
		unsigned char *data = buffer_get_modifiable_data(buf, NULL);

		for (version = 0; version < 256; version++) {
			data[0] = version;
			bool ret = test_decode_exact(test_decoders[type],
						     buf->data, buf->used,
						     &error);
			test_assert_idx(ret == (version == LMDB_RECORD_VERSION),
					type * 1000 + version);
			if (version != LMDB_RECORD_VERSION) {
				test_assert_idx(test_str_contains(error,
					"unknown version"), type * 1000 + version);
				test_assert_idx(test_str_contains(error,
					t_strdup_printf("%u", version)),
					type * 1000 + version);
			}
		}
	} T_END;
	test_end();
}

/* Encode a body record with the given layout, bypassing the checks the
   writer would have made. */
static bool test_body_decode_sizes(uint64_t physical_size,
				   uint64_t message_size, uint64_t virtual_size,
				   uint32_t chunk_size, uint32_t chunk_count,
				   const char **error_r)
{
	struct lmdb_body_record rec;
	buffer_t *buf = t_buffer_create(128);

	test_body_record_init(&rec);
	rec.physical_size = physical_size;
	rec.message_size = message_size;
	rec.virtual_size = virtual_size;
	rec.chunk_size = chunk_size;
	rec.chunk_count = chunk_count;
	lmdb_body_record_encode(buf, &rec);
	return test_decode_exact(test_decode_body, buf->data, buf->used,
				 error_r);
}

/* The same for an untransformed body: message_size == physical_size. */
static bool test_body_decode_layout(uint64_t physical_size,
				    uint64_t virtual_size,
				    uint32_t chunk_size, uint32_t chunk_count,
				    const char **error_r)
{
	return test_body_decode_sizes(physical_size, physical_size,
				      virtual_size, chunk_size, chunk_count,
				      error_r);
}

static void test_body_record_layout(void)
{
	const uint32_t cs = 65512;
	const char *error;

	test_begin("body record chunk layout checks");
	T_BEGIN {
		/* consistent layouts */
		test_assert(test_body_decode_layout(0, 0, cs, 0, &error));
		test_assert(test_body_decode_layout(1, 1, cs, 1, &error));
		test_assert(test_body_decode_layout(cs, cs, cs, 1, &error));
		test_assert(test_body_decode_layout(cs + 1, cs + 1, cs, 2, &error));
		test_assert(test_body_decode_layout(3 * cs, 3 * cs, cs, 3, &error));
		test_assert(test_body_decode_layout(100, 100, 1, 100, &error));
		/* the interim record of an unfinished body */
		test_assert(test_body_decode_layout(0, 0, 0, 0, &error));

		/* chunk count doesn't match */
		test_assert(!test_body_decode_layout(1, 1, cs, 0, &error));
		test_assert(test_str_contains(error, "chunk count"));
		test_assert(!test_body_decode_layout(1, 1, cs, 2, &error));
		test_assert(test_str_contains(error, "chunk count"));
		test_assert(!test_body_decode_layout(0, 0, cs, 1, &error));
		test_assert(!test_body_decode_layout(cs, cs, cs, 2, &error));
		test_assert(!test_body_decode_layout(cs + 1, cs + 1, cs, 1, &error));
		test_assert(!test_body_decode_layout(3 * cs, 3 * cs, cs, 4, &error));
		test_assert(!test_body_decode_layout(3 * cs + 1, 3 * cs + 1, cs,
						     3, &error));
		test_assert(!test_body_decode_layout(100, 100, 1, UINT32_MAX,
						     &error));
		/* more than UINT32_MAX chunks would be needed */
		test_assert(!test_body_decode_layout((uint64_t)UINT32_MAX * cs + 1,
						     UINT64_MAX, cs, UINT32_MAX,
						     &error));

		/* data without a chunk size */
		test_assert(!test_body_decode_layout(1, 1, 0, 1, &error));
		test_assert(test_str_contains(error, "zero chunk size"));
		test_assert(!test_body_decode_layout(1, 1, 0, 0, &error));

		/* virtual size below the message size */
		test_assert(!test_body_decode_layout(10, 9, cs, 1, &error));
		test_assert(test_str_contains(error, "virtual size"));
		test_assert(!test_body_decode_sizes(10, 1000, 999, cs, 1, &error));
		test_assert(test_str_contains(error, "virtual size"));
		test_assert(!test_body_decode_sizes(0, UINT64_MAX, UINT64_MAX - 1,
						    cs, 0, &error));
		test_assert(test_body_decode_layout(10, 10, cs, 1, &error));
		test_assert(test_body_decode_layout(10, UINT64_MAX, cs, 1, &error));
		/* compressed or encrypted: the stored size is unrelated to
		   the message's, either way round */
		test_assert(test_body_decode_sizes(10, 1000, 1000, cs, 1, &error));
		test_assert(test_body_decode_sizes(1000, 10, 12, cs, 1, &error));
		test_assert(test_body_decode_sizes(0, 0, 0, cs, 0, &error));
	} T_END;
	test_end();
}

/* Reported bugs in lmdb_body_record_decode()'s layout check. */
static void test_body_record_layout_bugs(void)
{
	const uint32_t cs = 65512;
	const char *error;

	test_begin("body record layout check: overflow and zero chunk size");
	T_BEGIN {
		/* physical_size + chunk_size - 1 wraps around: a body of
		   2^64-1 bytes in zero chunks must not be accepted, a reader
		   would trust physical_size */
		test_assert(!test_body_decode_layout(UINT64_MAX, UINT64_MAX, cs,
						     0, &error));
		test_assert(!test_body_decode_layout(UINT64_MAX - 5, UINT64_MAX,
						     UINT32_MAX, 0, &error));
		/* an empty body with chunk_size 0 claims chunks that can't
		   exist */
		test_assert(!test_body_decode_layout(0, 0, 0, 5, &error));
	} T_END;
	test_end();
}

static void test_body_record_invalid_fields(void)
{
	struct lmdb_body_record rec;
	const char *error;
	unsigned int state;

	test_begin("body record invalid state and guid");
	T_BEGIN {
		buffer_t *buf = t_buffer_create(128);
		unsigned char *data;
		size_t guid_pos;

		test_body_record_init(&rec);
		lmdb_body_record_encode(buf, &rec);
		data = buffer_get_modifiable_data(buf, NULL);
		for (state = 0; state < 256; state++) {
			bool valid = state >= LMDB_BODY_STATE_PENDING &&
				state <= LMDB_BODY_STATE_DEAD;

			data[1] = state;
			test_assert_idx(test_decode_exact(test_decode_body,
				buf->data, buf->used, &error) == valid, state);
			if (!valid) {
				test_assert_idx(test_str_contains(error,
					"invalid state"), state);
			}
		}
		data[1] = LMDB_BODY_STATE_LINKED;

		/* NUL anywhere in the GUID */
		guid_pos = buf->used - strlen(rec.guid);
		for (size_t i = guid_pos; i < buf->used; i++) {
			unsigned char old = data[i];

			data[i] = '\0';
			test_assert_idx(!test_decode_exact(test_decode_body,
				buf->data, buf->used, &error), i);
			test_assert_idx(test_str_contains(error, "contains NUL"), i);
			data[i] = old;
		}
		test_assert(test_decode_exact(test_decode_body, buf->data,
					      buf->used, &error));

		/* a 256-byte GUID can't be written, but can be read */
		buffer_set_used_size(buf, guid_pos - 2);
		buffer_append(buf, "\x01\x00", 2);
		buffer_append(buf, test_str_repeat('g', 256), 256);
		test_assert(!test_decode_exact(test_decode_body, buf->data,
					       buf->used, &error));
		test_assert(test_str_contains(error, "too long"));
		/* the length field says more than there is */
		buffer_set_used_size(buf, buf->used - 2);
		data = buffer_get_modifiable_data(buf, NULL);
		data[guid_pos - 2] = 0;
		data[guid_pos - 1] = 255;
		test_assert(!test_decode_exact(test_decode_body, buf->data,
					       buf->used, &error));
		test_assert(test_str_contains(error, "truncated"));
	} T_END;
	test_end();
}

static void test_link_record_invalid_fields(void)
{
	struct lmdb_link_record rec;
	const char *error;

	test_begin("link record invalid uidl and keywords");
	T_BEGIN {
		buffer_t *buf = t_buffer_create(128);
		buffer_t *buf2 = t_buffer_create(128);
		unsigned char *data;
		size_t uidl_pos, kw_pos, i;
		unsigned int count;

		test_link_record_init(&rec);
		lmdb_link_record_encode(buf, &rec);
		data = buffer_get_modifiable_data(buf, NULL);
		/* version, flags, reserved, body_id, save_date,
		   pop3_order, modseq, uidl length */
		uidl_pos = 1 + 1 + 2 + 8 + 8 + 4 + 8 + 2;
		test_assert(memcmp(data + uidl_pos, rec.pop3_uidl,
				   strlen(rec.pop3_uidl)) == 0);
		for (i = uidl_pos; i < uidl_pos + strlen(rec.pop3_uidl); i++) {
			unsigned char old = data[i];

			data[i] = '\0';
			test_assert_idx(!test_decode_exact(test_decode_link,
				buf->data, buf->used, &error), i);
			test_assert_idx(test_str_contains(error, "contains NUL"), i);
			data[i] = old;
		}
		/* NUL in a keyword */
		kw_pos = uidl_pos + strlen(rec.pop3_uidl) + 2;
		test_assert(data[kw_pos] == strlen(rec.keywords[0]));
		data[kw_pos + 3] = '\0';
		test_assert(!test_decode_exact(test_decode_link, buf->data,
					       buf->used, &error));
		test_assert(test_str_contains(error, "contains NUL"));
		data[kw_pos + 3] = rec.keywords[0][2];
		/* empty keyword */
		data[kw_pos] = 0;
		test_assert(!test_decode_exact(test_decode_link, buf->data,
					       buf->used, &error));
		test_assert(test_str_contains(error, "empty keyword"));
		data[kw_pos] = strlen(rec.keywords[0]);
		test_assert(test_decode_exact(test_decode_link, buf->data,
					      buf->used, &error));

		/* a 256-byte UIDL */
		buffer_append(buf2, buf->data, uidl_pos - 2);
		buffer_append(buf2, "\x01\x00", 2);
		buffer_append(buf2, test_str_repeat('u', 256), 256);
		buffer_append(buf2, "\x00\x00", 2);
		test_assert(!test_decode_exact(test_decode_link, buf2->data,
					       buf2->used, &error));
		test_assert(test_str_contains(error, "too long"));

		/* keyword counts around the limit, with enough one-byte
		   keywords present so only the count can be the problem */
		for (count = LMDB_KEYWORDS_MAX - 1; count <= 65535;
		     count = count < LMDB_KEYWORDS_MAX + 2 ? count + 1 :
			     (count == 65535 ? 65536 : 65535)) {
			buffer_set_used_size(buf2, 0);
			buffer_append(buf2, buf->data, uidl_pos - 2);
			buffer_append(buf2, "\x00\x00", 2);
			buffer_append_c(buf2, count >> 8);
			buffer_append_c(buf2, count & 0xff);
			for (i = 0; i < LMDB_KEYWORDS_MAX + 2; i++)
				buffer_append(buf2, "\x01k", 2);
			bool ret = test_decode_exact(test_decode_link,
				buf2->data, buf2->used, &error);
			test_assert_idx(ret == (count <= LMDB_KEYWORDS_MAX), count);
			if (count > LMDB_KEYWORDS_MAX) {
				test_assert_idx(test_str_contains(error,
					"too many keywords"), count);
			}
		}
	} T_END;
	test_end();
}

static void test_mailbox_record_invalid_fields(void)
{
	struct lmdb_mailbox_record rec;
	const char *error;
	unsigned int state;

	test_begin("mailbox record invalid state and name");
	T_BEGIN {
		buffer_t *buf = t_buffer_create(128);
		unsigned char *data;
		size_t name_pos, i;

		test_mailbox_record_init(&rec);
		lmdb_mailbox_record_encode(buf, &rec);
		data = buffer_get_modifiable_data(buf, NULL);
		for (state = 0; state < 256; state++) {
			bool valid = state <= LMDB_MAILBOX_STATE_DELETED;

			data[1] = state;
			test_assert_idx(test_decode_exact(test_decode_mailbox,
				buf->data, buf->used, &error) == valid, state);
			if (!valid) {
				test_assert_idx(test_str_contains(error,
					"invalid state"), state);
			}
		}
		data[1] = LMDB_MAILBOX_STATE_ACTIVE;

		name_pos = buf->used - strlen(rec.name);
		for (i = name_pos; i < buf->used; i++) {
			unsigned char old = data[i];

			data[i] = '\0';
			test_assert_idx(!test_decode_exact(test_decode_mailbox,
				buf->data, buf->used, &error), i);
			test_assert_idx(test_str_contains(error, "contains NUL"), i);
			data[i] = old;
		}

		/* name one byte over the limit */
		buffer_set_used_size(buf, name_pos - 2);
		buffer_append_c(buf, (LMDB_NAME_MAX_LEN + 1) >> 8);
		buffer_append_c(buf, (LMDB_NAME_MAX_LEN + 1) & 0xff);
		buffer_append(buf, test_str_repeat('n', LMDB_NAME_MAX_LEN + 1),
			      LMDB_NAME_MAX_LEN + 1);
		test_assert(!test_decode_exact(test_decode_mailbox, buf->data,
					       buf->used, &error));
		test_assert(test_str_contains(error, "too long"));
	} T_END;
	test_end();
}

/* Chunk values */

static void test_chunk_values(void)
{
	unsigned char hdr[LMDB_CHUNK_HDR_SIZE];
	unsigned char data[97];
	const void *data_r;
	const char *error;
	size_t size_r, i;
	unsigned int bit;

	test_begin("chunk values");
	T_BEGIN {
		buffer_t *buf = t_buffer_create(256);
		unsigned char *value;

		test_rand_seed(4711);
		for (i = 0; i < sizeof(data); i++)
			data[i] = test_rand64() & 0xff;
		lmdb_chunk_header_encode(hdr, data, sizeof(data));
		test_assert(hdr[0] == LMDB_RECORD_VERSION &&
			    hdr[1] == 0 && hdr[2] == 0 && hdr[3] == 0);
		test_assert(be32_to_cpu_unaligned(hdr + 4) ==
			    crc32_data(data, sizeof(data)));
		buffer_append(buf, hdr, sizeof(hdr));
		buffer_append(buf, data, sizeof(data));
		value = buffer_get_modifiable_data(buf, NULL);

		test_assert(lmdb_chunk_decode(buf->data, buf->used, &data_r,
					      &size_r, &error));
		test_assert(data_r == value + LMDB_CHUNK_HDR_SIZE);
		test_assert(size_r == sizeof(data));

		/* every single-bit error in the data or the CRC */
		for (i = 4; i < buf->used; i++) {
			for (bit = 0; bit < 8; bit++) {
				value[i] ^= 1 << bit;
				error = NULL;
				test_assert_idx(!test_decode_exact(test_decode_chunk,
					buf->data, buf->used, &error),
					i * 8 + bit);
				test_assert_idx(test_str_contains(error,
					"checksum mismatch"), i * 8 + bit);
				value[i] ^= 1 << bit;
			}
		}
		/* the flags/reserved bytes are not covered */
		value[1] = 0xff;
		test_assert(lmdb_chunk_decode(buf->data, buf->used, &data_r,
					      &size_r, &error));
		value[1] = 0;

		/* an empty chunk */
		lmdb_chunk_header_encode(hdr, "", 0);
		test_assert(test_decode_exact(test_decode_chunk, hdr,
					      sizeof(hdr), &error));
		test_assert(lmdb_chunk_decode(hdr, sizeof(hdr), &data_r,
					      &size_r, &error) && size_r == 0);
	} T_END;
	test_end();
}

static void test_crc32_matches_dovecot(void)
{
	unsigned char data[1024 + 7];
	unsigned int i, off, len;

	test_begin("lmdb_crc32 equals crc32_data");
	for (i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 131 + (i >> 3) * 7 + 1);
	/* every length up to past one 8-byte block, at every alignment, and
	   long runs: the sliced loop and the byte tail must agree */
	for (off = 0; off < 8; off++) {
		for (len = 0; len <= 40; len++) {
			test_assert_idx(lmdb_crc32(data + off, len) ==
					crc32_data(data + off, len), off * 100 + len);
		}
		test_assert_idx(lmdb_crc32(data + off, 1024) ==
				crc32_data(data + off, 1024), off);
	}
	/* the standard check value of CRC-32 */
	test_assert(lmdb_crc32("123456789", 9) == 0xcbf43926);
	test_end();
}

static void test_uidl_is_valid(void)
{
	char str[4];
	unsigned int c;

	test_begin("lmdb_uidl_is_valid");
	test_assert(!lmdb_uidl_is_valid(""));
	test_assert(lmdb_uidl_is_valid("a"));
	test_assert(lmdb_uidl_is_valid("!"));
	test_assert(lmdb_uidl_is_valid("~"));
	test_assert(lmdb_uidl_is_valid("00000001.4f3d2a"));
	test_assert(!lmdb_uidl_is_valid("a b"));
	test_assert(!lmdb_uidl_is_valid("ab\r\n"));
	test_assert(!lmdb_uidl_is_valid("a\tb"));
	T_BEGIN {
		test_assert(lmdb_uidl_is_valid(test_str_repeat('x', 70)));
		test_assert(lmdb_uidl_is_valid(test_str_repeat('x', 71)));
		test_assert(lmdb_uidl_is_valid(test_str_repeat('x',
							       LMDB_UIDL_MAX_LEN)));
		test_assert(!lmdb_uidl_is_valid(test_str_repeat('x',
							LMDB_UIDL_MAX_LEN + 1)));
		test_assert(!lmdb_uidl_is_valid(test_str_repeat('x', 4096)));
	} T_END;
	for (c = 1; c < 256; c++) {
		bool valid = c >= 0x21 && c <= 0x7e;

		/* alone, and after valid characters */
		str[0] = c;
		str[1] = '\0';
		test_assert_idx(lmdb_uidl_is_valid(str) == valid, c);
		str[0] = 'a';
		str[1] = 'b';
		str[2] = c;
		str[3] = '\0';
		test_assert_idx(lmdb_uidl_is_valid(str) == valid, c);
	}
	test_end();
}

/* Fuzzing */

#define TEST_FUZZ_ITERATIONS 20000

/* Decode, and when the decoder accepts, check that encoding the result
   and decoding it again gives the same record: whatever a decoder
   accepts must be something the encoders can write. */
static void test_fuzz_one(enum test_record_type type, const void *data,
			  size_t size, unsigned int iter)
{
	void *copy = test_dup_exact(data, size);
	pool_t pool = pool_datastack_create();
	buffer_t *buf = t_buffer_create(128);
	const char *error = NULL, *error2 = NULL;
	bool ret = FALSE;

	switch (type) {
	case TEST_RECORD_ENV: {
		struct lmdb_env_record rec, rec2;

		ret = lmdb_env_record_decode(copy, size, &rec, &error);
		if (ret) {
			lmdb_env_record_encode(buf, &rec);
			test_assert_idx(lmdb_env_record_decode(buf->data,
				buf->used, &rec2, &error2) &&
				test_env_record_equals(&rec, &rec2), iter);
		}
		break;
	}
	case TEST_RECORD_BODY: {
		struct lmdb_body_record rec, rec2;

		ret = lmdb_body_record_decode(copy, size, pool, &rec, &error);
		if (ret) {
			/* the layout promise readers rely on */
			test_assert_idx(rec.state >= LMDB_BODY_STATE_PENDING &&
					rec.state <= LMDB_BODY_STATE_DEAD, iter);
			test_assert_idx(rec.virtual_size >= rec.message_size,
					iter);
			if (rec.physical_size > 0) {
				test_assert_idx(rec.chunk_size > 0 &&
					(uint64_t)rec.chunk_count * rec.chunk_size >=
					rec.physical_size &&
					(uint64_t)(rec.chunk_count - 1) *
					rec.chunk_size < rec.physical_size, iter);
			}
			lmdb_body_record_encode(buf, &rec);
			test_assert_idx(lmdb_body_record_decode(buf->data,
				buf->used, pool, &rec2, &error2) &&
				test_body_record_equals(&rec, &rec2), iter);
		}
		break;
	}
	case TEST_RECORD_LINK: {
		struct lmdb_link_record rec, rec2;

		ret = lmdb_link_record_decode(copy, size, pool, &rec, &error);
		if (ret) {
			test_assert_idx(rec.keywords_count <= LMDB_KEYWORDS_MAX,
					iter);
			lmdb_link_record_encode(buf, &rec);
			test_assert_idx(lmdb_link_record_decode(buf->data,
				buf->used, pool, &rec2, &error2) &&
				test_link_record_equals(&rec, &rec2), iter);
		}
		break;
	}
	case TEST_RECORD_MAILBOX: {
		struct lmdb_mailbox_record rec, rec2;

		ret = lmdb_mailbox_record_decode(copy, size, pool, &rec,
						 &error);
		if (ret) {
			lmdb_mailbox_record_encode(buf, &rec);
			test_assert_idx(lmdb_mailbox_record_decode(buf->data,
				buf->used, pool, &rec2, &error2) &&
				test_mailbox_record_equals(&rec, &rec2), iter);
		}
		break;
	}
	case TEST_RECORD_CHUNK: {
		const void *data_r;
		size_t size_r;

		ret = lmdb_chunk_decode(copy, size, &data_r, &size_r, &error);
		if (ret) {
			test_assert_idx(size >= LMDB_CHUNK_HDR_SIZE &&
				size_r == size - LMDB_CHUNK_HDR_SIZE &&
				data_r == (const char *)copy + LMDB_CHUNK_HDR_SIZE &&
				crc32_data(data_r, size_r) ==
				be32_to_cpu_unaligned((const char *)copy + 4),
				iter);
		}
		break;
	}
	case TEST_RECORD_TYPE_COUNT:
		i_unreached();
	}
	if (!ret)
		test_assert_idx(error != NULL && error[0] != '\0', iter);
	free(copy);
}

/* Key decoders get the same bytes; what they accept must encode back to
   exactly those bytes. */
static void test_fuzz_keys(const unsigned char *data, size_t size,
			   unsigned int iter)
{
	unsigned char *copy = test_dup_exact(data, size);
	unsigned char key[32];
	guid_128_t guid;
	enum lmdb_gc_kind kind;
	int64_t since;
	uint64_t id;
	uint32_t n;

	if (lmdb_body_id_decode(copy, size, &id)) {
		lmdb_body_id_encode(id, key);
		test_assert_idx(memcmp(key, data, LMDB_BODY_ID_SIZE) == 0, iter);
	}
	if (lmdb_link_key_decode(copy, size, guid, &n)) {
		lmdb_link_key_encode(guid, n, key);
		test_assert_idx(memcmp(key, data, LMDB_LINK_KEY_SIZE) == 0, iter);
	}
	if (lmdb_chunk_key_decode(copy, size, &id, &n)) {
		lmdb_chunk_key_encode(id, n, key);
		test_assert_idx(memcmp(key, data, LMDB_CHUNK_KEY_SIZE) == 0, iter);
	}
	if (lmdb_gc_key_decode(copy, size, &kind, &since, &id)) {
		test_assert_idx(since >= 0, iter);
		lmdb_gc_key_encode(kind, since, id, key);
		test_assert_idx(memcmp(key, data, LMDB_GC_KEY_SIZE) == 0, iter);
	}
	free(copy);
}

static void test_fuzz_mutate(buffer_t *buf)
{
	unsigned int i, count = 1 + test_rand_n(8);
	unsigned char *data;
	size_t pos;

	for (i = 0; i < count; i++) {
		data = buffer_get_modifiable_data(buf, NULL);
		pos = buf->used == 0 ? 0 : test_rand_n(buf->used);
		switch (test_rand_n(8)) {
		case 0:
			/* flip one bit */
			if (buf->used > 0)
				data[pos] ^= 1 << test_rand_n(8);
			break;
		case 1:
			/* random byte */
			if (buf->used > 0)
				data[pos] = test_rand64() & 0xff;
			break;
		case 2:
			/* interesting byte values: zero, lengths at the
			   limits, all ones */
			if (buf->used > 0) {
				static const unsigned char v[] = {
					0, 1, 2, 3, 4, 0x7f, 0x80, 0xfe, 0xff
				};
				data[pos] = v[test_rand_n(N_ELEMENTS(v))];
			}
			break;
		case 3:
			/* truncate */
			buffer_set_used_size(buf, test_rand_n(buf->used + 1));
			break;
		case 4:
			/* append random bytes */
			for (unsigned int j = test_rand_n(16); j > 0; j--)
				buffer_append_c(buf, test_rand64() & 0xff);
			break;
		case 5:
			/* insert a byte: shifts every later field */
			buffer_insert(buf, pos, "\x01", 1);
			break;
		case 6:
			/* delete bytes */
			if (buf->used > 0) {
				buffer_delete(buf, pos,
					      1 + test_rand_n(buf->used - pos));
			}
			break;
		case 7:
			/* a 16-bit length field with an extreme value */
			if (buf->used >= 2) {
				uint16_t v = test_rand_n(2) == 0 ? 0xffff :
					test_rand_n(300);
				pos = test_rand_n(buf->used - 1);
				data[pos] = v >> 8;
				data[pos + 1] = v & 0xff;
			}
			break;
		}
	}
}

static void test_records_fuzz(void)
{
	enum test_record_type type;
	unsigned int iter, accepted = 0, rejected = 0;

	test_begin("records fuzz");
	test_rand_seed(0x1db5eed);
	for (iter = 0; iter < TEST_FUZZ_ITERATIONS; iter++) T_BEGIN {
		buffer_t *buf;
		size_t size;

		type = test_rand_n(TEST_RECORD_TYPE_COUNT);
		if (test_rand_n(4) == 0) {
			/* random bytes, usually with a valid version so the
			   decoders get past the first byte */
			buf = t_buffer_create(256);
			size = test_rand_n(test_rand_n(2) == 0 ? 24 : 400);
			while (buf->used < size)
				buffer_append_c(buf, test_rand64() & 0xff);
			if (size > 0 && test_rand_n(4) != 0) {
				buffer_write(buf, 0, "\x01", 1);
			}
		} else {
			buf = test_encode_sample(test_rand_n(TEST_RECORD_TYPE_COUNT),
						 test_rand_n(2));
			if (test_rand_n(3) == 0) {
				/* the sample of the type under test */
				buf = test_encode_sample(type, test_rand_n(2));
			}
			test_fuzz_mutate(buf);
		}
		for (enum test_record_type t = 0; t < TEST_RECORD_TYPE_COUNT; t++)
			test_fuzz_one(t, buf->data, buf->used, iter);
		test_fuzz_keys(buf->data, buf->used, iter);

		/* keep count so a change that makes every input fail early
		   (and so fuzzes nothing) is noticed */
		bool ok;
		const char *error;
		ok = test_decode_exact(test_decoders[type], buf->data,
				       buf->used, &error);
		if (ok)
			accepted++;
		else
			rejected++;
	} T_END;
	test_assert(accepted > TEST_FUZZ_ITERATIONS / 50);
	test_assert(rejected > TEST_FUZZ_ITERATIONS / 2);
	test_end();
}

int main(void)
{
	static void (*const tests[])(void) = {
		test_env_record_roundtrip,
		test_body_record_roundtrip,
		test_link_record_roundtrip,
		test_mailbox_record_roundtrip,
		test_body_id_keys,
		test_link_keys,
		test_chunk_keys,
		test_gc_keys,
		test_records_truncated,
		test_records_unknown_version,
		test_body_record_layout,
		test_body_record_invalid_fields,
		test_link_record_invalid_fields,
		test_mailbox_record_invalid_fields,
		test_chunk_values,
		test_uidl_is_valid,
		test_crc32_matches_dovecot,
		test_records_fuzz,
		test_body_record_layout_bugs,
		NULL
	};
	return test_run(tests);
}
