/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The record codecs of the pop3_policy plugin (pop3-policy-records.c)
   and the pure rules beside them. The first byte picks what the rest of
   the input is:
   0-6  u8 mode, a key (u16 length + bytes; ignored by the "meta"
        records, whose keys are fixed, and by the downloads key), then a
        value for one decoder (msg, uidl, schema, flag, sweep record,
        downloads key, downloads value). Mode bit 0 seals the value with
        a correct CRC over type, key and fields before decoding (so the
        fields get fuzzed, not only the CRC). A decoded record encodes
        back under the same key to exactly the input (no trailing bytes,
        no reserved fields) and is refused under the key with one bit
        flipped; decoded strings are checked against the field's rule.
        Mode bit 1 feeds the value to the schema conversion instead
        (pop3_policy_record_upgrade_v1()): what it accepts, the decoder
        reads back with the same fields, and it is the input's fields
        behind a new header.
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

#define MODE_SEAL 0x01
#define MODE_UPGRADE 0x02

struct check_input {
	unsigned char *value;
	size_t size;
	const unsigned char *key;
	size_t key_size;
	uint8_t mode;
};

static void check_failed(const char *error)
{
	fuzz_assert(error != NULL && error[0] != '\0');
}

/* the key with its first bit flipped, or NULL for an empty key */
static const unsigned char *
flipped_key(const struct check_input *in)
{
	unsigned char *key;

	if (in->key_size == 0)
		return NULL;
	key = t_malloc_no0(in->key_size);
	memcpy(key, in->key, in->key_size);
	key[0] ^= 0x01;
	return key;
}

/* Mode bit 1: the schema conversion of a version-1 value. Returns TRUE
   (and the converted value in out) if it took the value. */
static bool
check_upgrade(const struct check_input *in, enum pop3_policy_record_type type,
	      const void *key, size_t key_size, buffer_t *out)
{
	const char *error = NULL;

	if (!pop3_policy_record_upgrade_v1(type, key, key_size, in->value,
					   in->size, out, &error)) {
		check_failed(error);
		fuzz_assert(out->used == 0);
		return FALSE;
	}
	fuzz_assert(in->size >= 1 && in->value[0] == 1);
	fuzz_assert(out->used == in->size + 4);
	fuzz_assert(((const unsigned char *)out->data)[0] ==
		    POP3_POLICY_RECORD_VERSION);
	fuzz_assert_bytes("upgraded fields", in->value + 1, in->size - 1,
			  CONST_PTR_OFFSET(out->data, 5), out->used - 5);
	return TRUE;
}

static void check_msg(const struct check_input *in)
{
	struct pop3_policy_msg_record rec, rec2;
	buffer_t *out = t_buffer_create(in->size + 8);
	const unsigned char *value = in->value, *key2;
	size_t size = in->size;
	const char *error = NULL;

	if ((in->mode & MODE_UPGRADE) != 0) {
		if (!check_upgrade(in, POP3_POLICY_RECORD_TYPE_MSG, in->key,
				   in->key_size, out))
			return;
		value = out->data;
		size = out->used;
		out = t_buffer_create(size + 1);
	}
	if (!pop3_policy_msg_record_decode(in->key, in->key_size, value, size,
					   &rec, &error)) {
		fuzz_assert((in->mode & MODE_UPGRADE) == 0);
		check_failed(error);
		return;
	}
	fuzz_assert(rec.guid[0] != '\0');
	fuzz_assert(strlen(rec.guid) <= POP3_POLICY_GUID_MAX_LEN);
	fuzz_assert(rec.uidl[0] == '\0' || pop3_policy_uidl_is_valid(rec.uidl));
	pop3_policy_msg_record_encode(out, in->key, in->key_size, &rec);
	fuzz_assert_bytes("msg record", value, size, out->data, out->used);
	key2 = flipped_key(in);
	fuzz_assert(key2 == NULL ||
		    !pop3_policy_msg_record_decode(key2, in->key_size, value,
						   size, &rec2, &error));
}

