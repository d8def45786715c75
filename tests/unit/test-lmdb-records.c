/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "str.h"
#include "crc32.h"
#include "test-common.h"
#include "lmdb-crc32.h"
#include "lmdb-records.h"
#include "lmdb-codec.h"
#include "lmdb-values.h"
#include "test-rand.h"
#include "test-lmdb-v1.h"

#include <stdlib.h>

/* The record codecs of schema 2 (docs/schema.md): every value is
   version 2, a CRC-32 over (type byte, key, the value after the CRC),
   then the schema-1 fields. The test computes the seal itself, with
   Dovecot's crc32, and writes schema-1 bytes with test-lmdb-v1.h, so a
   record with a bad field can be sealed and the field check, not the
   CRC, shown to reject it. */

enum test_record_type {
	TEST_RECORD_ENV,
	TEST_RECORD_BODY,
	TEST_RECORD_LINK,
	TEST_RECORD_MAILBOX,
	TEST_RECORD_GC,
	TEST_RECORD_CHUNK,

	TEST_RECORD_TYPE_COUNT
};

/* the type byte each DBI's seal starts with: part of the format, so
   written out here rather than taken from lmdb-records.h */
static const uint8_t test_type_byte[TEST_RECORD_TYPE_COUNT] = {
	1, 2, 3, 4, 5, 6
};
static const char *const test_type_name[TEST_RECORD_TYPE_COUNT] = {
	"env", "body", "link", "mailbox", "gc", "chunk"
};

struct test_key {
	unsigned char data[32];
	size_t size;
};

static const unsigned char test_mailbox_guid[GUID_128_SIZE] = {
	0x5c, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
	0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f
};
#define TEST_BODY_ID 0x0102030405060708ULL

/* Record sizes as documented in docs/schema.md, plus the 5-byte header
   of version 2: catches layout changes that were not meant to happen. */
#define TEST_ENV_RECORD_SIZE (LMDB_RECORD_HDR_SIZE + 4 + 8 * 8)
/* state, reserved, refcount, 6 * u64, chunk_count, chunk_size, sha256,
   orig_mailbox_guid (the guid's str16 follows) */
#define TEST_BODY_RECORD_FIXED_SIZE (LMDB_RECORD_HDR_SIZE + \
	1 + 2 + 4 + 6 * 8 + 4 + 4 + LMDB_SHA256_SIZE + GUID_128_SIZE)
/* state, hierarchy_sep, reserved, 2 * u32, 2 * u64 */
#define TEST_MAILBOX_RECORD_FIXED_SIZE (LMDB_RECORD_HDR_SIZE + \
	1 + 1 + 1 + 2 * 4 + 2 * 8)
/* flags, reserved, body_id, save_date, pop3_order, modseq: the UIDL's
   length is next */
#define TEST_LINK_UIDL_LEN_POS (LMDB_RECORD_HDR_SIZE + 1 + 2 + 8 + 8 + 4 + 8)

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

/* Keys and seals */

/* variant 0 is the key the samples are sealed with, 1 another key of
   the same DBI (the env record has only one) */
static void test_key_init(enum test_record_type type, unsigned int variant,
			  struct test_key *key_r)
{
	guid_128_t guid;

	i_zero(key_r);
	switch (type) {
	case TEST_RECORD_ENV:
		memcpy(key_r->data, LMDB_ENV_RECORD_KEY,
		       LMDB_ENV_RECORD_KEY_SIZE);
		key_r->size = LMDB_ENV_RECORD_KEY_SIZE;
		break;
	case TEST_RECORD_BODY:
		lmdb_body_id_encode(TEST_BODY_ID + variant, key_r->data);
		key_r->size = LMDB_BODY_ID_SIZE;
		break;
	case TEST_RECORD_LINK:
		lmdb_link_key_encode(test_mailbox_guid, 4711 + variant,
				     key_r->data);
		key_r->size = LMDB_LINK_KEY_SIZE;
		break;
	case TEST_RECORD_MAILBOX:
		memcpy(guid, test_mailbox_guid, sizeof(guid));
		guid[GUID_128_SIZE - 1] += variant;
		memcpy(key_r->data, guid, GUID_128_SIZE);
		key_r->size = GUID_128_SIZE;
		break;
	case TEST_RECORD_GC:
		lmdb_gc_key_encode(LMDB_GC_KIND_PENDING, 1700000000,
				   TEST_BODY_ID + variant, key_r->data);
		key_r->size = LMDB_GC_KEY_SIZE;
		break;
	case TEST_RECORD_CHUNK:
		lmdb_chunk_key_encode(TEST_BODY_ID, 3 + variant, key_r->data);
		key_r->size = LMDB_CHUNK_KEY_SIZE;
		break;
	case TEST_RECORD_TYPE_COUNT:
		i_unreached();
	}
}

static size_t test_hdr_size(enum test_record_type type)
{
	return type == TEST_RECORD_CHUNK ? LMDB_CHUNK_HDR_SIZE :
		LMDB_RECORD_HDR_SIZE;
}

/* CRC-32 over the type byte, the key and the bytes after the header */
static uint32_t test_seal_crc(enum test_record_type type,
			      const struct test_key *key,
			      const void *rest, size_t size)
{
	uint32_t crc = crc32_data(&test_type_byte[type], 1);

	crc = crc32_data_more(crc, key->data, key->size);
	return crc32_data_more(crc, rest, size);
}

static uint32_t test_stored_crc(enum test_record_type type,
				const buffer_t *buf)
{
	const unsigned char *p = buf->data;

	return be32_to_cpu_unaligned(p + (type == TEST_RECORD_CHUNK ? 4 : 1));
}

/* Store the right checksum for what buf now holds. */
static void test_reseal(enum test_record_type type, const struct test_key *key,
			buffer_t *buf)
{
	size_t hdr = test_hdr_size(type);
	unsigned char *p;

	if (buf->used < hdr)
		return;
	p = buffer_get_modifiable_data(buf, NULL);
	cpu32_to_be_unaligned(test_seal_crc(type, key, p + hdr,
					    buf->used - hdr),
			      p + (type == TEST_RECORD_CHUNK ? 4 : 1));
}

/* The version-2 record of schema-1 bytes: the same fields after a
   version byte 2 and the seal. */
static buffer_t *test_seal_v1(enum test_record_type type,
			      const struct test_key *key, const buffer_t *v1)
{
	buffer_t *buf = t_buffer_create(v1->used + 4);

	i_assert(type != TEST_RECORD_CHUNK && v1->used >= 1);
	buffer_append_c(buf, 2);
	buffer_append_zero(buf, 4);
	buffer_append(buf, CONST_PTR_OFFSET(v1->data, 1), v1->used - 1);
	test_reseal(type, key, buf);
	return buf;
}

/* Decoding */

/* Decode an exact copy with the decoder of type under key; a rejection
   must always come with a reason. Strings go to the data stack. */
static bool test_decode(enum test_record_type type, const struct test_key *key,
			const void *data, size_t size, const char **error_r)
{
	void *copy = test_dup_exact(data, size);
	pool_t pool = pool_datastack_create();
	struct lmdb_env_record env;
	struct lmdb_body_record body;
	struct lmdb_link_record link;
	struct lmdb_mailbox_record mailbox;
	const void *chunk_data;
	size_t chunk_size;
	guid_128_t guid;
	uint64_t id;
	uint32_t n;
	bool ret = FALSE;

	*error_r = NULL;
	switch (type) {
	case TEST_RECORD_ENV:
		/* its decoder knows its only key */
		i_assert(key->size == LMDB_ENV_RECORD_KEY_SIZE &&
			 memcmp(key->data, LMDB_ENV_RECORD_KEY,
				key->size) == 0);
		ret = lmdb_env_record_decode(copy, size, &env, error_r);
		break;
	case TEST_RECORD_BODY:
		if (!lmdb_body_id_decode(key->data, key->size, &id))
			i_unreached();
		ret = lmdb_body_record_decode(id, copy, size, pool, &body,
					      error_r);
		break;
	case TEST_RECORD_LINK:
		if (!lmdb_link_key_decode(key->data, key->size, guid, &n))
			i_unreached();
		ret = lmdb_link_record_decode(guid, n, copy, size, pool, &link,
					      error_r);
		break;
	case TEST_RECORD_MAILBOX:
		i_assert(key->size == GUID_128_SIZE);
		ret = lmdb_mailbox_record_decode(key->data, copy, size, pool,
						 &mailbox, error_r);
		break;
	case TEST_RECORD_GC:
		i_assert(key->size == LMDB_GC_KEY_SIZE);
		ret = lmdb_gc_value_check(key->data, copy, size, error_r);
		break;
	case TEST_RECORD_CHUNK:
		if (!lmdb_chunk_key_decode(key->data, key->size, &id, &n))
			i_unreached();
		ret = lmdb_chunk_decode(id, n, copy, size, &chunk_data,
					&chunk_size, error_r);
		break;
	case TEST_RECORD_TYPE_COUNT:
		i_unreached();
	}
	free(copy);
	if (!ret)
		test_assert(*error_r != NULL && (*error_r)[0] != '\0');
	return ret;
}

static bool test_decode_buf(enum test_record_type type,
			    const struct test_key *key, const buffer_t *buf,
			    const char **error_r)
{
	return test_decode(type, key, buf->data, buf->used, error_r);
}

