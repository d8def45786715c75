/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "str.h"
#include "test-common.h"
#include "pop3-policy-records.h"
#include "test-pop3-policy-v1.h"

#include <stdlib.h>

/* Decoders get an exactly-sized heap copy, so that valgrind reports any
   read past the end of the record. */
static void *test_dup_exact(const void *data, size_t size)
{
	void *p = malloc(size == 0 ? 1 : size);

	if (p == NULL)
		i_fatal("malloc() failed");
	if (size > 0)
		memcpy(p, data, size);
	return p;
}

typedef bool test_decode_func_t(const void *key, size_t key_size,
				const void *data, size_t size,
				const char **error_r);

static bool test_decode_msg(const void *key, size_t key_size,
			    const void *data, size_t size,
			    const char **error_r)
{
	struct pop3_policy_msg_record rec;

	return pop3_policy_msg_record_decode(key, key_size, data, size, &rec,
					     error_r);
}

static bool test_decode_uidl(const void *key, size_t key_size,
			     const void *data, size_t size,
			     const char **error_r)
{
	struct pop3_policy_uidl_record rec;

	return pop3_policy_uidl_record_decode(key, key_size, data, size, &rec,
					      error_r);
}

/* the "meta" records have fixed keys: key is ignored */
static bool test_decode_schema(const void *key ATTR_UNUSED,
			       size_t key_size ATTR_UNUSED,
			       const void *data, size_t size,
			       const char **error_r)
{
	struct pop3_policy_schema_record rec;

	return pop3_policy_schema_record_decode(data, size, &rec, error_r);
}

static bool test_decode_flag(const void *key ATTR_UNUSED,
			     size_t key_size ATTR_UNUSED,
			     const void *data, size_t size,
			     const char **error_r)
{
	struct pop3_policy_flag_record rec;

	return pop3_policy_flag_record_decode(data, size, &rec, error_r);
}

static bool test_decode_sweep(const void *key ATTR_UNUSED,
			      size_t key_size ATTR_UNUSED,
			      const void *data, size_t size,
			      const char **error_r)
{
	struct pop3_policy_sweep_record rec;

	return pop3_policy_sweep_record_decode(data, size, &rec, error_r);
}

static bool test_decode_download_value(const void *key, size_t key_size,
				       const void *data, size_t size,
				       const char **error_r)
{
	return pop3_policy_download_value_decode(key, key_size, data, size,
						 error_r);
}

/* Every strict prefix fails, the whole passes, a trailing byte fails,
   another version byte (1 included) fails, and any byte changed in any
   way - one bit flipped, or all of them - fails too: the CRC-32 catches
   every error within 32 bits. With key != NULL, the same for every byte
   of the key. */
static void test_decode_robust(const buffer_t *buf, const void *key,
			       size_t key_size, test_decode_func_t *decode)
{
	const char *error;
	unsigned char *copy, *key_copy;
	size_t i;
	unsigned int b;

	for (i = 0; i < buf->used; i++) {
		copy = test_dup_exact(buf->data, i);
		error = NULL;
		test_assert_idx(!decode(key, key_size, copy, i, &error), i);
		test_assert_idx(error != NULL, i);
		free(copy);
	}
	copy = test_dup_exact(buf->data, buf->used);
	test_assert(decode(key, key_size, copy, buf->used, &error));
	copy[0] = POP3_POLICY_RECORD_VERSION + 1;
	test_assert(!decode(key, key_size, copy, buf->used, &error));
	copy[0] = POP3_POLICY_RECORD_VERSION_V1;
	test_assert(!decode(key, key_size, copy, buf->used, &error));
	free(copy);

	T_BEGIN {
		buffer_t *longer = t_buffer_create(buf->used + 1);

		buffer_append_buf(longer, buf, 0, SIZE_MAX);
		buffer_append_c(longer, 0);
		copy = test_dup_exact(longer->data, longer->used);
		test_assert(!decode(key, key_size, copy, longer->used,
				    &error));
		free(copy);
	} T_END;

	for (i = 0; i < buf->used; i++) {
		for (b = 0; b <= 8; b++) {
			copy = test_dup_exact(buf->data, buf->used);
			copy[i] ^= b == 8 ? 0xff : 1 << b;
			test_assert_idx(!decode(key, key_size, copy,
						buf->used, &error),
					i * 9 + b);
			free(copy);
		}
	}
	if (key == NULL)
		return;
	for (i = 0; i < key_size; i++) {
		for (b = 0; b <= 8; b++) {
			key_copy = test_dup_exact(key, key_size);
			key_copy[i] ^= b == 8 ? 0xff : 1 << b;
			test_assert_idx(!decode(key_copy, key_size, buf->data,
						buf->used, &error),
					i * 9 + b);
			free(key_copy);
		}
	}
	/* a key one byte shorter or longer */
	test_assert(key_size == 0 ||
		    !decode(key, key_size - 1, buf->data, buf->used, &error));
	T_BEGIN {
		buffer_t *longer_key = t_buffer_create(key_size + 1);

		buffer_append(longer_key, key, key_size);
		buffer_append_c(longer_key, 'x');
		test_assert(!decode(longer_key->data, longer_key->used,
				    buf->data, buf->used, &error));
	} T_END;
}