static void check_uidl(const struct check_input *in)
{
	struct pop3_policy_uidl_record rec, rec2;
	buffer_t *out = t_buffer_create(in->size + 8);
	const unsigned char *value = in->value, *key2;
	size_t size = in->size;
	const char *error = NULL;

	if ((in->mode & MODE_UPGRADE) != 0) {
		if (!check_upgrade(in, POP3_POLICY_RECORD_TYPE_UIDL, in->key,
				   in->key_size, out))
			return;
		value = out->data;
		size = out->used;
		out = t_buffer_create(size + 1);
	}
	if (!pop3_policy_uidl_record_decode(in->key, in->key_size, value,
					    size, &rec, &error)) {
		fuzz_assert((in->mode & MODE_UPGRADE) == 0);
		check_failed(error);
		return;
	}
	fuzz_assert(rec.guid[0] != '\0');
	pop3_policy_uidl_record_encode(out, in->key, in->key_size, &rec);
	fuzz_assert_bytes("uidl record", value, size, out->data, out->used);
	key2 = flipped_key(in);
	fuzz_assert(key2 == NULL ||
		    !pop3_policy_uidl_record_decode(key2, in->key_size, value,
						    size, &rec2, &error));
}

static void check_schema(const struct check_input *in)
{
	struct pop3_policy_schema_record rec;
	buffer_t *out = t_buffer_create(in->size + 8);
	const unsigned char *value = in->value;
	size_t size = in->size;
	const char *error = NULL;
	bool v1_ok;

	if ((in->mode & MODE_UPGRADE) != 0) {
		/* the schema record is read as version 1, not converted */
		v1_ok = pop3_policy_schema_record_decode_v1(value, size, &rec,
							    &error);
		if (!v1_ok)
			check_failed(error);
		else
			fuzz_assert(rec.schema_version < 3);
		return;
	}
	if (!pop3_policy_schema_record_decode(value, size, &rec, &error)) {
		check_failed(error);
		return;
	}
	pop3_policy_schema_record_encode(out, &rec);
	fuzz_assert_bytes("schema record", value, size, out->data, out->used);
}

static void check_flag(const struct check_input *in)
{
	struct pop3_policy_flag_record rec;
	buffer_t *out = t_buffer_create(in->size + 8);
	const unsigned char *value = in->value;
	size_t size = in->size;
	const char *error = NULL;

	if ((in->mode & MODE_UPGRADE) != 0) {
		if (!check_upgrade(in, POP3_POLICY_RECORD_TYPE_FLAG,
				   POP3_POLICY_META_KEY_FLAG,
				   strlen(POP3_POLICY_META_KEY_FLAG), out))
			return;
		value = out->data;
		size = out->used;
		out = t_buffer_create(size + 1);
	}
	if (!pop3_policy_flag_record_decode(value, size, &rec, &error)) {
		fuzz_assert((in->mode & MODE_UPGRADE) == 0);
		check_failed(error);
		return;
	}
	fuzz_assert(rec.keyword != NULL);
	pop3_policy_flag_record_encode(out, &rec);
	fuzz_assert_bytes("flag record", value, size, out->data, out->used);
}

static void check_sweep(const struct check_input *in)
{
	struct pop3_policy_sweep_record rec;
	buffer_t *out = t_buffer_create(in->size + 8);
	const unsigned char *value = in->value;
	size_t size = in->size;
	const char *error = NULL;

	if ((in->mode & MODE_UPGRADE) != 0) {
		if (!check_upgrade(in, POP3_POLICY_RECORD_TYPE_SWEEP,
				   POP3_POLICY_META_KEY_SWEEP,
				   strlen(POP3_POLICY_META_KEY_SWEEP), out))
			return;
		value = out->data;
		size = out->used;
		out = t_buffer_create(size + 1);
	}
	if (!pop3_policy_sweep_record_decode(value, size, &rec, &error)) {
		fuzz_assert((in->mode & MODE_UPGRADE) == 0);
		check_failed(error);
		return;
	}
	pop3_policy_sweep_record_encode(out, &rec);
	fuzz_assert_bytes("sweep record", value, size, out->data, out->used);
}

