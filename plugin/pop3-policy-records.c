/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "str.h"
#include "hex-binary.h"
#include "md5.h"
#include "pop3-policy-records.h"

struct pop3_policy_reader {
	const unsigned char *data;
	size_t size, pos;
	const char *error;
};

static void
pop3_policy_reader_init(struct pop3_policy_reader *r, const void *data,
			size_t size)
{
	i_zero(r);
	r->data = data;
	r->size = size;
}

static bool pop3_policy_reader_fail(struct pop3_policy_reader *r,
				    const char *error)
{
	if (r->error == NULL)
		r->error = error;
	return FALSE;
}

static bool pop3_policy_read_u8(struct pop3_policy_reader *r, uint8_t *v_r)
{
	if (r->error != NULL || r->size - r->pos < 1)
		return pop3_policy_reader_fail(r, "truncated record");
	*v_r = r->data[r->pos++];
	return TRUE;
}

static bool pop3_policy_read_u16(struct pop3_policy_reader *r, uint16_t *v_r)
{
	if (r->error != NULL || r->size - r->pos < 2)
		return pop3_policy_reader_fail(r, "truncated record");
	*v_r = ((uint16_t)r->data[r->pos] << 8) | r->data[r->pos+1];
	r->pos += 2;
	return TRUE;
}

static bool pop3_policy_read_u32(struct pop3_policy_reader *r, uint32_t *v_r)
{
	uint32_t v = 0;
	unsigned int i;

	if (r->error != NULL || r->size - r->pos < 4)
		return pop3_policy_reader_fail(r, "truncated record");
	for (i = 0; i < 4; i++)
		v = (v << 8) | r->data[r->pos++];
	*v_r = v;
	return TRUE;
}

static bool pop3_policy_read_u64(struct pop3_policy_reader *r, uint64_t *v_r)
{
	uint64_t v = 0;
	unsigned int i;

	if (r->error != NULL || r->size - r->pos < 8)
		return pop3_policy_reader_fail(r, "truncated record");
	for (i = 0; i < 8; i++)
		v = (v << 8) | r->data[r->pos++];
	*v_r = v;
	return TRUE;
}

/* u16 length + bytes, which must not contain NULs (they become C
   strings) */
static bool
pop3_policy_read_str(struct pop3_policy_reader *r, size_t max_len,
		     const char **str_r)
{
	uint16_t len;

	if (!pop3_policy_read_u16(r, &len))
		return FALSE;
	if (len > max_len)
		return pop3_policy_reader_fail(r, "string too long");
	if (r->size - r->pos < len)
		return pop3_policy_reader_fail(r, "truncated string");
	if (memchr(r->data + r->pos, '\0', len) != NULL)
		return pop3_policy_reader_fail(r, "NUL in string");
	*str_r = t_strndup(r->data + r->pos, len);
	r->pos += len;
	return TRUE;
}

static bool
pop3_policy_read_version(struct pop3_policy_reader *r)
{
	uint8_t version;

	if (!pop3_policy_read_u8(r, &version))
		return FALSE;
	if (version != POP3_POLICY_RECORD_VERSION) {
		return pop3_policy_reader_fail(r, t_strdup_printf(
			"unsupported record version %u", version));
	}
	return TRUE;
}

static bool pop3_policy_reader_finish(struct pop3_policy_reader *r,
				      const char **error_r)
{
	if (r->error == NULL && r->pos != r->size)
		r->error = "trailing bytes after record";
	if (r->error != NULL) {
		*error_r = r->error;
		return FALSE;
	}
	return TRUE;
}

static void pop3_policy_write_u16(buffer_t *buf, uint16_t v)
{
	uint8_t b[2] = { v >> 8, v & 0xff };

	buffer_append(buf, b, sizeof(b));
}

static void pop3_policy_write_u32(buffer_t *buf, uint32_t v)
{
	uint8_t b[4];
	unsigned int i;

	for (i = 0; i < 4; i++)
		b[i] = (v >> (8 * (3 - i))) & 0xff;
	buffer_append(buf, b, sizeof(b));
}