/* The schema-1 decoders (env, body, link, mailbox) */
static bool test_decode_v1(enum test_record_type type, const void *data,
			   size_t size, const char **error_r)
{
	void *copy = test_dup_exact(data, size);
	pool_t pool = pool_datastack_create();
	struct lmdb_env_record env;
	struct lmdb_body_record body;
	struct lmdb_link_record link;
	struct lmdb_mailbox_record mailbox;
	bool ret;

	*error_r = NULL;
	switch (type) {
	case TEST_RECORD_ENV:
		ret = lmdb_env_record_decode_v1(copy, size, &env, error_r);
		break;
	case TEST_RECORD_BODY:
		ret = lmdb_body_record_decode_v1(copy, size, pool, &body,
						 error_r);
		break;
	case TEST_RECORD_LINK:
		ret = lmdb_link_record_decode_v1(copy, size, pool, &link,
						 error_r);
		break;
	case TEST_RECORD_MAILBOX:
		ret = lmdb_mailbox_record_decode_v1(copy, size, pool, &mailbox,
						    error_r);
		break;
	default:
		i_unreached();
	}
	free(copy);
	if (!ret)
		test_assert(*error_r != NULL && (*error_r)[0] != '\0');
	return ret;
}

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
	rec->body_id = TEST_BODY_ID;
	rec->save_date = 1700000000;
	rec->flags = LMDB_LINK_FLAGS_MASK;
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

/* What every freshly encoded record must be: version 2, sealed with the
   test's own CRC, accepted. Appended bytes (a later revision's fields)
   are covered by the seal: rejected as they are, accepted once
   sealed. */
static void test_check_sealed(enum test_record_type type,
			      const struct test_key *key, buffer_t *buf,
			      unsigned int idx)
{
	size_t hdr = test_hdr_size(type), used = buf->used;
	const char *error;

	test_assert_idx(buf->used >= hdr, idx);
	test_assert_idx(((const unsigned char *)buf->data)[0] == 2, idx);
	test_assert_idx(test_stored_crc(type, buf) ==
			test_seal_crc(type, key, CONST_PTR_OFFSET(buf->data, hdr),
				      buf->used - hdr), idx);
	test_assert_idx(test_decode_buf(type, key, buf, &error), idx);
	if (type == TEST_RECORD_CHUNK)
		return;
	buffer_append(buf, "\x01\x02\x03", 3);
	test_assert_idx(!test_decode_buf(type, key, buf, &error), idx);
	test_assert_idx(test_str_contains(error, "checksum mismatch"), idx);
	test_reseal(type, key, buf);
	test_assert_idx(test_decode_buf(type, key, buf, &error), idx);
	buffer_set_used_size(buf, used);
	test_reseal(type, key, buf);
}

static void test_env_record_roundtrip(void)
{
	struct lmdb_env_record recs[3], dec;
	struct test_key key;
	const char *error;
	unsigned int i;

	test_begin("env record round trip");
	test_key_init(TEST_RECORD_ENV, 0, &key);
	test_env_record_init(&recs[0]);
	/* the smallest: 0 is never a body id */
	i_zero(&recs[1]);
	recs[1].next_body_id = 1;
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

		test_assert_idx(lmdb_env_record_encode(buf, &recs[i], &error), i);
		test_assert_idx(buf->used == TEST_ENV_RECORD_SIZE, i);
		test_check_sealed(TEST_RECORD_ENV, &key, buf, i);
		test_assert_idx(lmdb_env_record_decode(buf->data, buf->used,
						       &dec, &error), i);
		test_assert_idx(test_env_record_equals(&recs[i], &dec), i);
	} T_END;
	test_end();
}

static void test_body_record_roundtrip(void)
{
	struct lmdb_body_record recs[6], dec;
	struct test_key key;
	const char *error;
	char *long_guid;
	unsigned int i;

	test_begin("body record round trip");
	test_key_init(TEST_RECORD_BODY, 0, &key);
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

	/* extremes: negative dates, maximum refcount, 255-byte GUID with
	   every byte value a GUID may hold */
	test_body_record_init(&recs[3]);
	recs[3].state = LMDB_BODY_STATE_DEAD;
	recs[3].refcount = UINT32_MAX;
	recs[3].received_date = INT64_MIN;
	recs[3].save_date = -1;
	recs[3].state_since = INT64_MAX;
	long_guid = i_malloc(LMDB_GUID_MAX_LEN + 1);
	for (i = 0; i < LMDB_GUID_MAX_LEN; i++)
		long_guid[i] = 0x20 + i % (256 - 0x20 - 1);
	long_guid[0x7f - 0x20] = 'g';
	recs[3].guid = long_guid;
	recs[3].message_size = UINT64_MAX;
	recs[3].virtual_size = UINT64_MAX;
	memset(recs[3].sha256, 0xff, sizeof(recs[3].sha256));
	memset(recs[3].orig_mailbox_guid, 0, sizeof(recs[3].orig_mailbox_guid));

	/* the largest body a 32-bit chunk count of the largest chunks
	   describes exactly */
	i_zero(&recs[4]);
	recs[4].state = LMDB_BODY_STATE_LINKED;
	recs[4].chunk_size = LMDB_CHUNK_SIZE_MAX;
	recs[4].chunk_count = UINT32_MAX;
	recs[4].physical_size = (uint64_t)UINT32_MAX * LMDB_CHUNK_SIZE_MAX;
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

		test_assert_idx(lmdb_body_record_encode(buf, TEST_BODY_ID,
							&recs[i], &error), i);
		test_assert_idx(buf->used == TEST_BODY_RECORD_FIXED_SIZE + 2 +
				guid_len, i);
		test_check_sealed(TEST_RECORD_BODY, &key, buf, i);
		test_assert_idx(lmdb_body_record_decode(TEST_BODY_ID,
				buf->data, buf->used, pool_datastack_create(),
				&dec, &error), i);
		test_assert_idx(test_body_record_equals(&recs[i], &dec), i);
		test_assert_idx(dec.guid != NULL, i);
	} T_END;
	i_free(long_guid);
	test_end();
}

static void test_link_record_roundtrip(void)
{
	struct lmdb_link_record recs[4], dec;
	struct test_key key;
	const char **many;
	const char *error;
	unsigned int i;

	test_begin("link record round trip");
	test_key_init(TEST_RECORD_LINK, 0, &key);
	T_BEGIN {
		test_link_record_init(&recs[0]);

		/* nothing set but the body */
		i_zero(&recs[1]);
		recs[1].body_id = 1;
		recs[1].pop3_uidl = NULL;

		/* extremes: 255-byte UIDL, the maximum number of keywords
		   with every keyword length 1..255 */
		i_zero(&recs[2]);
		recs[2].body_id = UINT64_MAX;
		recs[2].save_date = INT64_MIN;
		recs[2].flags = LMDB_LINK_FLAGS_MASK;
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
		recs[3].flags = 0;
		recs[3].pop3_uidl = "";
		recs[3].keywords_count = 1;
		recs[3].keywords = test_keywords + 2;

		for (i = 0; i < N_ELEMENTS(recs); i++) {
			buffer_t *buf = t_buffer_create(64);

			test_assert_idx(lmdb_link_record_encode(buf,
				test_mailbox_guid, 4711, &recs[i], &error), i);
			test_check_sealed(TEST_RECORD_LINK, &key, buf, i);
			test_assert_idx(lmdb_link_record_decode(
				test_mailbox_guid, 4711, buf->data, buf->used,
				pool_datastack_create(), &dec, &error), i);
			test_assert_idx(test_link_record_equals(&recs[i], &dec), i);
			/* the keyword array is NULL-terminated */
			test_assert_idx(dec.keywords != NULL &&
					dec.keywords[dec.keywords_count] == NULL, i);
		}
	} T_END;
	test_end();
}

static void test_mailbox_record_roundtrip(void)
{
	struct lmdb_mailbox_record recs[4], dec;
	struct test_key key;
	const char *error;
	unsigned int i;

	test_begin("mailbox record round trip");
	test_key_init(TEST_RECORD_MAILBOX, 0, &key);
	T_BEGIN {
		test_mailbox_record_init(&recs[0]);

		i_zero(&recs[1]);
		recs[1].name = "x";

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

			test_assert_idx(lmdb_mailbox_record_encode(buf,
				test_mailbox_guid, &recs[i], &error), i);
			test_assert_idx(buf->used == TEST_MAILBOX_RECORD_FIXED_SIZE +
					2 + strlen(recs[i].name), i);
			test_check_sealed(TEST_RECORD_MAILBOX, &key, buf, i);
			test_assert_idx(lmdb_mailbox_record_decode(
				test_mailbox_guid, buf->data, buf->used,
				pool_datastack_create(), &dec, &error), i);
			test_assert_idx(test_mailbox_record_equals(&recs[i], &dec), i);
		}
	} T_END;
	test_end();
}

