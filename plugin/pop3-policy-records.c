/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "crc32.h"
#include "pop3-policy-records.h"

/* Version 2 (schema 3): u8 version 2, u32 CRC-32 over the record type
   byte, the key and every value byte after the CRC, then the fields.
   Version 1 (schemas 1 and 2): u8 version 1, then the same fields. Only
   the schema conversion reads version 1 (pop3_policy_record_upgrade_v1()):
   every decoder refuses it. */
#define POP3_POLICY_RECORD_HEADER_SIZE (1 + 4)

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

static uint32_t
pop3_policy_record_crc(enum pop3_policy_record_type type, const void *key,
		       size_t key_size, const void *fields, size_t fields_size)
{
	uint8_t type_byte = type;
	uint32_t crc;

	crc = crc32_data(&type_byte, 1);
	crc = crc32_data_more(crc, key, key_size);
	return crc32_data_more(crc, fields, fields_size);
}

/* The version and the checksum: a version-1 record is refused like any
   other damage (after the conversion to schema 3 none is left; one found
   is a record the conversion couldn't decode, or written by a module of
   schema 2 that should have refused the environment). */
static bool
pop3_policy_read_header(struct pop3_policy_reader *r,
			enum pop3_policy_record_type type, const void *key,
			size_t key_size)
{
	uint32_t crc;
	uint8_t version;

	if (!pop3_policy_read_u8(r, &version))
		return FALSE;
	if (version == POP3_POLICY_RECORD_VERSION_V1) {
		return pop3_policy_reader_fail(r,
			"unconverted version-1 record");
	}
	if (version != POP3_POLICY_RECORD_VERSION) {
		return pop3_policy_reader_fail(r, t_strdup_printf(
			"unsupported record version %u", version));
	}
	if (!pop3_policy_read_u32(r, &crc))
		return FALSE;
	if (crc != pop3_policy_record_crc(type, key, key_size,
					  r->data + r->pos,
					  r->size - r->pos))
		return pop3_policy_reader_fail(r, "checksum mismatch");
	return TRUE;
}

static bool pop3_policy_read_header_v1(struct pop3_policy_reader *r)
{
	uint8_t version;

	if (!pop3_policy_read_u8(r, &version))
		return FALSE;
	if (version != POP3_POLICY_RECORD_VERSION_V1) {
		return pop3_policy_reader_fail(r, t_strdup_printf(
			"not a version-1 record (version %u)", version));
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

static void pop3_policy_write_header(buffer_t *buf, size_t *start_r)
{
	static const uint8_t header[POP3_POLICY_RECORD_HEADER_SIZE] = {
		POP3_POLICY_RECORD_VERSION, 0, 0, 0, 0
	};

	*start_r = buf->used;
	buffer_append(buf, header, sizeof(header));
}

/* Fill in the CRC of the record started at start, now that its fields
   are written. */
static void
pop3_policy_write_crc(buffer_t *buf, size_t start,
		      enum pop3_policy_record_type type, const void *key,
		      size_t key_size)
{
	const unsigned char *fields =
		CONST_PTR_OFFSET(buf->data, start + POP3_POLICY_RECORD_HEADER_SIZE);
	uint32_t crc;
	uint8_t b[4];
	unsigned int i;

	crc = pop3_policy_record_crc(type, key, key_size, fields,
		buf->used - start - POP3_POLICY_RECORD_HEADER_SIZE);
	for (i = 0; i < 4; i++)
		b[i] = (crc >> (8 * (3 - i))) & 0xff;
	buffer_write(buf, start + 1, b, sizeof(b));
}

static void pop3_policy_write_str(buffer_t *buf, const char *str)
{
	size_t len = strlen(str);

	/* callers validate lengths; a longer string is a bug */
	i_assert(len <= (uint16_t)-1);
	pop3_policy_write_u16(buf, len);
	buffer_append(buf, str, len);
}

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
	return pop3_policy_read_str(r, 1024, &rec_r->keyword);
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
