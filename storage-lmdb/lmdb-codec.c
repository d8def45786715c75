/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "lmdb-crc32.h"
#include "lmdb-records.h"
#include "lmdb-codec.h"

/* A version-2 value is: version (2), CRC-32, fields. The CRC-32 covers
   the record type, the key and everything after the CRC, so trailing
   fields a later revision appends are covered too. */

/* --- writing --- */

void lmdb_writer_init(struct lmdb_writer *w, buffer_t *buf)
{
	w->buf = buf;
	w->start = buf->used;
	w->error = NULL;
	buffer_append_c(buf, LMDB_RECORD_VERSION);
	buffer_append_zero(buf, 4);
}

void lmdb_put_u8(struct lmdb_writer *w, uint8_t v)
{
	buffer_append_c(w->buf, v);
}

void lmdb_put_u16(struct lmdb_writer *w, uint16_t v)
{
	unsigned char b[2] = { v >> 8, v & 0xff };
	buffer_append(w->buf, b, sizeof(b));
}

void lmdb_put_u32(struct lmdb_writer *w, uint32_t v)
{
	unsigned char b[4];

	cpu32_to_be_unaligned(v, b);
	buffer_append(w->buf, b, sizeof(b));
}

void lmdb_put_u64(struct lmdb_writer *w, uint64_t v)
{
	unsigned char b[8];

	cpu64_to_be_unaligned(v, b);
	buffer_append(w->buf, b, sizeof(b));
}

/* A string field; valid is what the field allows (checked by the caller,
   which knows the field), max_len bounds the length. */
void lmdb_put_str16(struct lmdb_writer *w, const char *str, size_t max_len,
		      bool valid, const char *what)
{
	size_t len = str == NULL ? 0 : strlen(str);

	if (len > max_len || !valid) {
		if (w->error == NULL) {
			w->error = t_strdup_printf(
				"%s can't be stored (%zu bytes%s)", what, len,
				len > max_len ? ", too long" : ", invalid");
		}
		len = 0;
	}
	lmdb_put_u16(w, len);
	buffer_append(w->buf, str, len);
}

uint32_t
lmdb_record_crc(enum lmdb_record_type type, const void *key, size_t key_size,
		const void *fields, size_t fields_size)
{
	uint8_t t = type;
	uint32_t crc;

	crc = lmdb_crc32(&t, 1);
	crc = lmdb_crc32_update(crc, key, key_size);
	return lmdb_crc32_update(crc, fields, fields_size);
}

/* Seal the record with its checksum, or take it back out of the buffer
   if a field couldn't be stored. */
bool lmdb_writer_finish(struct lmdb_writer *w, enum lmdb_record_type type,
			  const void *key, size_t key_size,
			  const char **error_r)
{
	unsigned char *data;
	size_t hdr = w->start + LMDB_RECORD_HDR_SIZE;
	uint32_t crc;

	if (w->error != NULL) {
		buffer_set_used_size(w->buf, w->start);
		*error_r = w->error;
		return FALSE;
	}
	data = buffer_get_modifiable_data(w->buf, NULL);
	crc = lmdb_record_crc(type, key, key_size, data + hdr,
			      w->buf->used - hdr);
	cpu32_to_be_unaligned(crc, data + w->start + 1);
	return TRUE;
}

/* --- reading --- */

void lmdb_reader_init(struct lmdb_reader *r, const void *data, size_t size)
{
	r->p = data;
	r->end = r->p + size;
	r->error = NULL;
}

static bool reader_need(struct lmdb_reader *r, size_t n, const char *what)
{
	if (r->error != NULL)
		return FALSE;
	if ((size_t)(r->end - r->p) < n) {
		r->error = t_strdup_printf("truncated record at %s", what);
		return FALSE;
	}
	return TRUE;
}

uint8_t lmdb_get_u8(struct lmdb_reader *r, const char *what)
{
	if (!reader_need(r, 1, what))
		return 0;
	return *r->p++;
}

uint16_t lmdb_get_u16(struct lmdb_reader *r, const char *what)
{
	uint16_t v;

	if (!reader_need(r, 2, what))
		return 0;
	v = (r->p[0] << 8) | r->p[1];
	r->p += 2;
	return v;
}

uint32_t lmdb_get_u32(struct lmdb_reader *r, const char *what)
{
	uint32_t v;

	if (!reader_need(r, 4, what))
		return 0;
	v = be32_to_cpu_unaligned(r->p);
	r->p += 4;
	return v;
}