static void check_download_key(const struct check_input *in)
{
	buffer_t *out = t_buffer_create(in->size + 1);
	const char *msg_key = NULL, *error = NULL;
	uint64_t first_download;

	if (!pop3_policy_download_key_decode(in->value, in->size,
					     &first_download, &msg_key,
					     &error)) {
		check_failed(error);
		return;
	}
	fuzz_assert(first_download != 0);
	fuzz_assert(msg_key != NULL && msg_key[0] != '\0');
	fuzz_assert(strlen(msg_key) <= POP3_POLICY_GUID_KEY_MAX_LEN);
	pop3_policy_download_key_encode(out, first_download, msg_key);
	fuzz_assert_bytes("downloads key", in->value, in->size, out->data,
			  out->used);
}

static void check_download_value(const struct check_input *in)
{
	buffer_t *out = t_buffer_create(8);
	const unsigned char *value = in->value, *key2;
	size_t size = in->size;
	const char *error = NULL;

	if ((in->mode & MODE_UPGRADE) != 0) {
		if (!check_upgrade(in, POP3_POLICY_RECORD_TYPE_DOWNLOAD,
				   in->key, in->key_size, out))
			return;
		value = out->data;
		size = out->used;
		out = t_buffer_create(8);
	}
	if (!pop3_policy_download_value_decode(in->key, in->key_size, value,
					       size, &error)) {
		fuzz_assert((in->mode & MODE_UPGRADE) == 0);
		check_failed(error);
		return;
	}
	pop3_policy_download_value_encode(out, in->key, in->key_size);
	fuzz_assert_bytes("downloads value", value, size, out->data,
			  out->used);
	key2 = flipped_key(in);
	fuzz_assert(key2 == NULL ||
		    !pop3_policy_download_value_decode(key2, in->key_size,
						       value, size, &error));
}

static const struct {
	void (*check)(const struct check_input *in);
	/* for sealing: 0 = not a value (the downloads key) */
	enum pop3_policy_record_type type;
	/* a fixed key (the "meta" records) */
	const char *meta_key;
} checks[] = {
	{ check_msg, POP3_POLICY_RECORD_TYPE_MSG, NULL },
	{ check_uidl, POP3_POLICY_RECORD_TYPE_UIDL, NULL },
	{ check_schema, POP3_POLICY_RECORD_TYPE_SCHEMA,
	  POP3_POLICY_META_KEY_SCHEMA },
	{ check_flag, POP3_POLICY_RECORD_TYPE_FLAG,
	  POP3_POLICY_META_KEY_FLAG },
	{ check_sweep, POP3_POLICY_RECORD_TYPE_SWEEP,
	  POP3_POLICY_META_KEY_SWEEP },
	{ check_download_key, 0, NULL },
	{ check_download_value, POP3_POLICY_RECORD_TYPE_DOWNLOAD, NULL },
};

static void check_value(struct fuzz_input *fin, unsigned int what)
{
	struct check_input in;
	const unsigned char *p;
	void *key_copy;

	i_zero(&in);
	in.mode = fuzz_u8(fin);
	in.key_size = fuzz_slice(fin, 511, &p);
	in.key = key_copy = fuzz_dup(p, in.key_size);
	in.size = fuzz_bytes(fin, SIZE_MAX, &p);
	in.value = fuzz_dup(p, in.size);
	if (checks[what].meta_key != NULL) {
		in.key = (const void *)checks[what].meta_key;
		in.key_size = strlen(checks[what].meta_key);
	}
	if ((in.mode & (MODE_SEAL | MODE_UPGRADE)) == MODE_SEAL &&
	    checks[what].type != 0)
		fuzz_seal(in.value, in.size, checks[what].type, in.key,
			  in.key_size);
	checks[what].check(&in);
	free(in.value);
	free(key_copy);
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
		else if (what == 7) {
			value_size = fuzz_bytes(&in, SIZE_MAX, &p);
			value = fuzz_dup(p, value_size);
			check_uidl_rules(value, value_size);
			free(value);
		} else {
			check_value(&in, what);
		}
	} T_END;
	return 0;
}