static void test_msg_record(void)
{
	struct pop3_policy_msg_record rec, rec2;
	const char *error, *key;
	buffer_t *buf;

	test_begin("pop3 policy msg record");
	buf = t_buffer_create(128);
	i_zero(&rec);
	rec.flags = POP3_POLICY_MSG_FLAG_HIDDEN;
	rec.first_download = 0x0102030405060708ULL;
	rec.uidl = "000000016b046644";
	rec.guid = "1795450436.M767662P19511.vm,S=743,W=760";
	key = pop3_policy_msg_key(rec.guid);
	pop3_policy_msg_record_encode(buf, key, strlen(key), &rec);
	/* version byte, CRC, then the fields; integers big-endian */
	test_assert(((const unsigned char *)buf->data)[0] ==
		    POP3_POLICY_RECORD_VERSION);
	test_assert(((const unsigned char *)buf->data)[6] == 0x01);
	test_assert(((const unsigned char *)buf->data)[13] == 0x08);
	test_assert(pop3_policy_msg_record_decode(key, strlen(key), buf->data,
						  buf->used, &rec2, &error));
	test_assert(rec2.flags == rec.flags);
	test_assert(rec2.first_download == rec.first_download);
	test_assert_strcmp(rec2.uidl, rec.uidl);
	test_assert_strcmp(rec2.guid, rec.guid);
	test_decode_robust(buf, key, strlen(key), test_decode_msg);
	/* the type is in the CRC: a msgs value never passes for a UIDL
	   reservation under the same key */
	test_assert(!test_decode_uidl(key, strlen(key), buf->data, buf->used,
				      &error));

	/* no UIDL yet */
	buffer_set_used_size(buf, 0);
	rec.uidl = "";
	pop3_policy_msg_record_encode(buf, key, strlen(key), &rec);
	test_assert(pop3_policy_msg_record_decode(key, strlen(key), buf->data,
						  buf->used, &rec2, &error));
	test_assert_strcmp(rec2.uidl, "");

	/* an empty GUID or an invalid UIDL is corruption, CRC or not */
	buffer_set_used_size(buf, 0);
	rec.guid = "";
	pop3_policy_msg_record_encode(buf, key, strlen(key), &rec);
	test_assert(!pop3_policy_msg_record_decode(key, strlen(key),
						   buf->data, buf->used,
						   &rec2, &error));
	buffer_set_used_size(buf, 0);
	rec.guid = "g";
	rec.uidl = "has space";
	pop3_policy_msg_record_encode(buf, "g", 1, &rec);
	test_assert(!pop3_policy_msg_record_decode("g", 1, buf->data,
						   buf->used, &rec2, &error));
	test_end();
}

static void test_other_records(void)
{
	struct pop3_policy_uidl_record urec = { .guid = "abc" }, urec2;
	struct pop3_policy_schema_record srec = {
		.schema_version = POP3_POLICY_SCHEMA_VERSION,
		.created = 1700000000,
	}, srec2;
	struct pop3_policy_flag_record frec = { .keyword = "$POP3Deleted" },
		frec2;
	const char *error;
	buffer_t *buf = t_buffer_create(64);

	test_begin("pop3 policy uidl/schema/flag records");
	pop3_policy_uidl_record_encode(buf, "UID7-1", 6, &urec);
	test_assert(pop3_policy_uidl_record_decode("UID7-1", 6, buf->data,
						   buf->used, &urec2, &error));
	test_assert_strcmp(urec2.guid, "abc");
	test_decode_robust(buf, "UID7-1", 6, test_decode_uidl);

	buffer_set_used_size(buf, 0);
	pop3_policy_schema_record_encode(buf, &srec);
	test_assert(pop3_policy_schema_record_decode(buf->data, buf->used,
						     &srec2, &error));
	test_assert(srec2.schema_version == srec.schema_version);
	test_assert(srec2.created == srec.created);
	test_decode_robust(buf, NULL, 0, test_decode_schema);
	/* a version-2 schema record is no version-1 one */
	test_assert(!pop3_policy_schema_record_decode_v1(buf->data, buf->used,
							 &srec2, &error));

	buffer_set_used_size(buf, 0);
	pop3_policy_flag_record_encode(buf, &frec);
	test_assert(pop3_policy_flag_record_decode(buf->data, buf->used,
						   &frec2, &error));
	test_assert_strcmp(frec2.keyword, "$POP3Deleted");
	test_decode_robust(buf, NULL, 0, test_decode_flag);
	test_end();
}

