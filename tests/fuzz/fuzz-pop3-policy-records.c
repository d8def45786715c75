/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The record codecs of the pop3_policy plugin (pop3-policy-records.c)
   and the pure rules beside them. The first byte picks what the rest of
   the input is:
   0-6  a value for one decoder (msg, uidl, schema, flag, sweep record,
        downloads key, downloads value). A decoded record encodes back to
        exactly the input: these formats allow no trailing bytes and have
        no reserved fields. Decoded strings are checked against the
        field's rule (GUID not empty, a UIDL empty or valid).
   7    a string for the UIDL rules: a sanitized UIDL is valid (and the
        string itself when it was), every candidate is valid, at most 70
        characters and distinct from the others; a message key is the
        GUID, or for a long one a digest key that can't be a GUID.
   8    keep_days_due(u64 first download, u32 days, i64 now): never for
        0 days, never downloaded or negative now, and monotonic in now.
   9    the quota arithmetic over a state from the input (values within
        what Dovecot's quota transaction can hold): never negative, and
        crediting what is needed makes room. */

#include "lib.h"
#include "buffer.h"
#include "pop3-policy-records.h"
#include "fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_msg(const unsigned char *data, size_t size)
{
	struct pop3_policy_msg_record rec;
	buffer_t *out = t_buffer_create(size + 1);
	const char *error = NULL;

	if (!pop3_policy_msg_record_decode(data, size, &rec, &error)) {
		fuzz_assert(error != NULL && error[0] != '\0');
		return;
	}
	fuzz_assert(rec.guid[0] != '\0');
	fuzz_assert(strlen(rec.guid) <= POP3_POLICY_GUID_MAX_LEN);
	fuzz_assert(rec.uidl[0] == '\0' || pop3_policy_uidl_is_valid(rec.uidl));
	pop3_policy_msg_record_encode(out, &rec);
	fuzz_assert_bytes("msg record", data, size, out->data, out->used);
}

static void check_uidl(const unsigned char *data, size_t size)
{
	struct pop3_policy_uidl_record rec;
	buffer_t *out = t_buffer_create(size + 1);
	const char *error = NULL;

	if (!pop3_policy_uidl_record_decode(data, size, &rec, &error)) {
		fuzz_assert(error != NULL && error[0] != '\0');
		return;
	}
	fuzz_assert(rec.guid[0] != '\0');
	pop3_policy_uidl_record_encode(out, &rec);
	fuzz_assert_bytes("uidl record", data, size, out->data, out->used);
}

static void check_schema(const unsigned char *data, size_t size)
{
	struct pop3_policy_schema_record rec;
	buffer_t *out = t_buffer_create(size + 1);
	const char *error = NULL;

	if (!pop3_policy_schema_record_decode(data, size, &rec, &error)) {
		fuzz_assert(error != NULL && error[0] != '\0');
		return;
	}
	pop3_policy_schema_record_encode(out, &rec);
	fuzz_assert_bytes("schema record", data, size, out->data, out->used);
}

static void check_flag(const unsigned char *data, size_t size)
{
	struct pop3_policy_flag_record rec;
	buffer_t *out = t_buffer_create(size + 1);
	const char *error = NULL;

	if (!pop3_policy_flag_record_decode(data, size, &rec, &error)) {
		fuzz_assert(error != NULL && error[0] != '\0');
		return;
	}
	fuzz_assert(rec.keyword != NULL);
	pop3_policy_flag_record_encode(out, &rec);
	fuzz_assert_bytes("flag record", data, size, out->data, out->used);
}

static void check_sweep(const unsigned char *data, size_t size)
{
	struct pop3_policy_sweep_record rec;
	buffer_t *out = t_buffer_create(size + 1);
	const char *error = NULL;

	if (!pop3_policy_sweep_record_decode(data, size, &rec, &error)) {
		fuzz_assert(error != NULL && error[0] != '\0');
		return;
	}
	pop3_policy_sweep_record_encode(out, &rec);
	fuzz_assert_bytes("sweep record", data, size, out->data, out->used);
}

static void check_download_key(const unsigned char *data, size_t size)
{
	buffer_t *out = t_buffer_create(size + 1);
	const char *msg_key = NULL, *error = NULL;
	uint64_t first_download;

	if (!pop3_policy_download_key_decode(data, size, &first_download,
					     &msg_key, &error)) {
		fuzz_assert(error != NULL && error[0] != '\0');
		return;
	}
	fuzz_assert(first_download != 0);
	fuzz_assert(msg_key != NULL && msg_key[0] != '\0');
	fuzz_assert(strlen(msg_key) <= POP3_POLICY_GUID_KEY_MAX_LEN);
	pop3_policy_download_key_encode(out, first_download, msg_key);
	fuzz_assert_bytes("downloads key", data, size, out->data, out->used);
}

static void check_download_value(const unsigned char *data, size_t size)
{
	buffer_t *out = t_buffer_create(4);
	const char *error = NULL;

	if (!pop3_policy_download_value_decode(data, size, &error)) {
		fuzz_assert(error != NULL && error[0] != '\0');
		return;
	}
	pop3_policy_download_value_encode(out);
	fuzz_assert_bytes("downloads value", data, size, out->data, out->used);
}

static void check_uidl_rules(const unsigned char *data, size_t size)
{
	const char *str = t_strndup(data, size), *sanitized, *key;
	const char *cand, *prev = NULL;
	unsigned int n;

	sanitized = pop3_policy_uidl_sanitize(str);
	fuzz_assert(pop3_policy_uidl_is_valid(sanitized));
	if (pop3_policy_uidl_is_valid(str))
		fuzz_assert(strcmp(sanitized, str) == 0);
	for (n = 0; n < 12; n++) {
		cand = pop3_policy_uidl_candidate(sanitized,
						  n < 10 ? n : n * 100003);
		fuzz_assert(pop3_policy_uidl_is_valid(cand));
		fuzz_assert(strlen(cand) <= POP3_POLICY_UIDL_MAX_LEN);
		fuzz_assert(prev == NULL || strcmp(cand, prev) != 0);
		if (n == 0)
			fuzz_assert(strcmp(cand, sanitized) == 0);
		prev = cand;
	}
	if (str[0] != '\0') {
		key = pop3_policy_msg_key(str);
		fuzz_assert(strlen(key) <= POP3_POLICY_GUID_KEY_MAX_LEN);
		if (strlen(str) <= POP3_POLICY_GUID_KEY_MAX_LEN)
			fuzz_assert(strcmp(key, str) == 0);
		else
			fuzz_assert(key[0] == '\x01');
	}
}

static void check_keep_days(struct fuzz_input *in)
{
	uint64_t first = fuzz_u64(in);
	unsigned int days = fuzz_u32(in);
	time_t now = (time_t)fuzz_u64(in), later;
	bool due = pop3_policy_keep_days_due(first, days, now);

	if (days == 0 || first == 0 || now < 0)
		fuzz_assert(!due);
	if (due) {
		fuzz_assert((uint64_t)now >= first);
		/* still due later */
		later = (time_t)((uint64_t)now + fuzz_u32(in));
		if (later >= now)
			fuzz_assert(pop3_policy_keep_days_due(first, days,
							      later));
	}
}

static int64_t bounded_i64(struct fuzz_input *in)
{
	/* a quota transaction's change, in bytes or messages */
	return (int64_t)(fuzz_u64(in) % (1ULL << 61)) - (int64_t)(1ULL << 60);
}

static uint64_t quota_limit(struct fuzz_input *in)
{
	uint64_t v = fuzz_u64(in);

	/* unlimited, or any value */
	return (v & 0xff) == 0xff ? (uint64_t)-1 : v >> 2;
}

static void check_quota(struct fuzz_input *in)
{
	struct pop3_policy_quota_state state, state2;
	uint64_t size = fuzz_u64(in) >> 4, bytes, count, bytes2, count2;

	i_zero(&state);
	state.bytes_used = bounded_i64(in);
	state.count_used = bounded_i64(in);
	state.bytes_ceil = quota_limit(in);
	state.count_ceil = quota_limit(in);
	state.bytes_over = fuzz_u64(in) >> 4;
	state.count_over = fuzz_u64(in) >> 4;
	pop3_policy_quota_needed(&state, size, &bytes, &count);
	if (state.bytes_ceil == (uint64_t)-1)
		fuzz_assert(bytes == state.bytes_over);
	state2 = state;
	pop3_policy_quota_credit(&state2, bytes, count);
	pop3_policy_quota_needed(&state2, size, &bytes2, &count2);
	/* freeing what was needed is enough (the clamps aside) */
	if (state.bytes_ceil < (1ULL << 60) && state.bytes_over < (1ULL << 58) &&
	    size < (1ULL << 58))
		fuzz_assert(bytes2 == 0);
	if (state.count_ceil < (1ULL << 60) && state.count_over < (1ULL << 58))
		fuzz_assert(count2 == 0);
}

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	fuzz_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in;
	const unsigned char *p;
	unsigned char *value;
	size_t value_size;
	uint8_t what;

	fuzz_input_init(&in, data, size);
	what = fuzz_u8(&in) % 10;
	T_BEGIN {
		if (what == 8)
			check_keep_days(&in);
		else if (what == 9)
			check_quota(&in);
		else {
			value_size = fuzz_bytes(&in, SIZE_MAX, &p);
			value = fuzz_dup(p, value_size);
			switch (what) {
			case 0: check_msg(value, value_size); break;
			case 1: check_uidl(value, value_size); break;
			case 2: check_schema(value, value_size); break;
			case 3: check_flag(value, value_size); break;
			case 4: check_sweep(value, value_size); break;
			case 5: check_download_key(value, value_size); break;
			case 6: check_download_value(value, value_size); break;
			case 7: check_uidl_rules(value, value_size); break;
			}
			free(value);
		}
	} T_END;
	return 0;
}
