/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "pop3-policy-codec.h"

/* The fields of each record type, after the header: the same in
   versions 1 and 2. */
static void
pop3_policy_msg_fields_write(buffer_t *buf,
			     const struct pop3_policy_msg_record *rec)
{
	buffer_append_c(buf, rec->flags);
	pop3_policy_write_u64(buf, rec->first_download);
	pop3_policy_write_str(buf, rec->uidl == NULL ? "" : rec->uidl);
	pop3_policy_write_str(buf, rec->guid);
}

static bool
pop3_policy_msg_fields_read(struct pop3_policy_reader *r,
			    struct pop3_policy_msg_record *rec_r)
{
	if (!pop3_policy_read_u8(r, &rec_r->flags) ||
	    !pop3_policy_read_u64(r, &rec_r->first_download) ||
	    !pop3_policy_read_str(r, POP3_POLICY_UIDL_MAX_LEN, &rec_r->uidl) ||
	    !pop3_policy_read_str(r, POP3_POLICY_GUID_MAX_LEN, &rec_r->guid))
		return FALSE;
	if (rec_r->guid[0] == '\0')
		return pop3_policy_reader_fail(r, "empty GUID");
	if (rec_r->uidl[0] != '\0' && !pop3_policy_uidl_is_valid(rec_r->uidl))
		return pop3_policy_reader_fail(r, "invalid UIDL");
	return TRUE;
}

static bool
pop3_policy_uidl_fields_read(struct pop3_policy_reader *r,
			     struct pop3_policy_uidl_record *rec_r)
{
	if (!pop3_policy_read_str(r, POP3_POLICY_GUID_MAX_LEN, &rec_r->guid))
		return FALSE;
	if (rec_r->guid[0] == '\0')
		return pop3_policy_reader_fail(r, "empty GUID");
	return TRUE;
}

static bool
pop3_policy_schema_fields_read(struct pop3_policy_reader *r,
			       struct pop3_policy_schema_record *rec_r)
{
	return pop3_policy_read_u32(r, &rec_r->schema_version) &&
		pop3_policy_read_u64(r, &rec_r->created);
}

static bool
pop3_policy_flag_fields_read(struct pop3_policy_reader *r,
			     struct pop3_policy_flag_record *rec_r)
{
	return pop3_policy_read_str(r, POP3_POLICY_FLAG_KEYWORD_MAX_LEN,
				    &rec_r->keyword);
}

static bool
pop3_policy_sweep_fields_read(struct pop3_policy_reader *r,
			      struct pop3_policy_sweep_record *rec_r)
{
	return pop3_policy_read_u64(r, &rec_r->last_sweep);
}

static bool
pop3_policy_fields_read(struct pop3_policy_reader *r,
			enum pop3_policy_record_type type)
{
	union {
		struct pop3_policy_msg_record msg;
		struct pop3_policy_uidl_record uidl;
		struct pop3_policy_schema_record schema;
		struct pop3_policy_flag_record flag;
		struct pop3_policy_sweep_record sweep;
	} rec;

	i_zero(&rec);
	switch (type) {
	case POP3_POLICY_RECORD_TYPE_SCHEMA:
		return pop3_policy_schema_fields_read(r, &rec.schema);
	case POP3_POLICY_RECORD_TYPE_FLAG:
		return pop3_policy_flag_fields_read(r, &rec.flag);
	case POP3_POLICY_RECORD_TYPE_SWEEP:
		return pop3_policy_sweep_fields_read(r, &rec.sweep);
	case POP3_POLICY_RECORD_TYPE_MSG:
		return pop3_policy_msg_fields_read(r, &rec.msg);
	case POP3_POLICY_RECORD_TYPE_UIDL:
		return pop3_policy_uidl_fields_read(r, &rec.uidl);
	case POP3_POLICY_RECORD_TYPE_DOWNLOAD:
		/* no fields: the key is the entry */
		return TRUE;
	}
	return pop3_policy_reader_fail(r, "unknown record type");
}