static void test_sweep_record(void)
{
	struct pop3_policy_sweep_record rec = { .last_sweep = 1700000000 },
		rec2;
	const char *error;
	buffer_t *buf = t_buffer_create(16), *key = t_buffer_create(32);

	test_begin("pop3 policy sweep record and downloads value");
	pop3_policy_sweep_record_encode(buf, &rec);
	test_assert(pop3_policy_sweep_record_decode(buf->data, buf->used,
						    &rec2, &error));
	test_assert(rec2.last_sweep == rec.last_sweep);
	test_decode_robust(buf, NULL, 0, test_decode_sweep);
	/* the same bytes under another meta key are refused (the type is
	   in the CRC): 9 bytes of a sweep record are no schema record */
	test_assert(!pop3_policy_schema_record_decode(buf->data, buf->used,
						      &(struct pop3_policy_schema_record){ 0 },
						      &error));

	/* the downloads value is the CRC of its key */
	buffer_set_used_size(buf, 0);
	pop3_policy_download_key_encode(key, 1700000000, "guid-1");
	pop3_policy_download_value_encode(buf, key->data, key->used);
	test_assert(buf->used == 5);
	test_assert(pop3_policy_download_value_decode(key->data, key->used,
						      buf->data, buf->used,
						      &error));
	test_decode_robust(buf, key->data, key->used,
			   test_decode_download_value);
	test_end();
}

/* A version-1 value of every type, as the module of schema 2 wrote it
   (test-pop3-policy-v1.h), converts to a version-2 value that decodes
   to the same fields; what doesn't decode as version 1 is refused. */