static void test_gc_values(void)
{
	struct test_key key, other;
	const char *error;

	test_begin("gc values");
	test_key_init(TEST_RECORD_GC, 0, &key);
	test_key_init(TEST_RECORD_GC, 1, &other);
	T_BEGIN {
		buffer_t *buf = t_buffer_create(16);

		buffer_append(buf, "prefix", 6);
		lmdb_gc_value_encode(buf, key.data);
		/* appended after what the buffer held */
		test_assert(buf->used == 6 + LMDB_RECORD_HDR_SIZE &&
			    memcmp(buf->data, "prefix", 6) == 0);
		buffer_delete(buf, 0, 6);
		test_check_sealed(TEST_RECORD_GC, &key, buf, 0);
		test_assert(!test_decode_buf(TEST_RECORD_GC, &other, buf, &error));
		test_assert(test_str_contains(error, "checksum mismatch"));
		/* schema 1's empty value */
		test_assert(!test_decode(TEST_RECORD_GC, &key, "", 0, &error));
		test_assert(test_str_contains(error, "too short"));
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

/* A valid record of each type sealed under key, using every field,
   strings and keywords included, so truncations hit every field
   boundary. */
static buffer_t *test_encode_sample(enum test_record_type type,
				    unsigned int variant,
				    const struct test_key *key)
{
	buffer_t *buf = t_buffer_create(256);
	struct lmdb_env_record env_rec;
	struct lmdb_body_record body_rec;
	struct lmdb_link_record link_rec;
	struct lmdb_mailbox_record mailbox_rec;
	unsigned char hdr[LMDB_CHUNK_HDR_SIZE];
	const char *data, *error = NULL;
	guid_128_t guid;
	uint64_t id;
	uint32_t n;
	bool ok = TRUE;

	switch (type) {
	case TEST_RECORD_ENV:
		test_env_record_init(&env_rec);
		if (variant % 2 == 1)
			env_rec.body_bytes = UINT64_MAX;
		ok = lmdb_env_record_encode(buf, &env_rec, &error);
		break;
	case TEST_RECORD_BODY:
		test_body_record_init(&body_rec);
		if (variant % 2 == 1) {
			body_rec.guid = "";
			body_rec.state = LMDB_BODY_STATE_PENDING;
		}
		if (!lmdb_body_id_decode(key->data, key->size, &id))
			i_unreached();
		ok = lmdb_body_record_encode(buf, id, &body_rec, &error);
		break;
	case TEST_RECORD_LINK:
		test_link_record_init(&link_rec);
		if (variant % 2 == 1) {
			link_rec.keywords_count = 0;
			link_rec.pop3_uidl = "";
		}
		if (!lmdb_link_key_decode(key->data, key->size, guid, &n))
			i_unreached();
		ok = lmdb_link_record_encode(buf, guid, n, &link_rec, &error);
		break;
	case TEST_RECORD_MAILBOX:
		test_mailbox_record_init(&mailbox_rec);
		if (variant % 2 == 1)
			mailbox_rec.name = "a";
		ok = lmdb_mailbox_record_encode(buf, key->data, &mailbox_rec,
						&error);
		break;
	case TEST_RECORD_GC:
		lmdb_gc_value_encode(buf, key->data);
		break;
	case TEST_RECORD_CHUNK:
		data = variant % 2 == 1 ? "" :
			"Subject: hello\r\n\r\nchunk data\r\n";
		if (!lmdb_chunk_key_decode(key->data, key->size, &id, &n))
			i_unreached();
		lmdb_chunk_header_encode(hdr, id, n, data, strlen(data));
		buffer_append(buf, hdr, sizeof(hdr));
		buffer_append(buf, data, strlen(data));
		break;
	case TEST_RECORD_TYPE_COUNT:
		i_unreached();
	}
	if (!ok)
		i_fatal("encoding the %s sample failed: %s",
			test_type_name[type], error);
	return buf;
}

static void test_records_truncated(void)
{
	enum test_record_type type;
	struct test_key key;
	const char *error;
	unsigned int variant, idx;
	size_t len;

	test_begin("truncated records are rejected");
	for (type = 0; type < TEST_RECORD_TYPE_COUNT; type++) {
		test_key_init(type, 0, &key);
		for (variant = 0; variant < 2; variant++) T_BEGIN {
			buffer_t *buf = test_encode_sample(type, variant, &key);
			buffer_t *cut = t_buffer_create(buf->used);
			size_t hdr = test_hdr_size(type);

			test_assert_idx(test_decode_buf(type, &key, buf, &error),
					type);
			for (len = 0; len < buf->used; len++) {
				idx = type * 1000 + len;
				buffer_set_used_size(cut, 0);
				buffer_append(cut, buf->data, len);
				test_assert_idx(!test_decode_buf(type, &key, cut,
								 &error), idx);
				if (len < hdr) {
					test_assert_idx(test_str_contains(error,
						type == TEST_RECORD_CHUNK ?
						"shorter than its header" :
						"too short"), idx);
					continue;
				}
				/* the seal notices first */
				test_assert_idx(test_str_contains(error,
					"checksum mismatch"), idx);
				if (type == TEST_RECORD_CHUNK) {
					/* any data length is a valid chunk:
					   the body record says how long */
					continue;
				}
				/* sealed again, the field reader does */
				test_reseal(type, &key, cut);
				test_assert_idx(!test_decode_buf(type, &key, cut,
								 &error), idx);
				test_assert_idx(test_str_contains(error,
					"truncated"), idx);
			}
		} T_END;
	}
	test_end();
}

static void test_records_unknown_version(void)
{
	enum test_record_type type;
	struct test_key key;
	const char *error;
	unsigned int version, idx;

	test_begin("unknown record versions are rejected");
	for (type = 0; type < TEST_RECORD_TYPE_COUNT; type++) T_BEGIN {
		buffer_t *buf;
		unsigned char *data;

		test_key_init(type, 0, &key);
		buf = test_encode_sample(type, 0, &key);
		data = buffer_get_modifiable_data(buf, NULL);
		for (version = 0; version < 256; version++) {
			idx = type * 1000 + version;
			data[0] = version;
			bool ret = test_decode_buf(type, &key, buf, &error);
			test_assert_idx(ret == (version == 2), idx);
			if (version == 2)
				continue;
			if (type == TEST_RECORD_CHUNK && version == 1) {
				/* a known version, whose CRC is of the data
				   alone */
				test_assert_idx(test_str_contains(error,
					"checksum mismatch"), idx);
				continue;
			}
			test_assert_idx(test_str_contains(error, "version"), idx);
			test_assert_idx(test_str_contains(error,
				t_strdup_printf(" %u", version)), idx);
		}
	} T_END;
	test_end();
}

/* Every single-bit error in a record, key included, is caught. */
static void test_records_bit_flips(void)
{
	enum test_record_type type;
	struct test_key key;
	const char *error;
	unsigned int variant, bit, idx;
	size_t i;

	test_begin("a flipped bit anywhere in a record or its key");
	for (type = 0; type < TEST_RECORD_TYPE_COUNT; type++) {
		test_key_init(type, 0, &key);
		for (variant = 0; variant < 2; variant++) T_BEGIN {
			buffer_t *buf = test_encode_sample(type, variant, &key);
			unsigned char *value =
				buffer_get_modifiable_data(buf, NULL);

			for (i = 0; i < buf->used; i++) {
				/* a chunk's flags and reserved bytes: see
				   test_chunk_header_bits_bug() */
				if (type == TEST_RECORD_CHUNK && i >= 1 && i < 4)
					continue;
				for (bit = 0; bit < 8; bit++) {
					idx = type * 100000 + i * 8 + bit;
					value[i] ^= 1 << bit;
					test_assert_idx(!test_decode_buf(type,
						&key, buf, &error), idx);
					test_assert_idx(test_str_contains(error,
						i == 0 ? "version" :
						"checksum mismatch"), idx);
					value[i] ^= 1 << bit;
				}
			}
			test_assert_idx(test_decode_buf(type, &key, buf, &error),
					type);
			/* the env record's decoder takes no key (it has
			   only one): its key is checked below */
			for (i = 0; i < key.size && type != TEST_RECORD_ENV; i++) {
				for (bit = 0; bit < 8; bit++) {
					idx = type * 100000 + i * 8 + bit;
					key.data[i] ^= 1 << bit;
					test_assert_idx(!test_decode_buf(type,
						&key, buf, &error), idx);
					test_assert_idx(test_str_contains(error,
						"checksum mismatch"), idx);
					key.data[i] ^= 1 << bit;
				}
			}
		} T_END;
	}
	/* the env key, one level down */
	T_BEGIN {
		buffer_t *buf;
		struct lmdb_reader r;

		test_key_init(TEST_RECORD_ENV, 0, &key);
		buf = test_encode_sample(TEST_RECORD_ENV, 0, &key);
		test_assert(lmdb_reader_open(&r, LMDB_RECORD_TYPE_ENV, key.data,
					     key.size, buf->data, buf->used));
		for (i = 0; i < key.size * 8; i++) {
			key.data[i / 8] ^= 1 << (i % 8);
			test_assert_idx(!lmdb_reader_open(&r,
				LMDB_RECORD_TYPE_ENV, key.data, key.size,
				buf->data, buf->used), i);
			key.data[i / 8] ^= 1 << (i % 8);
		}
	} T_END;
	test_end();
}

/* A key of type's size made of other's bytes (cut or zero-padded) */
static void test_key_from(enum test_record_type type,
			  const struct test_key *other, struct test_key *key_r)
{
	test_key_init(type, 0, key_r);
	if (type == TEST_RECORD_ENV)
		return;
	memset(key_r->data, 0, sizeof(key_r->data));
	memcpy(key_r->data, other->data, I_MIN(other->size, key_r->size));
	if (type == TEST_RECORD_GC)
		key_r->data[0] = LMDB_GC_KIND_PENDING;
}

/* A record is only ever valid under its own key and in its own DBI:
   one copied elsewhere (a bug, or salvage) is not served as valid. */
static void test_records_bound_to_key_and_type(void)
{
	enum test_record_type type, other;
	struct test_key key, key2;
	const char *error;
	unsigned int variant, t1, t2;

	test_begin("records are bound to their key and type");
	for (type = 0; type < TEST_RECORD_TYPE_COUNT; type++) {
		test_key_init(type, 0, &key);
		for (variant = 0; variant < 2; variant++) T_BEGIN {
			buffer_t *buf = test_encode_sample(type, variant, &key);

			/* another key of the same DBI */
			if (type != TEST_RECORD_ENV) {
				test_key_init(type, 1, &key2);
				test_assert_idx(!test_decode_buf(type, &key2, buf,
								 &error), type);
				test_assert_idx(test_str_contains(error,
					"checksum mismatch"), type);
			}
			/* every other DBI, under its sample key and under
			   one made of this key's bytes */
			for (other = 0; other < TEST_RECORD_TYPE_COUNT; other++) {
				if (other == type)
					continue;
				test_key_init(other, 0, &key2);
				test_assert_idx(!test_decode_buf(other, &key2, buf,
						&error), type * 10 + other);
				test_key_from(other, &key, &key2);
				test_assert_idx(!test_decode_buf(other, &key2, buf,
						&error), type * 10 + other);
			}
		} T_END;
	}
	/* the type byte is sealed in: the same fields under the same key
	   bytes pass only as the type they were written as */
	T_BEGIN {
		buffer_t *buf = t_buffer_create(64);
		struct lmdb_writer w;
		struct lmdb_reader r;

		test_key_init(TEST_RECORD_LINK, 0, &key);
		for (t1 = LMDB_RECORD_TYPE_ENV; t1 <= LMDB_RECORD_TYPE_CHUNK; t1++) {
			buffer_set_used_size(buf, 0);
			lmdb_writer_init(&w, buf);
			lmdb_put_u64(&w, 12345);
			test_assert_idx(lmdb_writer_finish(&w, t1, key.data,
				key.size, &error), t1);
			for (t2 = LMDB_RECORD_TYPE_ENV; t2 <= LMDB_RECORD_TYPE_CHUNK; t2++) {
				test_assert_idx(lmdb_reader_open(&r, t2,
					key.data, key.size, buf->data,
					buf->used) == (t1 == t2), t1 * 10 + t2);
			}
		}
	} T_END;
	test_end();
}

/* Schema 1 */

static void test_sample_v1(enum test_record_type type, buffer_t *v1)
{
	struct lmdb_env_record env;
	struct lmdb_body_record body;
	struct lmdb_link_record link;
	struct lmdb_mailbox_record mailbox;

	switch (type) {
	case TEST_RECORD_ENV:
		test_env_record_init(&env);
		env.schema_version = 1;
		test_v1_env(v1, &env);
		break;
	case TEST_RECORD_BODY:
		test_body_record_init(&body);
		test_v1_body(v1, &body);
		break;
	case TEST_RECORD_LINK:
		test_link_record_init(&link);
		test_v1_link(v1, &link);
		break;
	case TEST_RECORD_MAILBOX:
		test_mailbox_record_init(&mailbox);
		test_v1_mailbox(v1, &mailbox);
		break;
	default:
		i_unreached();
	}
}

/* The _v1 decoders read the documented schema-1 bytes with the same
   fields, the current decoders refuse them, and version 2 is exactly
   the schema-1 fields behind the new header. */
static void test_records_v1(void)
{
	struct lmdb_env_record env, env2;
	struct lmdb_body_record body, body2;
	struct lmdb_link_record link, link2;
	struct lmdb_mailbox_record mailbox, mailbox2;
	enum test_record_type type;
	struct test_key key;
	const char *error;
	size_t len;

	test_begin("schema-1 records");
	for (type = TEST_RECORD_ENV; type <= TEST_RECORD_MAILBOX; type++) T_BEGIN {
		buffer_t *v1 = t_buffer_create(128), *v2;

		test_key_init(type, 0, &key);
		test_sample_v1(type, v1);
		test_assert_idx(test_decode_v1(type, v1->data, v1->used, &error),
				type);
		test_assert_idx(!test_decode_buf(type, &key, v1, &error), type);
		test_assert_idx(test_str_contains(error, "version 1"), type);
		/* still refused once sealed: the version byte says 1 */
		v2 = test_seal_v1(type, &key, v1);
		buffer_write(v2, 0, "\x01", 1);
		test_assert_idx(!test_decode_buf(type, &key, v2, &error), type);
		/* the other way round */
		v2 = test_encode_sample(type, 0, &key);
		test_assert_idx(!test_decode_v1(type, v2->data, v2->used,
						&error), type);
		test_assert_idx(test_str_contains(error, "version 2"), type);
		if (type != TEST_RECORD_ENV) {
			/* the env sample differs in schema_version */
			test_assert_idx(buffer_cmp(v2, test_seal_v1(type, &key,
								    v1)), type);
		}
		/* schema-1 records are checked as closely */
		for (len = 0; len < v1->used; len++) {
			test_assert_idx(!test_decode_v1(type, v1->data, len,
							&error), type * 1000 + len);
			test_assert_idx(test_str_contains(error, len == 0 ?
				"version" : "truncated"), type * 1000 + len);
		}
	} T_END;

	/* the fields come back as they were written */
	T_BEGIN {
		buffer_t *v1 = t_buffer_create(128);
		pool_t pool = pool_datastack_create();

		test_env_record_init(&env);
		env.schema_version = 1;
		test_v1_env(v1, &env);
		test_assert(lmdb_env_record_decode_v1(v1->data, v1->used,
						      &env2, &error) &&
			    test_env_record_equals(&env, &env2));
		buffer_set_used_size(v1, 0);
		test_body_record_init(&body);
		test_v1_body(v1, &body);
		test_assert(lmdb_body_record_decode_v1(v1->data, v1->used, pool,
						       &body2, &error) &&
			    test_body_record_equals(&body, &body2));
		buffer_set_used_size(v1, 0);
		test_link_record_init(&link);
		test_v1_link(v1, &link);
		test_assert(lmdb_link_record_decode_v1(v1->data, v1->used, pool,
						       &link2, &error) &&
			    test_link_record_equals(&link, &link2));
		buffer_set_used_size(v1, 0);
		test_mailbox_record_init(&mailbox);
		test_v1_mailbox(v1, &mailbox);
		test_assert(lmdb_mailbox_record_decode_v1(v1->data, v1->used,
							  pool, &mailbox2,
							  &error) &&
			    test_mailbox_record_equals(&mailbox, &mailbox2));

		/* schema 1 stored UIDLs from outside unchecked: the upgrade
		   keeps such a link, its UIDL replaced by the digest a save
		   gives such a UIDL now, and drops keywords it can't hold */
		buffer_set_used_size(v1, 0);
		link.pop3_uidl = "two words";
		test_v1_link(v1, &link);
		test_assert(lmdb_link_record_decode_v1(v1->data, v1->used, pool,
						       &link2, &error));
		test_assert(strcmp(link2.pop3_uidl,
				   lmdb_value_digest("two words")) == 0);
		/* the same for a message GUID from outside: the body stays
		   readable, with the digest a save gives it now */
		buffer_set_used_size(v1, 0);
		body.guid = "imported\x7fguid";
		test_v1_body(v1, &body);
		test_assert(lmdb_body_record_decode_v1(v1->data, v1->used, pool,
						       &body2, &error));
		test_assert(strcmp(body2.guid,
				   lmdb_value_digest("imported\x7fguid")) == 0);
	} T_END;
	test_end();
}

/* Field checks: each record is built from schema-1 bytes and sealed, so
   what rejects it is the decoder's check of that field, whatever the
   encoders would refuse to write. */

static bool test_body_decode_sealed(const struct lmdb_body_record *rec,
				    const char **error_r)
{
	buffer_t *v1 = t_buffer_create(128);
	struct test_key key;

	test_key_init(TEST_RECORD_BODY, 0, &key);
	test_v1_body(v1, rec);
	return test_decode_buf(TEST_RECORD_BODY, &key,
			       test_seal_v1(TEST_RECORD_BODY, &key, v1), error_r);
}

static bool test_link_decode_sealed(const struct lmdb_link_record *rec,
				    const char **error_r)
{
	buffer_t *v1 = t_buffer_create(128);
	struct test_key key;

	test_key_init(TEST_RECORD_LINK, 0, &key);
	test_v1_link(v1, rec);
	return test_decode_buf(TEST_RECORD_LINK, &key,
			       test_seal_v1(TEST_RECORD_LINK, &key, v1), error_r);
}

static bool test_mailbox_decode_sealed(const struct lmdb_mailbox_record *rec,
				       const char **error_r)
{
	buffer_t *v1 = t_buffer_create(128);
	struct test_key key;

	test_key_init(TEST_RECORD_MAILBOX, 0, &key);
	test_v1_mailbox(v1, rec);
	return test_decode_buf(TEST_RECORD_MAILBOX, &key,
			       test_seal_v1(TEST_RECORD_MAILBOX, &key, v1),
			       error_r);
}

/* A body record with the given layout. */
static bool test_body_decode_sizes(uint64_t physical_size,
				   uint64_t message_size, uint64_t virtual_size,
				   uint32_t chunk_size, uint32_t chunk_count,
				   const char **error_r)
{
	struct lmdb_body_record rec;

	test_body_record_init(&rec);
	rec.physical_size = physical_size;
	rec.message_size = message_size;
	rec.virtual_size = virtual_size;
	rec.chunk_size = chunk_size;
	rec.chunk_count = chunk_count;
	return test_body_decode_sealed(&rec, error_r);
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

/* Schema-1 bytes sealed as version 2 under the sample key; a test then
   changes bytes of one field and seals again before decoding. */
static buffer_t *test_sealed_buf(enum test_record_type type, const buffer_t *v1)
{
	struct test_key key;

	test_key_init(type, 0, &key);
	return test_seal_v1(type, &key, v1);
}

static bool test_decode_resealed(enum test_record_type type, buffer_t *buf,
				 const char **error_r)
{
	struct test_key key;

	test_key_init(type, 0, &key);
	test_reseal(type, &key, buf);
	return test_decode_buf(type, &key, buf, error_r);
}

static void test_env_record_invalid_fields(void)
{
	struct lmdb_env_record rec;
	const char *error;

	test_begin("env record invalid next_body_id");
	T_BEGIN {
		buffer_t *v1 = t_buffer_create(128), *buf;

		test_env_record_init(&rec);
		rec.next_body_id = 0;
		test_v1_env(v1, &rec);
		buf = test_sealed_buf(TEST_RECORD_ENV, v1);
		test_assert(!test_decode_resealed(TEST_RECORD_ENV, buf, &error));
		test_assert(test_str_contains(error, "next_body_id"));
		/* any schema version decodes: lmdb-schema.c judges it */
		buffer_set_used_size(v1, 0);
		rec.next_body_id = 1;
		rec.schema_version = 12345;
		test_v1_env(v1, &rec);
		buf = test_sealed_buf(TEST_RECORD_ENV, v1);
		test_assert(test_decode_resealed(TEST_RECORD_ENV, buf, &error));
	} T_END;
	test_end();
}

static void test_body_record_invalid_fields(void)
{
	struct lmdb_body_record rec;
	const char *error;
	unsigned int state, c;

	test_begin("body record invalid state and guid");
	T_BEGIN {
		buffer_t *v1 = t_buffer_create(128), *buf;
		unsigned char *data;
		size_t guid_pos, i;

		test_body_record_init(&rec);
		for (state = 0; state < 256; state++) {
			bool valid = state >= LMDB_BODY_STATE_PENDING &&
				state <= LMDB_BODY_STATE_DEAD;

			rec.state = state;
			test_assert_idx(test_body_decode_sealed(&rec, &error) ==
					valid, state);
			if (!valid) {
				test_assert_idx(test_str_contains(error,
					"invalid state"), state);
			}
		}
		rec.state = LMDB_BODY_STATE_LINKED;

		/* any byte but a control character; empty is allowed (a
		   body still being written) */
		for (c = 1; c < 256; c++) {
			bool valid = c >= 0x20 && c != 0x7f;

			rec.guid = t_strdup_printf("abc%cdef", c);
			test_assert_idx(test_body_decode_sealed(&rec, &error) ==
					valid, c);
			if (!valid) {
				test_assert_idx(test_str_contains(error,
					"message GUID"), c);
			}
		}
		rec.guid = "";
		test_assert(test_body_decode_sealed(&rec, &error));
		rec.guid = test_str_repeat('g', LMDB_GUID_MAX_LEN);
		test_assert(test_body_decode_sealed(&rec, &error));
		rec.guid = test_str_repeat('g', LMDB_GUID_MAX_LEN + 1);
		test_assert(!test_body_decode_sealed(&rec, &error));
		test_assert(test_str_contains(error, "too long"));

		/* NUL anywhere in the GUID */
		test_body_record_init(&rec);
		test_v1_body(v1, &rec);
		buf = test_sealed_buf(TEST_RECORD_BODY, v1);
		data = buffer_get_modifiable_data(buf, NULL);
		guid_pos = buf->used - strlen(rec.guid);
		for (i = guid_pos; i < buf->used; i++) {
			unsigned char old = data[i];

			data[i] = '\0';
			test_assert_idx(!test_decode_resealed(TEST_RECORD_BODY,
							      buf, &error), i);
			test_assert_idx(test_str_contains(error, "contains NUL"), i);
			data[i] = old;
		}
		test_assert(test_decode_resealed(TEST_RECORD_BODY, buf, &error));
		/* the length field says more than there is */
		data[guid_pos - 2] = 0;
		data[guid_pos - 1] = 255;
		test_assert(!test_decode_resealed(TEST_RECORD_BODY, buf, &error));
		test_assert(test_str_contains(error, "truncated"));
	} T_END;
	test_end();
}

/* a link record with count keywords "k" (more than the count says are
   there, so only the count can be wrong) */
static buffer_t *test_link_with_keyword_count(unsigned int count)
{
	struct lmdb_link_record rec;
	buffer_t *v1 = t_buffer_create(128);
	unsigned int i;

	test_link_record_init(&rec);
	rec.keywords_count = 0;
	test_v1_link(v1, &rec);
	buffer_set_used_size(v1, v1->used - 2);
	test_v1_u16(v1, count);
	for (i = 0; i < LMDB_KEYWORDS_MAX + 2; i++)
		buffer_append(v1, "\x01k", 2);
	return test_sealed_buf(TEST_RECORD_LINK, v1);
}

static void test_link_record_invalid_fields(void)
{
	static const char *kw[2];
	struct lmdb_link_record rec;
	const char *error;
	unsigned int c, count;

	test_begin("link record invalid fields");
	T_BEGIN {
		buffer_t *v1 = t_buffer_create(128), *buf;
		unsigned char *data;
		size_t uidl_pos, kw_pos, i;

		/* flags beyond the system flags, body id 0 */
		test_link_record_init(&rec);
		for (c = 0; c < 256; c++) {
			bool valid = (c & ~LMDB_LINK_FLAGS_MASK) == 0;

			rec.flags = c;
			test_assert_idx(test_link_decode_sealed(&rec, &error) ==
					valid, c);
			if (!valid)
				test_assert_idx(test_str_contains(error, "flags"), c);
		}
		test_link_record_init(&rec);
		rec.body_id = 0;
		test_assert(!test_link_decode_sealed(&rec, &error));
		test_assert(test_str_contains(error, "body_id"));

		/* a UIDL reaches POP3 replies: printable ASCII only */
		test_link_record_init(&rec);
		for (c = 1; c < 256; c++) {
			bool valid = c >= 0x21 && c <= 0x7e;

			rec.pop3_uidl = t_strdup_printf("ab%c", c);
			test_assert_idx(test_link_decode_sealed(&rec, &error) ==
					valid, c);
			if (!valid) {
				test_assert_idx(test_str_contains(error,
					"pop3_uidl"), c);
			}
		}
		rec.pop3_uidl = test_str_repeat('u', LMDB_UIDL_MAX_LEN + 1);
		test_assert(!test_link_decode_sealed(&rec, &error));
		test_assert(test_str_contains(error, "too long"));

		/* keywords: IMAP atoms, not system flags */
		test_link_record_init(&rec);
		rec.keywords = kw;
		rec.keywords_count = 1;
		for (c = 1; c < 256; c++) {
			bool valid = c > 0x20 && c < 0x7f &&
				strchr("(){%*\"\\]", c) == NULL;

			kw[0] = t_strdup_printf("k%c", c);
			test_assert_idx(test_link_decode_sealed(&rec, &error) ==
					valid, c);
			if (!valid) {
				test_assert_idx(test_str_contains(error,
					"keyword"), c);
			}
		}
		kw[0] = "\\Seen";
		test_assert(!test_link_decode_sealed(&rec, &error));
		kw[0] = test_str_repeat('k', LMDB_KEYWORD_MAX_LEN);
		test_assert(test_link_decode_sealed(&rec, &error));

		/* NUL in the UIDL or a keyword, an empty keyword */
		test_link_record_init(&rec);
		test_v1_link(v1, &rec);
		buf = test_sealed_buf(TEST_RECORD_LINK, v1);
		data = buffer_get_modifiable_data(buf, NULL);
		uidl_pos = TEST_LINK_UIDL_LEN_POS + 2;
		test_assert(memcmp(data + uidl_pos, rec.pop3_uidl,
				   strlen(rec.pop3_uidl)) == 0);
		for (i = uidl_pos; i < uidl_pos + strlen(rec.pop3_uidl); i++) {
			unsigned char old = data[i];

			data[i] = '\0';
			test_assert_idx(!test_decode_resealed(TEST_RECORD_LINK,
							      buf, &error), i);
			test_assert_idx(test_str_contains(error, "contains NUL"), i);
			data[i] = old;
		}
		kw_pos = uidl_pos + strlen(rec.pop3_uidl) + 2;
		test_assert(data[kw_pos] == strlen(rec.keywords[0]));
		data[kw_pos + 3] = '\0';
		test_assert(!test_decode_resealed(TEST_RECORD_LINK, buf, &error));
		test_assert(test_str_contains(error, "contains NUL"));
		data[kw_pos + 3] = rec.keywords[0][2];
		data[kw_pos] = 0;
		test_assert(!test_decode_resealed(TEST_RECORD_LINK, buf, &error));
		test_assert(test_str_contains(error, "empty keyword"));
		data[kw_pos] = strlen(rec.keywords[0]);
		test_assert(test_decode_resealed(TEST_RECORD_LINK, buf, &error));

		/* keyword counts around the limit */
		for (count = LMDB_KEYWORDS_MAX - 1; count <= 65535;
		     count = count < LMDB_KEYWORDS_MAX + 2 ? count + 1 :
			     (count == 65535 ? 65536 : 65535)) {
			buf = test_link_with_keyword_count(count);
			bool ret = test_decode_resealed(TEST_RECORD_LINK, buf,
							&error);
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
	static const char *const bad_names[] = {
		"", "\xff", "a\xc3", "\xc3(", "\x80", "\xc0\x80", "a\x01", "\x7f",
		"a\nb", "tab\there"
	};
	static const char *const good_names[] = {
		"a", " ", "\xc3\xa4", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "~"
	};
	struct lmdb_mailbox_record rec;
	const char *error;
	unsigned int state, i;

	test_begin("mailbox record invalid state and name");
	T_BEGIN {
		buffer_t *v1 = t_buffer_create(128), *buf;
		unsigned char *data;
		size_t name_pos;

		test_mailbox_record_init(&rec);
		for (state = 0; state < 256; state++) {
			bool valid = state <= LMDB_MAILBOX_STATE_DELETED;

			rec.state = state;
			test_assert_idx(test_mailbox_decode_sealed(&rec, &error) ==
					valid, state);
			if (!valid) {
				test_assert_idx(test_str_contains(error,
					"invalid state"), state);
			}
		}
		rec.state = LMDB_MAILBOX_STATE_ACTIVE;
		for (i = 0; i < N_ELEMENTS(bad_names); i++) {
			rec.name = bad_names[i];
			test_assert_idx(!test_mailbox_decode_sealed(&rec, &error), i);
			test_assert_idx(test_str_contains(error, "mailbox name"), i);
		}
		for (i = 0; i < N_ELEMENTS(good_names); i++) {
			rec.name = good_names[i];
			test_assert_idx(test_mailbox_decode_sealed(&rec, &error), i);
		}
		rec.name = test_str_repeat('n', LMDB_NAME_MAX_LEN + 1);
		test_assert(!test_mailbox_decode_sealed(&rec, &error));
		test_assert(test_str_contains(error, "too long"));

		test_mailbox_record_init(&rec);
		test_v1_mailbox(v1, &rec);
		buf = test_sealed_buf(TEST_RECORD_MAILBOX, v1);
		data = buffer_get_modifiable_data(buf, NULL);
		name_pos = buf->used - strlen(rec.name);
		for (i = name_pos; i < buf->used; i++) {
			unsigned char old = data[i];

			data[i] = '\0';
			test_assert_idx(!test_decode_resealed(TEST_RECORD_MAILBOX,
							      buf, &error), i);
			test_assert_idx(test_str_contains(error, "contains NUL"), i);
			data[i] = old;
		}
		test_assert(test_decode_resealed(TEST_RECORD_MAILBOX, buf, &error));
	} T_END;
	test_end();
}

/* Encoders refuse what they can't store */

#define TEST_PREFIX "prefix"

/* The buffer is as it was, and the error names the field. */
static void test_refused(bool ret, const buffer_t *buf, const char *error,
			 const char *what, unsigned int idx)
{
	test_assert_idx(!ret, idx);
	test_assert_idx(buf->used == strlen(TEST_PREFIX) &&
			memcmp(buf->data, TEST_PREFIX, buf->used) == 0, idx);
	test_assert_idx(test_str_contains(error, what), idx);
}

static void test_link_refused(const struct lmdb_link_record *rec,
			      const char *what, unsigned int idx)
{
	buffer_t *buf = t_buffer_create(64);
	const char *error = NULL;
	bool ret;

	buffer_append(buf, TEST_PREFIX, strlen(TEST_PREFIX));
	ret = lmdb_link_record_encode(buf, test_mailbox_guid, 1, rec, &error);
	test_refused(ret, buf, error, what, idx);
}

static void test_encoders_refuse(void)
{
	static const char *const bad_uidls[] = {
		"abc\ndef", "abc\r\n", "a b", "\xc3\xa4", "tab\t"
	};
	static const char *const bad_keywords[] = {
		"a b", "a(b", "a)", "a\\b", "\\Seen", "\xc3\xa4", "a]", "%",
		"*", "{5}", "\"q\"", "", "new\nline"
	};
	static const char *const bad_guids[] = {
		"abc\x01", "\x7f", "a\nb", "\x1f"
	};
	static const char *const bad_names[] = {
		"\xff", "a\xc3", "\xc0\x80", "a\x01", "", "line\n"
	};
	struct lmdb_link_record link;
	struct lmdb_body_record body;
	struct lmdb_mailbox_record mailbox;
	const char *kws[2], *error;
	const char **many;
	unsigned int i;
	bool ret;

	test_begin("encoders refuse what they can't store");
	T_BEGIN {
		buffer_t *buf = t_buffer_create(64);

		test_link_record_init(&link);
		link.pop3_uidl = test_str_repeat('u', LMDB_UIDL_MAX_LEN + 1);
		test_link_refused(&link, "too long", 0);
		test_link_refused(&link, "UIDL", 0);
		for (i = 0; i < N_ELEMENTS(bad_uidls); i++) {
			link.pop3_uidl = bad_uidls[i];
			test_link_refused(&link, "UIDL", i);
		}

		test_link_record_init(&link);
		link.keywords = kws;
		link.keywords_count = 1;
		for (i = 0; i < N_ELEMENTS(bad_keywords); i++) {
			kws[0] = bad_keywords[i];
			test_link_refused(&link, "keyword", i);
		}
		kws[0] = test_str_repeat('k', LMDB_KEYWORD_MAX_LEN + 1);
		test_link_refused(&link, "keyword", 0);

		/* one bad keyword among the maximum number: everything
		   written so far is taken back */
		many = t_new(const char *, LMDB_KEYWORDS_MAX + 2);
		for (i = 0; i < LMDB_KEYWORDS_MAX + 1; i++)
			many[i] = t_strdup_printf("kw%u", i);
		many[1000] = "bad keyword";
		link.keywords = many;
		link.keywords_count = LMDB_KEYWORDS_MAX;
		test_link_refused(&link, "keyword", 0);
		many[1000] = "kw1000";
		buffer_set_used_size(buf, 0);
		test_assert(lmdb_link_record_encode(buf, test_mailbox_guid, 1,
						    &link, &error));
		link.keywords_count = LMDB_KEYWORDS_MAX + 1;
		test_link_refused(&link, "1025 keywords", 0);

		test_body_record_init(&body);
		for (i = 0; i < N_ELEMENTS(bad_guids) + 1; i++) {
			body.guid = i < N_ELEMENTS(bad_guids) ? bad_guids[i] :
				test_str_repeat('g', LMDB_GUID_MAX_LEN + 1);
			buffer_set_used_size(buf, 0);
			buffer_append(buf, TEST_PREFIX, strlen(TEST_PREFIX));
			ret = lmdb_body_record_encode(buf, 1, &body, &error);
			test_refused(ret, buf, error, "message GUID", i);
		}

		test_mailbox_record_init(&mailbox);
		for (i = 0; i < N_ELEMENTS(bad_names) + 2; i++) {
			mailbox.name = i < N_ELEMENTS(bad_names) ? bad_names[i] :
				i == N_ELEMENTS(bad_names) ? NULL :
				test_str_repeat('n', LMDB_NAME_MAX_LEN + 1);
			buffer_set_used_size(buf, 0);
			buffer_append(buf, TEST_PREFIX, strlen(TEST_PREFIX));
			ret = lmdb_mailbox_record_encode(buf, test_mailbox_guid,
							 &mailbox, &error);
			test_refused(ret, buf, error, "mailbox name", i);
		}
	} T_END;
	test_end();
}

/* Chunk values */

static void test_chunk_values(void)
{
	unsigned char hdr[LMDB_CHUNK_HDR_SIZE];
	unsigned char data[97];
	struct test_key key, other;
	const void *data_r;
	const char *error;
	size_t size_r, i;

	test_begin("chunk values");
	test_key_init(TEST_RECORD_CHUNK, 0, &key);
	T_BEGIN {
		buffer_t *buf = t_buffer_create(256), *v1;
		unsigned char *value;

		test_rand_seed(4711);
		for (i = 0; i < sizeof(data); i++)
			data[i] = test_rand64() & 0xff;
		lmdb_chunk_header_encode(hdr, TEST_BODY_ID, 3, data,
					 sizeof(data));
		test_assert(hdr[0] == 2 && hdr[1] == 0 && hdr[2] == 0 &&
			    hdr[3] == 0);
		buffer_append(buf, hdr, sizeof(hdr));
		buffer_append(buf, data, sizeof(data));
		test_check_sealed(TEST_RECORD_CHUNK, &key, buf, 0);
		value = buffer_get_modifiable_data(buf, NULL);
		test_assert(lmdb_chunk_decode(TEST_BODY_ID, 3, buf->data,
					      buf->used, &data_r, &size_r,
					      &error));
		test_assert(data_r == value + LMDB_CHUNK_HDR_SIZE);
		test_assert(size_r == sizeof(data));
		/* another chunk of the body, the same chunk of another */
		test_key_init(TEST_RECORD_CHUNK, 1, &other);
		test_assert(!test_decode_buf(TEST_RECORD_CHUNK, &other, buf,
					     &error));
		lmdb_chunk_key_encode(TEST_BODY_ID + 1, 3, other.data);
		test_assert(!test_decode_buf(TEST_RECORD_CHUNK, &other, buf,
					     &error));
		test_assert(test_str_contains(error, "checksum mismatch"));

		/* an empty chunk */
		lmdb_chunk_header_encode(hdr, TEST_BODY_ID, 3, "", 0);
		test_assert(lmdb_chunk_decode(TEST_BODY_ID, 3, hdr, sizeof(hdr),
					      &data_r, &size_r, &error) &&
			    size_r == 0);
		test_assert(!lmdb_chunk_decode(TEST_BODY_ID, 4, hdr, sizeof(hdr),
					       &data_r, &size_r, &error));

		/* schema 1's chunks (CRC of the data alone) stay readable,
		   under their key or any other: they are never moved */
		v1 = t_buffer_create(256);
		test_v1_chunk(v1, data, sizeof(data));
		test_assert(test_decode_buf(TEST_RECORD_CHUNK, &key, v1, &error));
		test_assert(test_decode_buf(TEST_RECORD_CHUNK, &other, v1, &error));
		test_assert(lmdb_chunk_decode(TEST_BODY_ID, 3, v1->data,
					      v1->used, &data_r, &size_r,
					      &error) &&
			    size_r == sizeof(data) &&
			    memcmp(data_r, data, sizeof(data)) == 0);
		value = buffer_get_modifiable_data(v1, NULL);
		for (i = 0; i < v1->used * 8; i++) {
			if (i / 8 >= 1 && i / 8 < 4)
				continue;
			value[i / 8] ^= 1 << (i % 8);
			test_assert_idx(!test_decode_buf(TEST_RECORD_CHUNK, &key,
							 v1, &error), i);
			value[i / 8] ^= 1 << (i % 8);
		}
		/* neither version takes the other's checksum */
		value[0] = 2;
		test_assert(!test_decode_buf(TEST_RECORD_CHUNK, &key, v1, &error));
		value = buffer_get_modifiable_data(buf, NULL);
		value[0] = 1;
		test_assert(!test_decode_buf(TEST_RECORD_CHUNK, &key, buf, &error));
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
			/* continued over a second piece */
			test_assert_idx(lmdb_crc32_update(lmdb_crc32(data, off),
							  data + off, len) ==
					crc32_data(data, off + len), off * 100 + len);
		}
		test_assert_idx(lmdb_crc32(data + off, 1024) ==
				crc32_data(data + off, 1024), off);
	}
	/* the standard check value of CRC-32 */
	test_assert(lmdb_crc32("123456789", 9) == 0xcbf43926);
	test_end();
}

/* lmdb-values */

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

/* For each byte value: is it valid alone, after valid characters, and
   before them? */
static void test_value_chars(bool (*is_valid)(const char *str),
			     bool (*char_valid)(unsigned int c))
{
	unsigned int c;

	for (c = 1; c < 256; c++) {
		bool valid = char_valid(c);

		test_assert_idx(is_valid(t_strdup_printf("%c", c)) == valid, c);
		test_assert_idx(is_valid(t_strdup_printf("ab%c", c)) == valid, c);
		test_assert_idx(is_valid(t_strdup_printf("%cab", c)) == valid, c);
	}
}

static bool test_keyword_char_valid(unsigned int c)
{
	/* RFC 3501 atom-specials, "]" and a leading backslash excluded */
	return c > 0x20 && c < 0x7f && strchr("(){%*\"\\]", c) == NULL;
}

static bool test_guid_char_valid(unsigned int c)
{
	return c >= 0x20 && c != 0x7f;
}

static bool test_name_char_valid(unsigned int c)
{
	/* a byte >= 0x80 alone is not UTF-8 */
	return c >= 0x20 && c < 0x7f;
}

static void test_values_at_limits(void)
{
	test_begin("keyword, GUID and mailbox name validity");
	T_BEGIN {
		test_assert(!lmdb_keyword_is_valid(""));
		test_assert(lmdb_keyword_is_valid("$Forwarded"));
		test_assert(lmdb_keyword_is_valid("[x"));
		test_assert(!lmdb_keyword_is_valid("\\Seen"));
		test_assert(lmdb_keyword_is_valid(test_str_repeat('k',
						LMDB_KEYWORD_MAX_LEN)));
		test_assert(!lmdb_keyword_is_valid(test_str_repeat('k',
						LMDB_KEYWORD_MAX_LEN + 1)));
		test_value_chars(lmdb_keyword_is_valid, test_keyword_char_valid);

		test_assert(!lmdb_guid_is_valid(""));
		test_assert(lmdb_guid_is_valid("<id with spaces@example.com>"));
		test_assert(lmdb_guid_is_valid(test_str_repeat('g',
						LMDB_GUID_MAX_LEN)));
		test_assert(!lmdb_guid_is_valid(test_str_repeat('g',
						LMDB_GUID_MAX_LEN + 1)));
		test_value_chars(lmdb_guid_is_valid, test_guid_char_valid);

		test_assert(!lmdb_mailbox_name_is_valid(""));
		test_assert(lmdb_mailbox_name_is_valid("INBOX/\xc3\xa4/\xe2\x82\xac"));
		test_assert(lmdb_mailbox_name_is_valid("\xf0\x9f\x98\x80"));
		test_assert(!lmdb_mailbox_name_is_valid("\xc3"));
		test_assert(!lmdb_mailbox_name_is_valid("\xc3\xa4\xa4"));
		test_assert(!lmdb_mailbox_name_is_valid("\xc0\x80"));
		test_assert(!lmdb_mailbox_name_is_valid("\xe2\x82"));
		test_assert(lmdb_mailbox_name_is_valid(test_str_repeat('n',
						LMDB_NAME_MAX_LEN)));
		test_assert(!lmdb_mailbox_name_is_valid(test_str_repeat('n',
						LMDB_NAME_MAX_LEN + 1)));
		test_value_chars(lmdb_mailbox_name_is_valid, test_name_char_valid);
	} T_END;
	test_end();
}

static void test_value_digest(void)
{
	/* Expected values computed independently with python3:
	     hashlib.sha1(s).hexdigest()[-32:]
	   (the last 16 bytes of the SHA-1, in hex), which is what Dovecot's
	   mail_generate_guid_128_hash() makes of a string that isn't a
	   128-bit hex GUID. */
	static const struct {
		const char *input, *digest;
	} tests[] = {
		{ "", "5e6b4b0d3255bfef95601890afd80709" },
		{ "a", "faa5a7fce15d1ddcb9eaeaea377667b8" },
		{ "UID-1.2.3", "ce22f50a1e9da6967ef19f7eef59487b" },
		{ "00000001.4f3d2a", "b7851c1af57d4b9396756a5925d23e7d" },
		{ "<message-id@example.com>", "5fb33670d8c93559095f1d2cd9214571" },
		{ "r\xc3\xa4ksm\xc3\xb6rg\xc3\xa5s",
		  "9a4e4bb3a73b7cfbf82c817e91f7f5db" },
	};
	unsigned int i;

	test_begin("lmdb_value_digest");
	for (i = 0; i < N_ELEMENTS(tests); i++) T_BEGIN {
		const char *digest = lmdb_value_digest(tests[i].input);

		test_assert_idx(strcmp(digest, tests[i].digest) == 0, i);
		/* it is what replaces an invalid GUID or UIDL */
		test_assert_idx(lmdb_guid_is_valid(digest) &&
				lmdb_uidl_is_valid(digest), i);
	} T_END;
	test_end();
}

/* Fuzzing */

#define TEST_FUZZ_ITERATIONS 20000

/* What a decoder accepts must be valid by the rules of lmdb-values.h,
   and something the encoder writes back (under the same key) to the
   same fields: a record read from disk can always be rewritten. */
static bool test_fuzz_v2(enum test_record_type type, const struct test_key *key,
			 const void *data, size_t size, unsigned int iter)
{
	void *copy = test_dup_exact(data, size);
	pool_t pool = pool_datastack_create();
	buffer_t *buf = t_buffer_create(128);
	const char *error = NULL, *error2 = NULL;
	guid_128_t guid;
	uint64_t id;
	uint32_t n;
	unsigned int i;
	bool ret = FALSE;

	switch (type) {
	case TEST_RECORD_ENV: {
		struct lmdb_env_record rec, rec2;

		ret = lmdb_env_record_decode(copy, size, &rec, &error);
		if (ret) {
			test_assert_idx(rec.next_body_id != 0, iter);
			test_assert_idx(lmdb_env_record_encode(buf, &rec,
							       &error2) &&
				lmdb_env_record_decode(buf->data, buf->used,
						       &rec2, &error2) &&
				test_env_record_equals(&rec, &rec2), iter);
		}
		break;
	}
	case TEST_RECORD_BODY: {
		struct lmdb_body_record rec, rec2;

		if (!lmdb_body_id_decode(key->data, key->size, &id))
			i_unreached();
		ret = lmdb_body_record_decode(id, copy, size, pool, &rec, &error);
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
			test_assert_idx(rec.guid[0] == '\0' ||
					lmdb_guid_is_valid(rec.guid), iter);
			test_assert_idx(lmdb_body_record_encode(buf, id, &rec,
								&error2) &&
				lmdb_body_record_decode(id, buf->data, buf->used,
							pool, &rec2, &error2) &&
				test_body_record_equals(&rec, &rec2), iter);
		}
		break;
	}
	case TEST_RECORD_LINK: {
		struct lmdb_link_record rec, rec2;

		if (!lmdb_link_key_decode(key->data, key->size, guid, &n))
			i_unreached();
		ret = lmdb_link_record_decode(guid, n, copy, size, pool, &rec,
					      &error);
		if (ret) {
			test_assert_idx(rec.keywords_count <= LMDB_KEYWORDS_MAX,
					iter);
			test_assert_idx((rec.flags & ~LMDB_LINK_FLAGS_MASK) == 0 &&
					rec.body_id != 0, iter);
			test_assert_idx(rec.pop3_uidl[0] == '\0' ||
					lmdb_uidl_is_valid(rec.pop3_uidl), iter);
			for (i = 0; i < rec.keywords_count; i++) {
				test_assert_idx(lmdb_keyword_is_valid(
					rec.keywords[i]), iter);
			}
			test_assert_idx(lmdb_link_record_encode(buf, guid, n,
								&rec, &error2) &&
				lmdb_link_record_decode(guid, n, buf->data,
					buf->used, pool, &rec2, &error2) &&
				test_link_record_equals(&rec, &rec2), iter);
		}
		break;
	}
	case TEST_RECORD_MAILBOX: {
		struct lmdb_mailbox_record rec, rec2;

		ret = lmdb_mailbox_record_decode(key->data, copy, size, pool,
						 &rec, &error);
		if (ret) {
			test_assert_idx(lmdb_mailbox_name_is_valid(rec.name),
					iter);
			test_assert_idx(lmdb_mailbox_record_encode(buf,
					key->data, &rec, &error2) &&
				lmdb_mailbox_record_decode(key->data, buf->data,
					buf->used, pool, &rec2, &error2) &&
				test_mailbox_record_equals(&rec, &rec2), iter);
		}
		break;
	}
	case TEST_RECORD_GC:
		ret = lmdb_gc_value_check(key->data, copy, size, &error);
		break;
	case TEST_RECORD_CHUNK: {
		const void *data_r;
		size_t size_r;
		const unsigned char *p = copy;

		if (!lmdb_chunk_key_decode(key->data, key->size, &id, &n))
			i_unreached();
		ret = lmdb_chunk_decode(id, n, copy, size, &data_r, &size_r,
					&error);
		if (ret) {
			test_assert_idx(size >= LMDB_CHUNK_HDR_SIZE &&
				size_r == size - LMDB_CHUNK_HDR_SIZE &&
				data_r == p + LMDB_CHUNK_HDR_SIZE, iter);
			test_assert_idx(be32_to_cpu_unaligned(p + 4) ==
				(p[0] == 1 ? crc32_data(data_r, size_r) :
				 test_seal_crc(type, key, data_r, size_r)), iter);
		}
		break;
	}
	case TEST_RECORD_TYPE_COUNT:
		i_unreached();
	}
	if (!ret)
		test_assert_idx(error != NULL && error[0] != '\0', iter);
	free(copy);
	return ret;
}

/* What a schema-1 decoder accepts, the upgrade writes as version 2:
   the encoder must take it and give the same fields back. */
static bool test_fuzz_v1(enum test_record_type type, const void *data,
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

		ret = lmdb_env_record_decode_v1(copy, size, &rec, &error);
		if (ret) {
			test_assert_idx(lmdb_env_record_encode(buf, &rec,
							       &error2) &&
				lmdb_env_record_decode(buf->data, buf->used,
						       &rec2, &error2) &&
				test_env_record_equals(&rec, &rec2), iter);
		}
		break;
	}
	case TEST_RECORD_BODY: {
		struct lmdb_body_record rec, rec2;

		ret = lmdb_body_record_decode_v1(copy, size, pool, &rec, &error);
		if (ret) {
			test_assert_idx(lmdb_body_record_encode(buf, 7, &rec,
								&error2) &&
				lmdb_body_record_decode(7, buf->data, buf->used,
							pool, &rec2, &error2) &&
				test_body_record_equals(&rec, &rec2), iter);
		}
		break;
	}
	case TEST_RECORD_LINK: {
		struct lmdb_link_record rec, rec2;

		ret = lmdb_link_record_decode_v1(copy, size, pool, &rec, &error);
		if (ret) {
			test_assert_idx(lmdb_link_record_encode(buf,
					test_mailbox_guid, 7, &rec, &error2) &&
				lmdb_link_record_decode(test_mailbox_guid, 7,
					buf->data, buf->used, pool, &rec2,
					&error2) &&
				test_link_record_equals(&rec, &rec2), iter);
		}
		break;
	}
	case TEST_RECORD_MAILBOX: {
		struct lmdb_mailbox_record rec, rec2;

		ret = lmdb_mailbox_record_decode_v1(copy, size, pool, &rec,
						    &error);
		if (ret) {
			test_assert_idx(lmdb_mailbox_record_encode(buf,
					test_mailbox_guid, &rec, &error2) &&
				lmdb_mailbox_record_decode(test_mailbox_guid,
					buf->data, buf->used, pool, &rec2,
					&error2) &&
				test_mailbox_record_equals(&rec, &rec2), iter);
		}
		break;
	}
	default:
		i_unreached();
	}
	if (!ret)
		test_assert_idx(error != NULL && error[0] != '\0', iter);
	free(copy);
	return ret;
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

/* The input of one iteration: random bytes, or a mutated sample of
   version 2 or of schema 1. */
static buffer_t *test_fuzz_input(void)
{
	enum test_record_type type = test_rand_n(TEST_RECORD_TYPE_COUNT);
	struct test_key key;
	buffer_t *buf;
	size_t size;

	switch (test_rand_n(4)) {
	case 0:
		/* usually with a known version, so the decoders get past
		   the first byte */
		buf = t_buffer_create(256);
		size = test_rand_n(test_rand_n(2) == 0 ? 24 : 400);
		while (buf->used < size)
			buffer_append_c(buf, test_rand64() & 0xff);
		if (size > 0 && test_rand_n(4) != 0)
			buffer_write(buf, 0, test_rand_n(2) == 0 ? "\x01" : "\x02", 1);
		return buf;
	case 1:
		buf = t_buffer_create(256);
		test_sample_v1(test_rand_n(TEST_RECORD_MAILBOX + 1), buf);
		break;
	default:
		test_key_init(type, 0, &key);
		buf = test_encode_sample(type, test_rand_n(2), &key);
		break;
	}
	test_fuzz_mutate(buf);
	return buf;
}

static void test_records_fuzz(void)
{
	enum test_record_type type;
	struct test_key key;
	unsigned int iter, accepted = 0, rejected = 0, accepted_v1 = 0;

	test_begin("records fuzz");
	test_rand_seed(0x1db5eed);
	for (iter = 0; iter < TEST_FUZZ_ITERATIONS; iter++) T_BEGIN {
		buffer_t *buf = test_fuzz_input();
		buffer_t *sealed = t_buffer_create(buf->used);

		for (type = 0; type < TEST_RECORD_TYPE_COUNT; type++) {
			/* mostly sealed for the decoder's own key, so the
			   field readers are what is fuzzed */
			test_key_init(type, 0, &key);
			buffer_set_used_size(sealed, 0);
			buffer_append_buf(sealed, buf, 0, SIZE_MAX);
			if (test_rand_n(4) != 0)
				test_reseal(type, &key, sealed);
			if (test_fuzz_v2(type, &key, sealed->data, sealed->used,
					 iter))
				accepted++;
			else
				rejected++;
			if (type <= TEST_RECORD_MAILBOX &&
			    test_fuzz_v1(type, buf->data, buf->used, iter))
				accepted_v1++;
		}
		test_fuzz_keys(buf->data, buf->used, iter);
	} T_END;
	/* a change that makes every input fail early (and so fuzzes
	   nothing) is noticed */
	test_assert(accepted > TEST_FUZZ_ITERATIONS / 20);
	test_assert(accepted_v1 > TEST_FUZZ_ITERATIONS / 50);
	test_assert(rejected > TEST_FUZZ_ITERATIONS * 2);
	test_end();
}

/* Reported bugs */

/* A chunk's flags and reserved bytes are covered neither by its CRC nor
   by a check: a flipped bit there is accepted. Both versions wrote them
   as 0, so a decoder can require that. */
static void test_chunk_header_bits_bug(void)
{
	struct test_key key;
	const char *error;
	unsigned int bit, variant;

	test_begin("a flipped bit in a chunk's flags or reserved bytes");
	test_key_init(TEST_RECORD_CHUNK, 0, &key);
	for (variant = 0; variant < 2; variant++) T_BEGIN {
		buffer_t *buf;
		unsigned char *value;

		if (variant == 0)
			buf = test_encode_sample(TEST_RECORD_CHUNK, 0, &key);
		else {
			buf = t_buffer_create(64);
			test_v1_chunk(buf, "data", 4);
		}
		value = buffer_get_modifiable_data(buf, NULL);
		for (bit = 8; bit < 32; bit++) {
			value[bit / 8] ^= 1 << (bit % 8);
			test_assert_idx(!test_decode_buf(TEST_RECORD_CHUNK, &key,
							 buf, &error),
					variant * 100 + bit);
			value[bit / 8] ^= 1 << (bit % 8);
		}
	} T_END;
	test_end();
}

/* An encoder that accepts what its own decoder refuses writes a record
   that reads back as damaged: the message is lost to the user. The
   encoders check strings only; these numeric fields pass them. Either
   side may change: what is written must be read. */
static void test_encoders_write_only_readable_bug(void)
{
	struct lmdb_env_record env;
	struct lmdb_body_record body;
	struct lmdb_link_record link;
	struct lmdb_mailbox_record mailbox;
	struct test_key key;
	const char *error;
	unsigned int i;

	test_begin("encoders refuse what their decoders refuse");
	T_BEGIN {
		buffer_t *buf = t_buffer_create(128);

		test_key_init(TEST_RECORD_ENV, 0, &key);
		test_env_record_init(&env);
		env.next_body_id = 0;
		if (lmdb_env_record_encode(buf, &env, &error))
			test_assert(test_decode_buf(TEST_RECORD_ENV, &key, buf,
						    &error));

		/* flags beyond the mask (\Recent is 0x20), body id 0 */
		test_key_init(TEST_RECORD_LINK, 0, &key);
		for (i = 0; i < 2; i++) {
			test_link_record_init(&link);
			if (i == 0)
				link.flags = 0x20;
			else
				link.body_id = 0;
			buffer_set_used_size(buf, 0);
			if (lmdb_link_record_encode(buf, test_mailbox_guid, 4711,
						    &link, &error)) {
				test_assert_idx(test_decode_buf(TEST_RECORD_LINK,
						&key, buf, &error), i);
			}
		}

		/* a state out of range, a chunk count that doesn't match,
		   a virtual size below the message size */
		test_key_init(TEST_RECORD_BODY, 0, &key);
		for (i = 0; i < 4; i++) {
			test_body_record_init(&body);
			if (i == 0)
				body.state = 0;
			else if (i == 1)
				body.state = LMDB_BODY_STATE_DEAD + 1;
			else if (i == 2)
				body.chunk_count++;
			else
				body.virtual_size = body.message_size - 1;
			buffer_set_used_size(buf, 0);
			if (lmdb_body_record_encode(buf, TEST_BODY_ID, &body,
						    &error)) {
				test_assert_idx(test_decode_buf(TEST_RECORD_BODY,
						&key, buf, &error), i);
			}
		}

		test_key_init(TEST_RECORD_MAILBOX, 0, &key);
		test_mailbox_record_init(&mailbox);
		mailbox.state = LMDB_MAILBOX_STATE_DELETED + 1;
		buffer_set_used_size(buf, 0);
		if (lmdb_mailbox_record_encode(buf, test_mailbox_guid, &mailbox,
					       &error)) {
			test_assert(test_decode_buf(TEST_RECORD_MAILBOX, &key,
						    buf, &error));
		}
	} T_END;
	test_end();
}

int main(void)
{
	static void (*const tests[])(void) = {
		test_env_record_roundtrip,
		test_body_record_roundtrip,
		test_link_record_roundtrip,
		test_mailbox_record_roundtrip,
		test_gc_values,
		test_body_id_keys,
		test_link_keys,
		test_chunk_keys,
		test_gc_keys,
		test_records_truncated,
		test_records_unknown_version,
		test_records_bit_flips,
		test_records_bound_to_key_and_type,
		test_records_v1,
		test_body_record_layout,
		test_body_record_layout_bugs,
		test_env_record_invalid_fields,
		test_body_record_invalid_fields,
		test_link_record_invalid_fields,
		test_mailbox_record_invalid_fields,
		test_encoders_refuse,
		test_chunk_values,
		test_crc32_matches_dovecot,
		test_uidl_is_valid,
		test_values_at_limits,
		test_value_digest,
		test_records_fuzz,
		test_chunk_header_bits_bug,
		test_encoders_write_only_readable_bug,
		NULL
	};
	return test_run(tests);
}
