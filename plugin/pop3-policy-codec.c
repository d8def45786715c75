/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "crc32.h"
#include "pop3-policy-codec.h"

/* The bytes of the policy records: bounds-checked reads, big-endian
   writes, and the header every value starts with (version 2 and the CRC
   over type, key and fields; version 1 for the schema conversion). */

void pop3_policy_reader_init(struct pop3_policy_reader *r, const void *data,
			     size_t size)
{
	i_zero(r);
	r->data = data;
	r->size = size;
}

bool pop3_policy_reader_fail(struct pop3_policy_reader *r, const char *error)
{
	if (r->error == NULL)
		r->error = error;
	return FALSE;
}

bool pop3_policy_read_u8(struct pop3_policy_reader *r, uint8_t *v_r)
{
	if (r->error != NULL || r->size - r->pos < 1)
		return pop3_policy_reader_fail(r, "truncated record");
	*v_r = r->data[r->pos++];
	return TRUE;
}

bool pop3_policy_read_u16(struct pop3_policy_reader *r, uint16_t *v_r)
{
	if (r->error != NULL || r->size - r->pos < 2)
		return pop3_policy_reader_fail(r, "truncated record");
	*v_r = ((uint16_t)r->data[r->pos] << 8) | r->data[r->pos+1];
	r->pos += 2;
	return TRUE;
}

bool pop3_policy_read_u32(struct pop3_policy_reader *r, uint32_t *v_r)
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

bool pop3_policy_read_u64(struct pop3_policy_reader *r, uint64_t *v_r)
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
bool
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

uint32_t
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
bool
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

bool pop3_policy_read_header_v1(struct pop3_policy_reader *r)
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

bool pop3_policy_reader_finish(struct pop3_policy_reader *r,
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

void pop3_policy_write_u16(buffer_t *buf, uint16_t v)
{
	uint8_t b[2] = { v >> 8, v & 0xff };

	buffer_append(buf, b, sizeof(b));
}

void pop3_policy_write_u32(buffer_t *buf, uint32_t v)
{
	uint8_t b[4];
	unsigned int i;

	for (i = 0; i < 4; i++)
		b[i] = (v >> (8 * (3 - i))) & 0xff;
	buffer_append(buf, b, sizeof(b));
}

void pop3_policy_write_u64(buffer_t *buf, uint64_t v)
{
	uint8_t b[8];
	unsigned int i;

	for (i = 0; i < 8; i++)
		b[i] = (v >> (8 * (7 - i))) & 0xff;
	buffer_append(buf, b, sizeof(b));
}

void pop3_policy_write_header(buffer_t *buf, size_t *start_r)
{
	static const uint8_t header[POP3_POLICY_RECORD_HEADER_SIZE] = {
		POP3_POLICY_RECORD_VERSION, 0, 0, 0, 0
	};

	*start_r = buf->used;
	buffer_append(buf, header, sizeof(header));
}

/* Fill in the CRC of the record started at start, now that its fields
   are written. */
void
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

void pop3_policy_write_str(buffer_t *buf, const char *str)
{
	size_t len = strlen(str);

	/* callers validate lengths; a longer string is a bug */
	i_assert(len <= (uint16_t)-1);
	pop3_policy_write_u16(buf, len);
	buffer_append(buf, str, len);
}