static void test_upgrade_v1(void)
{
	struct pop3_policy_msg_record rec = {
		.flags = POP3_POLICY_MSG_FLAG_HIDDEN,
		.first_download = 1700000123,
		.uidl = "UID5-1",
		.guid = "guid-5",
	}, rec2;
	struct pop3_policy_uidl_record urec;
	struct pop3_policy_schema_record srec;
	struct pop3_policy_flag_record frec;
	struct pop3_policy_sweep_record swrec;
	buffer_t *v1 = t_buffer_create(64), *out = t_buffer_create(64);
	buffer_t *dkey = t_buffer_create(32);
	const char *error;
	size_t i;

	test_begin("pop3 policy version-1 values convert");
	test_v1_msg_encode(v1, &rec);
	/* decoders refuse it, the conversion takes it */
	test_assert(!pop3_policy_msg_record_decode("guid-5", 6, v1->data,
						   v1->used, &rec2, &error));
	test_assert(strstr(error, "version-1") != NULL);
	test_assert(pop3_policy_record_upgrade_v1(POP3_POLICY_RECORD_TYPE_MSG,
						  "guid-5", 6, v1->data,
						  v1->used, out, &error));
	test_assert(out->used == v1->used + 4);
	test_assert(pop3_policy_msg_record_decode("guid-5", 6, out->data,
						  out->used, &rec2, &error));
	test_assert(rec2.flags == rec.flags &&
		    rec2.first_download == rec.first_download);
	test_assert_strcmp(rec2.uidl, rec.uidl);
	test_assert_strcmp(rec2.guid, rec.guid);
	/* a version-2 value, a truncated or longer one, or one of another
	   type is no version-1 record of this type */
	buffer_set_used_size(v1, 0);
	test_assert(!pop3_policy_record_upgrade_v1(POP3_POLICY_RECORD_TYPE_MSG,
						   "guid-5", 6, out->data,
						   out->used, v1, &error));
	test_assert(v1->used == 0);
	test_v1_msg_encode(v1, &rec);
	for (i = 0; i < v1->used; i++) {
		test_assert_idx(!pop3_policy_record_upgrade_v1(
			POP3_POLICY_RECORD_TYPE_MSG, "guid-5", 6, v1->data,
			i, out, &error), i);
	}
	buffer_append_c(v1, 0);
	test_assert(!pop3_policy_record_upgrade_v1(POP3_POLICY_RECORD_TYPE_MSG,
						   "guid-5", 6, v1->data,
						   v1->used, out, &error));

	buffer_set_used_size(v1, 0);
	buffer_set_used_size(out, 0);
	test_v1_uidl_encode(v1, "guid-5");
	test_assert(pop3_policy_record_upgrade_v1(POP3_POLICY_RECORD_TYPE_UIDL,
						  "UID5-1", 6, v1->data,
						  v1->used, out, &error));
	test_assert(pop3_policy_uidl_record_decode("UID5-1", 6, out->data,
						   out->used, &urec, &error));
	test_assert_strcmp(urec.guid, "guid-5");
	test_assert(!pop3_policy_record_upgrade_v1(POP3_POLICY_RECORD_TYPE_MSG,
						   "UID5-1", 6, v1->data,
						   v1->used, out, &error));

	buffer_set_used_size(v1, 0);
	buffer_set_used_size(out, 0);
	test_v1_schema_encode(v1, 2, 1600000000);
	test_assert(pop3_policy_schema_record_decode_v1(v1->data, v1->used,
							&srec, &error));
	test_assert(srec.schema_version == 2 && srec.created == 1600000000);
	buffer_set_used_size(v1, 0);
	/* version-1 schema records end with schema 2 */
	test_v1_schema_encode(v1, 3, 1600000000);
	test_assert(!pop3_policy_schema_record_decode_v1(v1->data, v1->used,
							 &srec, &error));

	buffer_set_used_size(v1, 0);
	test_v1_flag_encode(v1, "$POP3Deleted");
	test_assert(pop3_policy_record_upgrade_v1(POP3_POLICY_RECORD_TYPE_FLAG,
			POP3_POLICY_META_KEY_FLAG,
			strlen(POP3_POLICY_META_KEY_FLAG), v1->data, v1->used,
			out, &error));
	test_assert(pop3_policy_flag_record_decode(out->data, out->used,
						   &frec, &error));
	test_assert_strcmp(frec.keyword, "$POP3Deleted");

	buffer_set_used_size(v1, 0);
	buffer_set_used_size(out, 0);
	test_v1_sweep_encode(v1, 1700000999);
	test_assert(pop3_policy_record_upgrade_v1(POP3_POLICY_RECORD_TYPE_SWEEP,
			POP3_POLICY_META_KEY_SWEEP,
			strlen(POP3_POLICY_META_KEY_SWEEP), v1->data, v1->used,
			out, &error));
	test_assert(pop3_policy_sweep_record_decode(out->data, out->used,
						    &swrec, &error));
	test_assert(swrec.last_sweep == 1700000999);

	buffer_set_used_size(v1, 0);
	buffer_set_used_size(out, 0);
	pop3_policy_download_key_encode(dkey, 1700000123, "guid-5");
	test_v1_download_value_encode(v1);
	test_assert(pop3_policy_record_upgrade_v1(
			POP3_POLICY_RECORD_TYPE_DOWNLOAD, dkey->data,
			dkey->used, v1->data, v1->used, out, &error));
	test_assert(pop3_policy_download_value_decode(dkey->data, dkey->used,
						      out->data, out->used,
						      &error));
	test_end();
}

