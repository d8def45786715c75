/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "str.h"
#include "test-common.h"
#include "pop3-policy-records.h"

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

typedef bool test_decode_func_t(const void *data, size_t size,
				const char **error_r);

static bool test_decode_msg(const void *data, size_t size,
			    const char **error_r)
{
	struct pop3_policy_msg_record rec;

	return pop3_policy_msg_record_decode(data, size, &rec, error_r);
}

static bool test_decode_uidl(const void *data, size_t size,
			     const char **error_r)
{
	struct pop3_policy_uidl_record rec;

	return pop3_policy_uidl_record_decode(data, size, &rec, error_r);
}

static bool test_decode_schema(const void *data, size_t size,
			       const char **error_r)
{
	struct pop3_policy_schema_record rec;

	return pop3_policy_schema_record_decode(data, size, &rec, error_r);
}

static bool test_decode_flag(const void *data, size_t size,
			     const char **error_r)
{
	struct pop3_policy_flag_record rec;

	return pop3_policy_flag_record_decode(data, size, &rec, error_r);
}

static bool test_decode_sweep(const void *data, size_t size,
			      const char **error_r)
{
	struct pop3_policy_sweep_record rec;

	return pop3_policy_sweep_record_decode(data, size, &rec, error_r);
}

static bool test_decode_download_value(const void *data, size_t size,
				       const char **error_r)
{
	return pop3_policy_download_value_decode(data, size, error_r);
}

/* Every strict prefix fails, the whole passes, a trailing byte fails,
   another version byte fails, and flipping any byte never crashes. */
static void test_decode_robust(const buffer_t *buf, test_decode_func_t *decode)
{
	const char *error;
	unsigned char *copy;
	size_t i;
	unsigned int b;

	for (i = 0; i < buf->used; i++) {
		copy = test_dup_exact(buf->data, i);
		error = NULL;
		test_assert_idx(!decode(copy, i, &error), i);
		test_assert_idx(error != NULL, i);
		free(copy);
	}
	copy = test_dup_exact(buf->data, buf->used);
	test_assert(decode(copy, buf->used, &error));
	copy[0] = POP3_POLICY_RECORD_VERSION + 1;
	test_assert(!decode(copy, buf->used, &error));
	free(copy);

	T_BEGIN {
		buffer_t *longer = t_buffer_create(buf->used + 1);

		buffer_append_buf(longer, buf, 0, SIZE_MAX);
		buffer_append_c(longer, 0);
		copy = test_dup_exact(longer->data, longer->used);
		test_assert(!decode(copy, longer->used, &error));
		free(copy);
	} T_END;

	for (i = 1; i < buf->used; i++) {
		for (b = 0; b < 8; b++) {
			copy = test_dup_exact(buf->data, buf->used);
			copy[i] ^= 1 << b;
			(void)decode(copy, buf->used, &error);
			free(copy);
		}
	}
}

static void test_msg_record(void)
{
	struct pop3_policy_msg_record rec, rec2;
	const char *error;
	buffer_t *buf;

	test_begin("pop3 policy msg record");
	buf = t_buffer_create(128);
	i_zero(&rec);
	rec.flags = POP3_POLICY_MSG_FLAG_HIDDEN;
	rec.first_download = 0x0102030405060708ULL;
	rec.uidl = "000000016b046644";
	rec.guid = "1795450436.M767662P19511.vm,S=743,W=760";
	pop3_policy_msg_record_encode(buf, &rec);
	/* version byte first, integers big-endian */
	test_assert(((const unsigned char *)buf->data)[0] ==
		    POP3_POLICY_RECORD_VERSION);
	test_assert(((const unsigned char *)buf->data)[2] == 0x01);
	test_assert(((const unsigned char *)buf->data)[9] == 0x08);
	test_assert(pop3_policy_msg_record_decode(buf->data, buf->used,
						  &rec2, &error));
	test_assert(rec2.flags == rec.flags);
	test_assert(rec2.first_download == rec.first_download);
	test_assert_strcmp(rec2.uidl, rec.uidl);
	test_assert_strcmp(rec2.guid, rec.guid);
	test_decode_robust(buf, test_decode_msg);

	/* no UIDL yet */
	buffer_set_used_size(buf, 0);
	rec.uidl = "";
	pop3_policy_msg_record_encode(buf, &rec);
	test_assert(pop3_policy_msg_record_decode(buf->data, buf->used,
						  &rec2, &error));
	test_assert_strcmp(rec2.uidl, "");

	/* an empty GUID or an invalid UIDL is corruption */
	buffer_set_used_size(buf, 0);
	rec.guid = "";
	pop3_policy_msg_record_encode(buf, &rec);
	test_assert(!pop3_policy_msg_record_decode(buf->data, buf->used,
						   &rec2, &error));
	buffer_set_used_size(buf, 0);
	rec.guid = "g";
	rec.uidl = "has space";
	pop3_policy_msg_record_encode(buf, &rec);
	test_assert(!pop3_policy_msg_record_decode(buf->data, buf->used,
						   &rec2, &error));
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
	pop3_policy_uidl_record_encode(buf, &urec);
	test_assert(pop3_policy_uidl_record_decode(buf->data, buf->used,
						   &urec2, &error));
	test_assert_strcmp(urec2.guid, "abc");
	test_decode_robust(buf, test_decode_uidl);

	buffer_set_used_size(buf, 0);
	pop3_policy_schema_record_encode(buf, &srec);
	test_assert(pop3_policy_schema_record_decode(buf->data, buf->used,
						     &srec2, &error));
	test_assert(srec2.schema_version == srec.schema_version);
	test_assert(srec2.created == srec.created);
	test_decode_robust(buf, test_decode_schema);

	buffer_set_used_size(buf, 0);
	pop3_policy_flag_record_encode(buf, &frec);
	test_assert(pop3_policy_flag_record_decode(buf->data, buf->used,
						   &frec2, &error));
	test_assert_strcmp(frec2.keyword, "$POP3Deleted");
	test_decode_robust(buf, test_decode_flag);
	test_end();
}

static void test_sweep_record(void)
{
	struct pop3_policy_sweep_record rec = { .last_sweep = 1700000000 },
		rec2;
	const char *error;
	buffer_t *buf = t_buffer_create(16);

	test_begin("pop3 policy sweep record and downloads value");
	pop3_policy_sweep_record_encode(buf, &rec);
	test_assert(pop3_policy_sweep_record_decode(buf->data, buf->used,
						    &rec2, &error));
	test_assert(rec2.last_sweep == rec.last_sweep);
	test_decode_robust(buf, test_decode_sweep);

	buffer_set_used_size(buf, 0);
	pop3_policy_download_value_encode(buf);
	test_assert(buf->used == 1);
	test_assert(pop3_policy_download_value_decode(buf->data, buf->used,
						      &error));
	test_decode_robust(buf, test_decode_download_value);
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
		test_uidl_rules,
		test_keep_days,
		test_quota_math,
		NULL
	};
	return test_run(tests);
}