void pop3_policy_msg_record_encode(buffer_t *buf, const void *key,
				   size_t key_size,
				   const struct pop3_policy_msg_record *rec)
{
	size_t start;

	pop3_policy_write_header(buf, &start);
	pop3_policy_msg_fields_write(buf, rec);
	pop3_policy_write_crc(buf, start, POP3_POLICY_RECORD_TYPE_MSG,
			      key, key_size);
}

bool pop3_policy_msg_record_decode(const void *key, size_t key_size,
				   const void *data, size_t size,
				   struct pop3_policy_msg_record *rec_r,
				   const char **error_r)
{
	struct pop3_policy_reader r;

	i_zero(rec_r);
	pop3_policy_reader_init(&r, data, size);
	if (pop3_policy_read_header(&r, POP3_POLICY_RECORD_TYPE_MSG,
				    key, key_size))
		(void)pop3_policy_msg_fields_read(&r, rec_r);
	return pop3_policy_reader_finish(&r, error_r);
}

void pop3_policy_uidl_record_encode(buffer_t *buf, const void *key,
				    size_t key_size,
				    const struct pop3_policy_uidl_record *rec)
{
	size_t start;

	pop3_policy_write_header(buf, &start);
	pop3_policy_write_str(buf, rec->guid);
	pop3_policy_write_crc(buf, start, POP3_POLICY_RECORD_TYPE_UIDL,
			      key, key_size);
}

bool pop3_policy_uidl_record_decode(const void *key, size_t key_size,
				    const void *data, size_t size,
				    struct pop3_policy_uidl_record *rec_r,
				    const char **error_r)
{
	struct pop3_policy_reader r;

	i_zero(rec_r);
	pop3_policy_reader_init(&r, data, size);
	if (pop3_policy_read_header(&r, POP3_POLICY_RECORD_TYPE_UIDL,
				    key, key_size))
		(void)pop3_policy_uidl_fields_read(&r, rec_r);
	return pop3_policy_reader_finish(&r, error_r);
}

void pop3_policy_schema_record_encode(buffer_t *buf,
				      const struct pop3_policy_schema_record *rec)
{
	size_t start;

	pop3_policy_write_header(buf, &start);
	pop3_policy_write_u32(buf, rec->schema_version);
	pop3_policy_write_u64(buf, rec->created);
	pop3_policy_write_crc(buf, start, POP3_POLICY_RECORD_TYPE_SCHEMA,
			      POP3_POLICY_META_KEY_SCHEMA,
			      strlen(POP3_POLICY_META_KEY_SCHEMA));
}

bool pop3_policy_schema_record_decode(const void *data, size_t size,
				      struct pop3_policy_schema_record *rec_r,
				      const char **error_r)
{
	struct pop3_policy_reader r;

	i_zero(rec_r);
	pop3_policy_reader_init(&r, data, size);
	if (pop3_policy_read_header(&r, POP3_POLICY_RECORD_TYPE_SCHEMA,
				    POP3_POLICY_META_KEY_SCHEMA,
				    strlen(POP3_POLICY_META_KEY_SCHEMA)))
		(void)pop3_policy_schema_fields_read(&r, rec_r);
	return pop3_policy_reader_finish(&r, error_r);
}

bool pop3_policy_schema_record_decode_v1(const void *data, size_t size,
					 struct pop3_policy_schema_record *rec_r,
					 const char **error_r)
{
	struct pop3_policy_reader r;

	i_zero(rec_r);
	pop3_policy_reader_init(&r, data, size);
	if (pop3_policy_read_header_v1(&r))
		(void)pop3_policy_schema_fields_read(&r, rec_r);
	if (r.error == NULL && r.pos == r.size &&
	    rec_r->schema_version >= 3) {
		/* version-1 records end with schema 2 */
		pop3_policy_reader_fail(&r, t_strdup_printf(
			"version-1 record of schema %u",
			rec_r->schema_version));
	}
	return pop3_policy_reader_finish(&r, error_r);
}