static void test_download_key(void)
{
	char long_guid[POP3_POLICY_GUID_KEY_MAX_LEN + 2];
	const char *msg_key, *error;
	uint64_t t;
	buffer_t *a = t_buffer_create(64), *b = t_buffer_create(64);
	unsigned char *copy;
	size_t i;
	unsigned int bit;

	test_begin("pop3 policy downloads index key");
	memset(long_guid, 'g', sizeof(long_guid) - 1);
	long_guid[sizeof(long_guid) - 1] = '\0';
	pop3_policy_download_key_encode(a, 1700000000, "guid-b");
	test_assert(a->used == 8 + 6);
	test_assert(pop3_policy_download_key_decode(a->data, a->used, &t,
						    &msg_key, &error));
	test_assert(t == 1700000000);
	test_assert_strcmp(msg_key, "guid-b");
	/* keys sort by time first, whatever the message key */
	pop3_policy_download_key_encode(b, 1700000001, "guid-a");
	test_assert(memcmp(a->data, b->data, I_MIN(a->used, b->used)) < 0);
	buffer_set_used_size(b, 0);
	pop3_policy_download_key_encode(b, 1700000000 + 256, "a");
	test_assert(memcmp(a->data, b->data, I_MIN(a->used, b->used)) < 0);
	/* a digest key of a long GUID fits */
	buffer_set_used_size(b, 0);
	pop3_policy_download_key_encode(b, 1, pop3_policy_msg_key(long_guid));
	test_assert(pop3_policy_download_key_decode(b->data, b->used, &t,
						    &msg_key, &error));
	test_assert_strcmp(msg_key, pop3_policy_msg_key(long_guid));

	/* no message key, time 0, a NUL, a key longer than any msgs key */
	for (i = 0; i <= 8; i++) {
		copy = test_dup_exact(a->data, i);
		test_assert_idx(!pop3_policy_download_key_decode(copy, i, &t,
							&msg_key, &error), i);
		free(copy);
	}
	buffer_set_used_size(b, 0);
	pop3_policy_download_key_encode(b, 0, "guid");
	test_assert(!pop3_policy_download_key_decode(b->data, b->used, &t,
						     &msg_key, &error));
	buffer_set_used_size(b, 0);
	pop3_policy_download_key_encode(b, 5, "gu");
	buffer_append_c(b, '\0');
	buffer_append(b, "id", 2);
	test_assert(!pop3_policy_download_key_decode(b->data, b->used, &t,
						     &msg_key, &error));
	buffer_set_used_size(b, 0);
	pop3_policy_download_key_encode(b, 5, long_guid);
	test_assert(!pop3_policy_download_key_decode(b->data, b->used, &t,
						     &msg_key, &error));
	for (i = 0; i < a->used; i++) {
		for (bit = 0; bit < 8; bit++) {
			copy = test_dup_exact(a->data, a->used);
			copy[i] ^= 1 << bit;
			(void)pop3_policy_download_key_decode(copy, a->used,
							&t, &msg_key, &error);
			free(copy);
		}
	}
	test_end();
}

static void test_uidl_rules(void)
{
	string_t *str = t_str_new(128);
	const char *c;
	unsigned int i;

	test_begin("pop3 policy UIDL rules");
	test_assert(pop3_policy_uidl_is_valid("a"));
	test_assert(pop3_policy_uidl_is_valid("!~"));
	test_assert(!pop3_policy_uidl_is_valid(""));
	test_assert(!pop3_policy_uidl_is_valid("a b"));
	test_assert(!pop3_policy_uidl_is_valid("a\x7f"));
	test_assert(!pop3_policy_uidl_is_valid("\xc3\xa4"));
	for (i = 0; i < 70; i++)
		str_append_c(str, 'x');
	test_assert(pop3_policy_uidl_is_valid(str_c(str)));
	str_append_c(str, 'x');
	test_assert(!pop3_policy_uidl_is_valid(str_c(str)));

	test_assert_strcmp(pop3_policy_uidl_candidate("abc", 0), "abc");
	test_assert_strcmp(pop3_policy_uidl_candidate("abc", 1), "abc-1");
	test_assert_strcmp(pop3_policy_uidl_candidate("abc", 12), "abc-12");
	/* a 70-character base is shortened to keep the suffix */
	str_truncate(str, 70);
	c = pop3_policy_uidl_candidate(str_c(str), 123);
	test_assert(strlen(c) == 70);
	test_assert(strcmp(c + 66, "-123") == 0);
	test_assert(pop3_policy_uidl_is_valid(c));
	/* one that ends in the suffix already still gets an alternative
	   (found by the pop3-policy-records fuzz target) */
	str_truncate(str, 68);
	str_append(str, "-1");
	c = pop3_policy_uidl_candidate(str_c(str), 1);
	test_assert(strcmp(c, str_c(str)) != 0);
	test_assert(strlen(c) == 69 && strcmp(c + 67, "-1") == 0);
	test_assert(pop3_policy_uidl_is_valid(c));

	test_assert_strcmp(pop3_policy_uidl_sanitize("ok"), "ok");
	c = pop3_policy_uidl_sanitize("not ok");
	test_assert(pop3_policy_uidl_is_valid(c) && strlen(c) == 32);
	test_assert_strcmp(c, pop3_policy_uidl_sanitize("not ok"));
	test_assert(pop3_policy_uidl_is_valid(pop3_policy_uidl_sanitize("")));

	/* the fallback UIDL: valid, the same for the same GUID, apart
	   for another, never a sanitized digest */
	c = pop3_policy_uidl_fallback("some-guid");
	test_assert(pop3_policy_uidl_is_valid(c) && strlen(c) == 62);
	test_assert(pop3_policy_uidl_is_fallback(c));
	test_assert_strcmp(c, pop3_policy_uidl_fallback("some-guid"));
	test_assert(strcmp(c, pop3_policy_uidl_fallback("other-guid")) != 0);
	test_assert(!pop3_policy_uidl_is_fallback(
		pop3_policy_uidl_sanitize(c + 1)));
	test_assert(!pop3_policy_uidl_is_fallback("000000016b152611"));

	/* long GUIDs get a digest key, short ones are the key */
	test_assert_strcmp(pop3_policy_msg_key("guid"), "guid");
	str_truncate(str, 0);
	for (i = 0; i < POP3_POLICY_GUID_KEY_MAX_LEN + 1; i++)
		str_append_c(str, 'g');
	c = pop3_policy_msg_key(str_c(str));
	test_assert(strlen(c) < POP3_POLICY_GUID_KEY_MAX_LEN);
	test_assert(c[0] == '\x01');
	test_end();
}