static void pop3_policy_write_u64(buffer_t *buf, uint64_t v)
{
	uint8_t b[8];
	unsigned int i;

	for (i = 0; i < 8; i++)
		b[i] = (v >> (8 * (7 - i))) & 0xff;
	buffer_append(buf, b, sizeof(b));
}

static void pop3_policy_write_str(buffer_t *buf, const char *str)
{
	size_t len = strlen(str);

	/* callers validate lengths; a longer string is a bug */
	i_assert(len <= (uint16_t)-1);
	pop3_policy_write_u16(buf, len);
	buffer_append(buf, str, len);
}

void pop3_policy_msg_record_encode(buffer_t *buf,
				   const struct pop3_policy_msg_record *rec)
{
	buffer_append_c(buf, POP3_POLICY_RECORD_VERSION);
	buffer_append_c(buf, rec->flags);
	pop3_policy_write_u64(buf, rec->first_download);
	pop3_policy_write_str(buf, rec->uidl == NULL ? "" : rec->uidl);
	pop3_policy_write_str(buf, rec->guid);
}

bool pop3_policy_msg_record_decode(const void *data, size_t size,
				   struct pop3_policy_msg_record *rec_r,
				   const char **error_r)
{
	struct pop3_policy_reader r;

	i_zero(rec_r);
	pop3_policy_reader_init(&r, data, size);
	if (pop3_policy_read_version(&r) &&
	    pop3_policy_read_u8(&r, &rec_r->flags) &&
	    pop3_policy_read_u64(&r, &rec_r->first_download) &&
	    pop3_policy_read_str(&r, POP3_POLICY_UIDL_MAX_LEN, &rec_r->uidl) &&
	    pop3_policy_read_str(&r, POP3_POLICY_GUID_MAX_LEN, &rec_r->guid)) {
		if (rec_r->guid[0] == '\0')
			pop3_policy_reader_fail(&r, "empty GUID");
		else if (rec_r->uidl[0] != '\0' &&
			 !pop3_policy_uidl_is_valid(rec_r->uidl))
			pop3_policy_reader_fail(&r, "invalid UIDL");
	}
	return pop3_policy_reader_finish(&r, error_r);
}

void pop3_policy_uidl_record_encode(buffer_t *buf,
				    const struct pop3_policy_uidl_record *rec)
{
	buffer_append_c(buf, POP3_POLICY_RECORD_VERSION);
	pop3_policy_write_str(buf, rec->guid);
}

bool pop3_policy_uidl_record_decode(const void *data, size_t size,
				    struct pop3_policy_uidl_record *rec_r,
				    const char **error_r)
{
	struct pop3_policy_reader r;

	i_zero(rec_r);
	pop3_policy_reader_init(&r, data, size);
	if (pop3_policy_read_version(&r) &&
	    pop3_policy_read_str(&r, POP3_POLICY_GUID_MAX_LEN, &rec_r->guid) &&
	    rec_r->guid[0] == '\0')
		pop3_policy_reader_fail(&r, "empty GUID");
	return pop3_policy_reader_finish(&r, error_r);
}

void pop3_policy_schema_record_encode(buffer_t *buf,
				      const struct pop3_policy_schema_record *rec)
{
	buffer_append_c(buf, POP3_POLICY_RECORD_VERSION);
	pop3_policy_write_u32(buf, rec->schema_version);
	pop3_policy_write_u64(buf, rec->created);
}

bool pop3_policy_schema_record_decode(const void *data, size_t size,
				      struct pop3_policy_schema_record *rec_r,
				      const char **error_r)
{
	struct pop3_policy_reader r;

	i_zero(rec_r);
	pop3_policy_reader_init(&r, data, size);
	if (pop3_policy_read_version(&r) &&
	    pop3_policy_read_u32(&r, &rec_r->schema_version))
		(void)pop3_policy_read_u64(&r, &rec_r->created);
	return pop3_policy_reader_finish(&r, error_r);
}