uint64_t lmdb_get_u64(struct lmdb_reader *r, const char *what)
{
	uint64_t v;

	if (!reader_need(r, 8, what))
		return 0;
	v = be64_to_cpu_unaligned(r->p);
	r->p += 8;
	return v;
}

void lmdb_get_bytes(struct lmdb_reader *r, void *dest, size_t n,
		      const char *what)
{
	if (!reader_need(r, n, what)) {
		memset(dest, 0, n);
		return;
	}
	if (n > 0)
		memcpy(dest, r->p, n);
	r->p += n;
}

/* Strings must not contain NULs: they come back as C strings. */
const char *
lmdb_get_str(struct lmdb_reader *r, pool_t pool, size_t len, size_t max_len,
	const char *what)
{
	const char *str;

	if (len > max_len) {
		if (r->error == NULL) {
			r->error = t_strdup_printf("%s too long (%zu bytes)",
						   what, len);
		}
		return "";
	}
	if (!reader_need(r, len, what))
		return "";
	if (memchr(r->p, '\0', len) != NULL) {
		r->error = t_strdup_printf("%s contains NUL", what);
		return "";
	}
	str = p_strndup(pool, r->p, len);
	r->p += len;
	return str;
}

const char *lmdb_get_str16(struct lmdb_reader *r, pool_t pool,
			     size_t max_len, const char *what)
{
	uint16_t len = lmdb_get_u16(r, what);

	return lmdb_get_str(r, pool, len, max_len, what);
}

void lmdb_reader_invalid(struct lmdb_reader *r, const char *what)
{
	if (r->error == NULL)
		r->error = t_strdup_printf("invalid %s", what);
}

const char *lmdb_record_type_name(enum lmdb_record_type type)
{
	switch (type) {
	case LMDB_RECORD_TYPE_ENV:
		return "env";
	case LMDB_RECORD_TYPE_BODY:
		return "body";
	case LMDB_RECORD_TYPE_LINK:
		return "link";
	case LMDB_RECORD_TYPE_MAILBOX:
		return "mailbox";
	case LMDB_RECORD_TYPE_GC:
		return "gc";
	case LMDB_RECORD_TYPE_CHUNK:
		return "chunk";
	case LMDB_RECORD_TYPE_QUARANTINE:
		return "quarantine";
	case LMDB_RECORD_TYPE_UIDL:
		return "uidl";
	}
	return "unknown";
}

/* Start reading a version-2 record: check its version and checksum. */
bool lmdb_reader_open(struct lmdb_reader *r, enum lmdb_record_type type,
	    const void *key, size_t key_size, const void *data, size_t size)
{
	const unsigned char *p = data;
	uint32_t crc;

	lmdb_reader_init(r, data, size);
	if (size < LMDB_RECORD_HDR_SIZE) {
		r->error = t_strdup_printf("%s record too short (%zu bytes)",
					   lmdb_record_type_name(type), size);
		return FALSE;
	}
	if (p[0] != LMDB_RECORD_VERSION) {
		r->error = t_strdup_printf("%s record has version %u, "
					   "expected %u",
					   lmdb_record_type_name(type), p[0],
					   LMDB_RECORD_VERSION);
		return FALSE;
	}
	crc = lmdb_record_crc(type, key, key_size, p + LMDB_RECORD_HDR_SIZE,
			      size - LMDB_RECORD_HDR_SIZE);
	if (crc != be32_to_cpu_unaligned(p + 1)) {
		r->error = t_strdup_printf("%s record checksum mismatch",
					   lmdb_record_type_name(type));
		return FALSE;
	}
	r->p += LMDB_RECORD_HDR_SIZE;
	return TRUE;
}

/* Start reading a schema-1 record (no checksum). */
bool lmdb_reader_open_v1(struct lmdb_reader *r, enum lmdb_record_type type,
			   const void *data, size_t size)
{
	uint8_t version;

	lmdb_reader_init(r, data, size);
	version = lmdb_get_u8(r, "version");
	if (r->error == NULL && version != LMDB_RECORD_VERSION_1) {
		r->error = t_strdup_printf("%s record has version %u, "
					   "expected %u",
					   lmdb_record_type_name(type), version,
					   LMDB_RECORD_VERSION_1);
	}
	return r->error == NULL;
}

/* Trailing bytes are allowed: a newer minor revision of the same version
   may append fields, and older readers must keep working. */
bool lmdb_reader_finish(struct lmdb_reader *r, const char **error_r)
{
	if (r->error != NULL) {
		*error_r = r->error;
		return FALSE;
	}
	return TRUE;
}