static void test_keep_days(void)
{
	const time_t day = POP3_POLICY_SECS_PER_DAY;
	const time_t t0 = 1700000000;

	test_begin("pop3 policy keep_days");
	test_assert(!pop3_policy_keep_days_due(0, 3, t0 + 100 * day));
	test_assert(!pop3_policy_keep_days_due(t0, 0, t0 + 100 * day));
	test_assert(!pop3_policy_keep_days_due(t0, 3, t0 + 3 * day - 1));
	test_assert(pop3_policy_keep_days_due(t0, 3, t0 + 3 * day));
	test_assert(pop3_policy_keep_days_due(t0, 3, t0 + 4 * day));
	test_assert(!pop3_policy_keep_days_due((uint64_t)-1, 3, t0));
	test_assert(!pop3_policy_keep_days_due(t0, 3, t0 - day));
	test_end();
}

static void test_quota_math(void)
{
	struct pop3_policy_quota_state st;
	uint64_t bytes, count;

	test_begin("pop3 policy quota needed/credit");
	/* under quota: nothing needed */
	i_zero(&st);
	st.bytes_ceil = 10000;
	st.count_ceil = (uint64_t)-1;
	pop3_policy_quota_needed(&st, 4000, &bytes, &count);
	test_assert(bytes == 0 && count == 0);
	/* 4000 more with 7000 left after 5000 used in this transaction */
	st.bytes_used = 5000;
	pop3_policy_quota_needed(&st, 4000, &bytes, &count);
	test_assert(bytes == 0);
	st.bytes_ceil = 7000;
	pop3_policy_quota_needed(&st, 4000, &bytes, &count);
	test_assert(bytes == 2000 && count == 0);
	pop3_policy_quota_credit(&st, 2000, 0);
	pop3_policy_quota_needed(&st, 4000, &bytes, &count);
	test_assert(bytes == 0);

	/* already over: the excess counts too */
	i_zero(&st);
	st.bytes_over = 300;
	st.count_ceil = 0;
	st.count_over = 2;
	pop3_policy_quota_needed(&st, 100, &bytes, &count);
	test_assert(bytes == 400 && count == 3);
	pop3_policy_quota_credit(&st, 500, 3);
	test_assert(st.bytes_over == 0 && st.bytes_ceil == 200);
	test_assert(st.count_over == 0 && st.count_ceil == 1);
	pop3_policy_quota_needed(&st, 100, &bytes, &count);
	test_assert(bytes == 0 && count == 0);
	/* partial credit stays over */
	i_zero(&st);
	st.bytes_over = 300;
	pop3_policy_quota_credit(&st, 100, 0);
	test_assert(st.bytes_over == 200 && st.bytes_ceil == 0);
	/* unlimited stays unlimited */
	i_zero(&st);
	st.bytes_ceil = st.count_ceil = (uint64_t)-1;
	pop3_policy_quota_credit(&st, 100, 1);
	test_assert(st.bytes_ceil == (uint64_t)-1);
	test_end();
}

int main(void)
{
	static void (*const tests[])(void) = {
		test_msg_record,
		test_other_records,
		test_sweep_record,
		test_download_key,
		test_upgrade_v1,
		test_uidl_rules,
		test_keep_days,
		test_quota_math,
		NULL
	};
	return test_run(tests);
}