void pop3_policy_flag_record_encode(buffer_t *buf,
				    const struct pop3_policy_flag_record *rec)
{
	buffer_append_c(buf, POP3_POLICY_RECORD_VERSION);
	pop3_policy_write_str(buf, rec->keyword);
}

bool pop3_policy_flag_record_decode(const void *data, size_t size,
				    struct pop3_policy_flag_record *rec_r,
				    const char **error_r)
{
	struct pop3_policy_reader r;

	i_zero(rec_r);
	pop3_policy_reader_init(&r, data, size);
	if (pop3_policy_read_version(&r))
		(void)pop3_policy_read_str(&r, 1024, &rec_r->keyword);
	return pop3_policy_reader_finish(&r, error_r);
}

void pop3_policy_sweep_record_encode(buffer_t *buf,
				     const struct pop3_policy_sweep_record *rec)
{
	buffer_append_c(buf, POP3_POLICY_RECORD_VERSION);
	pop3_policy_write_u64(buf, rec->last_sweep);
}

bool pop3_policy_sweep_record_decode(const void *data, size_t size,
				     struct pop3_policy_sweep_record *rec_r,
				     const char **error_r)
{
	struct pop3_policy_reader r;

	i_zero(rec_r);
	pop3_policy_reader_init(&r, data, size);
	if (pop3_policy_read_version(&r))
		(void)pop3_policy_read_u64(&r, &rec_r->last_sweep);
	return pop3_policy_reader_finish(&r, error_r);
}

void pop3_policy_download_key_encode(buffer_t *buf, uint64_t first_download,
				     const char *msg_key)
{
	pop3_policy_write_u64(buf, first_download);
	buffer_append(buf, msg_key, strlen(msg_key));
}

bool pop3_policy_download_key_decode(const void *data, size_t size,
				     uint64_t *first_download_r,
				     const char **msg_key_r,
				     const char **error_r)
{
	struct pop3_policy_reader r;
	size_t key_len;

	pop3_policy_reader_init(&r, data, size);
	if (!pop3_policy_read_u64(&r, first_download_r))
		return pop3_policy_reader_finish(&r, error_r);
	key_len = r.size - r.pos;
	/* a msgs key: a GUID of at most POP3_POLICY_GUID_KEY_MAX_LEN bytes
	   or a digest key, never empty, no NULs */
	if (*first_download_r == 0)
		pop3_policy_reader_fail(&r, "download time 0");
	else if (key_len == 0)
		pop3_policy_reader_fail(&r, "empty message key");
	else if (key_len > POP3_POLICY_GUID_KEY_MAX_LEN)
		pop3_policy_reader_fail(&r, "message key too long");
	else if (memchr(r.data + r.pos, '\0', key_len) != NULL)
		pop3_policy_reader_fail(&r, "NUL in message key");
	else {
		*msg_key_r = t_strndup(r.data + r.pos, key_len);
		r.pos = r.size;
	}
	return pop3_policy_reader_finish(&r, error_r);
}

void pop3_policy_download_value_encode(buffer_t *buf)
{
	buffer_append_c(buf, POP3_POLICY_RECORD_VERSION);
}

bool pop3_policy_download_value_decode(const void *data, size_t size,
				       const char **error_r)
{
	struct pop3_policy_reader r;

	pop3_policy_reader_init(&r, data, size);
	(void)pop3_policy_read_version(&r);
	return pop3_policy_reader_finish(&r, error_r);
}

const char *pop3_policy_msg_key(const char *guid)
{
	unsigned char digest[MD5_RESULTLEN];

	if (strlen(guid) <= POP3_POLICY_GUID_KEY_MAX_LEN)
		return guid;
	/* a GUID never starts with a NUL, so digests can't collide with
	   GUIDs used as keys directly */
	md5_get_digest(guid, strlen(guid), digest);
	return t_strconcat("\x01md5:", binary_to_hex(digest, sizeof(digest)),
			   NULL);
}