void pop3_policy_flag_record_encode(buffer_t *buf,
				    const struct pop3_policy_flag_record *rec)
{
	size_t start;

	pop3_policy_write_header(buf, &start);
	pop3_policy_write_str(buf, rec->keyword);
	pop3_policy_write_crc(buf, start, POP3_POLICY_RECORD_TYPE_FLAG,
			      POP3_POLICY_META_KEY_FLAG,
			      strlen(POP3_POLICY_META_KEY_FLAG));
}

bool pop3_policy_flag_record_decode(const void *data, size_t size,
				    struct pop3_policy_flag_record *rec_r,
				    const char **error_r)
{
	struct pop3_policy_reader r;

	i_zero(rec_r);
	pop3_policy_reader_init(&r, data, size);
	if (pop3_policy_read_header(&r, POP3_POLICY_RECORD_TYPE_FLAG,
				    POP3_POLICY_META_KEY_FLAG,
				    strlen(POP3_POLICY_META_KEY_FLAG)))
		(void)pop3_policy_flag_fields_read(&r, rec_r);
	return pop3_policy_reader_finish(&r, error_r);
}

void pop3_policy_sweep_record_encode(buffer_t *buf,
				     const struct pop3_policy_sweep_record *rec)
{
	size_t start;

	pop3_policy_write_header(buf, &start);
	pop3_policy_write_u64(buf, rec->last_sweep);
	pop3_policy_write_crc(buf, start, POP3_POLICY_RECORD_TYPE_SWEEP,
			      POP3_POLICY_META_KEY_SWEEP,
			      strlen(POP3_POLICY_META_KEY_SWEEP));
}

bool pop3_policy_sweep_record_decode(const void *data, size_t size,
				     struct pop3_policy_sweep_record *rec_r,
				     const char **error_r)
{
	struct pop3_policy_reader r;

	i_zero(rec_r);
	pop3_policy_reader_init(&r, data, size);
	if (pop3_policy_read_header(&r, POP3_POLICY_RECORD_TYPE_SWEEP,
				    POP3_POLICY_META_KEY_SWEEP,
				    strlen(POP3_POLICY_META_KEY_SWEEP)))
		(void)pop3_policy_sweep_fields_read(&r, rec_r);
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

void pop3_policy_download_value_encode(buffer_t *buf, const void *key,
				       size_t key_size)
{
	size_t start;

	pop3_policy_write_header(buf, &start);
	pop3_policy_write_crc(buf, start, POP3_POLICY_RECORD_TYPE_DOWNLOAD,
			      key, key_size);
}

bool pop3_policy_download_value_decode(const void *key, size_t key_size,
				       const void *data, size_t size,
				       const char **error_r)
{
	struct pop3_policy_reader r;

	pop3_policy_reader_init(&r, data, size);
	(void)pop3_policy_read_header(&r, POP3_POLICY_RECORD_TYPE_DOWNLOAD,
				      key, key_size);
	return pop3_policy_reader_finish(&r, error_r);
}

bool pop3_policy_record_upgrade_v1(enum pop3_policy_record_type type,
				   const void *key, size_t key_size,
				   const void *data, size_t size,
				   buffer_t *out, const char **error_r)
{
	struct pop3_policy_reader r;
	size_t start, fields_pos = 0;

	pop3_policy_reader_init(&r, data, size);
	if (pop3_policy_read_header_v1(&r)) {
		fields_pos = r.pos;
		(void)pop3_policy_fields_read(&r, type);
	}
	if (!pop3_policy_reader_finish(&r, error_r))
		return FALSE;
	/* the fields are the same in both versions */
	pop3_policy_write_header(out, &start);
	buffer_append(out, r.data + fields_pos, r.size - fields_pos);
	pop3_policy_write_crc(out, start, type, key, key_size);
	return TRUE;
}