bool pop3_policy_uidl_is_valid(const char *str)
{
	size_t i;

	for (i = 0; str[i] != '\0'; i++) {
		if (i >= POP3_POLICY_UIDL_MAX_LEN ||
		    (unsigned char)str[i] < 0x21 ||
		    (unsigned char)str[i] > 0x7e)
			return FALSE;
	}
	return i > 0;
}

const char *pop3_policy_uidl_candidate(const char *base, unsigned int n)
{
	const char *suffix;
	size_t base_len;

	if (n == 0)
		return base;
	suffix = t_strdup_printf("-%u", n);
	base_len = strlen(base);
	if (base_len + strlen(suffix) > POP3_POLICY_UIDL_MAX_LEN) {
		base_len = POP3_POLICY_UIDL_MAX_LEN - strlen(suffix);
		/* a base of the full length that already ends in the
		   suffix would come back unchanged: one shorter differs
		   from it and from every other candidate (all of the full
		   length) */
		if (strcmp(base + base_len, suffix) == 0)
			base_len--;
	}
	return t_strconcat(t_strndup(base, base_len), suffix, NULL);
}

const char *pop3_policy_uidl_sanitize(const char *uidl)
{
	unsigned char digest[MD5_RESULTLEN];

	if (pop3_policy_uidl_is_valid(uidl))
		return uidl;
	md5_get_digest(uidl, strlen(uidl), digest);
	return binary_to_hex(digest, sizeof(digest));
}

bool pop3_policy_keep_days_due(uint64_t first_download,
			       unsigned int keep_days, time_t now)
{
	uint64_t keep_secs;

	if (keep_days == 0 || first_download == 0 || now < 0)
		return FALSE;
	keep_secs = (uint64_t)keep_days * POP3_POLICY_SECS_PER_DAY;
	if (first_download > (uint64_t)-1 - keep_secs)
		return FALSE;
	return first_download + keep_secs <= (uint64_t)now;
}

static uint64_t
pop3_policy_quota_need_one(int64_t used, uint64_t ceil, uint64_t over,
			   uint64_t add)
{
	/* need = over + used + add - ceil, in signed arithmetic that can't
	   overflow for realistic quota sizes; an unlimited ceiling never
	   needs anything unless we're already over */
	int64_t need;

	if (ceil == (uint64_t)-1)
		return over;
	if (ceil > INT64_MAX / 2)
		ceil = INT64_MAX / 2;
	if (over > INT64_MAX / 4)
		over = INT64_MAX / 4;
	if (add > INT64_MAX / 4)
		add = INT64_MAX / 4;
	need = (int64_t)over + used + (int64_t)add - (int64_t)ceil;
	return need <= 0 ? 0 : (uint64_t)need;
}

void pop3_policy_quota_needed(const struct pop3_policy_quota_state *state,
			      uint64_t size, uint64_t *bytes_needed_r,
			      uint64_t *count_needed_r)
{
	*bytes_needed_r = pop3_policy_quota_need_one(state->bytes_used,
		state->bytes_ceil, state->bytes_over, size);
	*count_needed_r = pop3_policy_quota_need_one(state->count_used,
		state->count_ceil, state->count_over, 1);
}

static void
pop3_policy_quota_credit_one(uint64_t *ceil, uint64_t *over, uint64_t freed)
{
	if (freed == 0)
		return;
	if (*over >= freed) {
		*over -= freed;
		return;
	}
	freed -= *over;
	*over = 0;
	if (*ceil != (uint64_t)-1)
		*ceil = *ceil > (uint64_t)-1 - 1 - freed ? (uint64_t)-2 :
			*ceil + freed;
}

void pop3_policy_quota_credit(struct pop3_policy_quota_state *state,
			      uint64_t bytes_freed, uint64_t count_freed)
{
	pop3_policy_quota_credit_one(&state->bytes_ceil, &state->bytes_over,
				     bytes_freed);
	pop3_policy_quota_credit_one(&state->count_ceil, &state->count_over,
				     count_freed);
}
