/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "lmdb-crc32.h"
#include "lmdb-records.h"

/* All integers are stored big-endian, so keys sort numerically and the
   format does not depend on the host. */

struct lmdb_reader {
	const unsigned char *p, *end;
	const char *error;
};

static void put_u8(buffer_t *buf, uint8_t v)
{
	buffer_append_c(buf, v);
}

static void put_u16(buffer_t *buf, uint16_t v)
{
	unsigned char b[2] = { v >> 8, v & 0xff };
	buffer_append(buf, b, sizeof(b));
}

static void put_u32(buffer_t *buf, uint32_t v)
{
	unsigned char b[4];

	cpu32_to_be_unaligned(v, b);
	buffer_append(buf, b, sizeof(b));
}

static void put_u64(buffer_t *buf, uint64_t v)
{
	unsigned char b[8];

	cpu64_to_be_unaligned(v, b);
	buffer_append(buf, b, sizeof(b));
}

static void put_str16(buffer_t *buf, const char *str, size_t max_len)
{
	size_t len = str == NULL ? 0 : strlen(str);

	i_assert(len <= max_len && len <= 0xffff);
	put_u16(buf, len);
	buffer_append(buf, str, len);
}

static void reader_init(struct lmdb_reader *r, const void *data, size_t size)
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

static uint8_t get_u8(struct lmdb_reader *r, const char *what)
{
	if (!reader_need(r, 1, what))
		return 0;
	return *r->p++;
}

static uint16_t get_u16(struct lmdb_reader *r, const char *what)
{
	uint16_t v;

	if (!reader_need(r, 2, what))
		return 0;
	v = (r->p[0] << 8) | r->p[1];
	r->p += 2;
	return v;
}

static uint32_t get_u32(struct lmdb_reader *r, const char *what)
{
	uint32_t v;

	if (!reader_need(r, 4, what))
		return 0;
	v = be32_to_cpu_unaligned(r->p);
	r->p += 4;
	return v;
}

static uint64_t get_u64(struct lmdb_reader *r, const char *what)
{
	uint64_t v;

	if (!reader_need(r, 8, what))
		return 0;
	v = be64_to_cpu_unaligned(r->p);
	r->p += 8;
	return v;
}

static void get_bytes(struct lmdb_reader *r, void *dest, size_t n,
		      const char *what)
{
	if (!reader_need(r, n, what)) {
		memset(dest, 0, n);
		return;
	}
	memcpy(dest, r->p, n);
	r->p += n;
}

/* Strings must not contain NULs: they come back as C strings. */
static const char *
get_str(struct lmdb_reader *r, pool_t pool, size_t len, size_t max_len,
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

static const char *get_str16(struct lmdb_reader *r, pool_t pool,
			     size_t max_len, const char *what)
{
	uint16_t len = get_u16(r, what);

	return get_str(r, pool, len, max_len, what);
}

static bool reader_check_version(struct lmdb_reader *r, const char *type)
{
	uint8_t version = get_u8(r, "version");

	if (r->error != NULL)
		return FALSE;
	if (version == 0 || version > LMDB_RECORD_VERSION) {
		r->error = t_strdup_printf("%s record has unknown version %u",
					   type, version);
		return FALSE;
	}
	return TRUE;
}

/* Trailing bytes are allowed: a newer minor revision of the same version
   may append fields, and older readers must keep working. */
static bool reader_finish(struct lmdb_reader *r, const char **error_r)
{
	if (r->error != NULL) {
		*error_r = r->error;
		return FALSE;
	}
	return TRUE;
}

void lmdb_body_id_encode(uint64_t body_id,
			 unsigned char key_r[LMDB_BODY_ID_SIZE])
{
	cpu64_to_be_unaligned(body_id, key_r);
}

bool lmdb_body_id_decode(const void *data, size_t size, uint64_t *body_id_r)
{
	if (size != LMDB_BODY_ID_SIZE)
		return FALSE;
	*body_id_r = be64_to_cpu_unaligned(data);
	return TRUE;
}

void lmdb_link_key_encode(const guid_128_t mailbox_guid, uint32_t uid,
			  unsigned char key_r[LMDB_LINK_KEY_SIZE])
{
	memcpy(key_r, mailbox_guid, GUID_128_SIZE);
	cpu32_to_be_unaligned(uid, key_r + GUID_128_SIZE);
}

bool lmdb_link_key_decode(const void *data, size_t size,
			  guid_128_t mailbox_guid_r, uint32_t *uid_r)
{
	const unsigned char *p = data;

	if (size != LMDB_LINK_KEY_SIZE)
		return FALSE;
	memcpy(mailbox_guid_r, p, GUID_128_SIZE);
	*uid_r = be32_to_cpu_unaligned(p + GUID_128_SIZE);
	return TRUE;
}

void lmdb_chunk_key_encode(uint64_t body_id, uint32_t chunk_idx,
			   unsigned char key_r[LMDB_CHUNK_KEY_SIZE])
{
	cpu64_to_be_unaligned(body_id, key_r);
	cpu32_to_be_unaligned(chunk_idx, key_r + LMDB_BODY_ID_SIZE);
}

bool lmdb_chunk_key_decode(const void *data, size_t size,
			   uint64_t *body_id_r, uint32_t *chunk_idx_r)
{
	const unsigned char *p = data;

	if (size != LMDB_CHUNK_KEY_SIZE)
		return FALSE;
	*body_id_r = be64_to_cpu_unaligned(p);
	*chunk_idx_r = be32_to_cpu_unaligned(p + LMDB_BODY_ID_SIZE);
	return TRUE;
}

void lmdb_gc_key_encode(enum lmdb_gc_kind kind, int64_t since,
			uint64_t body_id, unsigned char key_r[LMDB_GC_KEY_SIZE])
{
	key_r[0] = kind;
	cpu64_to_be_unaligned(since < 0 ? 0 : (uint64_t)since, key_r + 1);
	cpu64_to_be_unaligned(body_id, key_r + 9);
}

bool lmdb_gc_key_decode(const void *data, size_t size,
			enum lmdb_gc_kind *kind_r, int64_t *since_r,
			uint64_t *body_id_r)
{
	const unsigned char *p = data;
	uint64_t since;

	if (size != LMDB_GC_KEY_SIZE ||
	    (p[0] != LMDB_GC_KIND_PENDING && p[0] != LMDB_GC_KIND_DEAD))
		return FALSE;
	since = be64_to_cpu_unaligned(p + 1);
	if (since > INT64_MAX)
		return FALSE;
	*kind_r = p[0];
	*since_r = (int64_t)since;
	*body_id_r = be64_to_cpu_unaligned(p + 9);
	return TRUE;
}

void lmdb_env_record_encode(buffer_t *buf, const struct lmdb_env_record *rec)
{
	put_u8(buf, LMDB_RECORD_VERSION);
	put_u32(buf, rec->schema_version);
	put_u64(buf, rec->generation);
	put_u64(buf, rec->next_body_id);
	put_u64(buf, rec->created);
	put_u64(buf, rec->links);
	put_u64(buf, rec->link_vsize_bytes);
	put_u64(buf, rec->bodies);
	put_u64(buf, rec->body_bytes);
	put_u64(buf, rec->last_purge);
}

bool lmdb_env_record_decode(const void *data, size_t size,
			    struct lmdb_env_record *rec_r,
			    const char **error_r)
{
	struct lmdb_reader r;

	i_zero(rec_r);
	reader_init(&r, data, size);
	if (!reader_check_version(&r, "env"))
		return reader_finish(&r, error_r);
	rec_r->schema_version = get_u32(&r, "schema_version");
	rec_r->generation = get_u64(&r, "generation");
	rec_r->next_body_id = get_u64(&r, "next_body_id");
	rec_r->created = get_u64(&r, "created");
	rec_r->links = get_u64(&r, "links");
	rec_r->link_vsize_bytes = get_u64(&r, "link_vsize_bytes");
	rec_r->bodies = get_u64(&r, "bodies");
	rec_r->body_bytes = get_u64(&r, "body_bytes");
	rec_r->last_purge = get_u64(&r, "last_purge");
	return reader_finish(&r, error_r);
}

void lmdb_body_record_encode(buffer_t *buf, const struct lmdb_body_record *rec)
{
	put_u8(buf, LMDB_RECORD_VERSION);
	put_u8(buf, rec->state);
	put_u16(buf, 0);
	put_u32(buf, rec->refcount);
	put_u64(buf, rec->physical_size);
	put_u64(buf, rec->message_size);
	put_u64(buf, rec->virtual_size);
	put_u64(buf, (uint64_t)rec->received_date);
	put_u64(buf, (uint64_t)rec->save_date);
	put_u64(buf, (uint64_t)rec->state_since);
	put_u32(buf, rec->chunk_count);
	put_u32(buf, rec->chunk_size);
	buffer_append(buf, rec->sha256, LMDB_SHA256_SIZE);
	buffer_append(buf, rec->orig_mailbox_guid, GUID_128_SIZE);
	put_str16(buf, rec->guid, LMDB_GUID_MAX_LEN);
}

bool lmdb_body_record_decode(const void *data, size_t size, pool_t pool,
			     struct lmdb_body_record *rec_r,
			     const char **error_r)
{
	struct lmdb_reader r;
	uint8_t state;

	i_zero(rec_r);
	rec_r->guid = "";
	reader_init(&r, data, size);
	if (!reader_check_version(&r, "body"))
		return reader_finish(&r, error_r);
	state = get_u8(&r, "state");
	(void)get_u16(&r, "reserved");
	rec_r->refcount = get_u32(&r, "refcount");
	rec_r->physical_size = get_u64(&r, "physical_size");
	rec_r->message_size = get_u64(&r, "message_size");
	rec_r->virtual_size = get_u64(&r, "virtual_size");
	rec_r->received_date = (int64_t)get_u64(&r, "received_date");
	rec_r->save_date = (int64_t)get_u64(&r, "save_date");
	rec_r->state_since = (int64_t)get_u64(&r, "state_since");
	rec_r->chunk_count = get_u32(&r, "chunk_count");
	rec_r->chunk_size = get_u32(&r, "chunk_size");
	get_bytes(&r, rec_r->sha256, LMDB_SHA256_SIZE, "sha256");
	get_bytes(&r, rec_r->orig_mailbox_guid, GUID_128_SIZE,
		  "orig_mailbox_guid");
	rec_r->guid = get_str16(&r, pool, LMDB_GUID_MAX_LEN, "guid");
	if (r.error != NULL)
		return reader_finish(&r, error_r);

	if (state < LMDB_BODY_STATE_PENDING || state > LMDB_BODY_STATE_DEAD) {
		*error_r = t_strdup_printf("body record has invalid state %u",
					   state);
		return FALSE;
	}
	rec_r->state = state;
	/* the chunk layout must be able to hold exactly physical_size
	   bytes, or a reader could be sent past the last chunk */
	if (rec_r->chunk_size == 0 &&
	    (rec_r->physical_size > 0 || rec_r->chunk_count > 0)) {
		*error_r = "body record has zero chunk size";
		return FALSE;
	}
	/* written without the + chunk_size - 1 idiom, which can overflow */
	if (rec_r->chunk_size != 0 &&
	    rec_r->chunk_count != rec_r->physical_size / rec_r->chunk_size +
	    (rec_r->physical_size % rec_r->chunk_size != 0 ? 1 : 0)) {
		*error_r = t_strdup_printf(
			"body record chunk count %u doesn't match size "
			"%"PRIu64" / chunk size %u", rec_r->chunk_count,
			rec_r->physical_size, rec_r->chunk_size);
		return FALSE;
	}
	if (rec_r->virtual_size < rec_r->message_size) {
		*error_r = "body record virtual size below message size";
		return FALSE;
	}
	return TRUE;
}

void lmdb_link_record_encode(buffer_t *buf, const struct lmdb_link_record *rec)
{
	unsigned int i;

	i_assert(rec->keywords_count <= LMDB_KEYWORDS_MAX);

	put_u8(buf, LMDB_RECORD_VERSION);
	put_u8(buf, rec->flags);
	put_u16(buf, 0);
	put_u64(buf, rec->body_id);
	put_u64(buf, (uint64_t)rec->save_date);
	put_u32(buf, rec->pop3_order);
	put_u64(buf, rec->modseq);
	put_str16(buf, rec->pop3_uidl, LMDB_UIDL_MAX_LEN);
	put_u16(buf, rec->keywords_count);
	for (i = 0; i < rec->keywords_count; i++) {
		size_t len = strlen(rec->keywords[i]);

		i_assert(len > 0 && len <= LMDB_KEYWORD_MAX_LEN);
		put_u8(buf, len);
		buffer_append(buf, rec->keywords[i], len);
	}
}

bool lmdb_link_record_decode(const void *data, size_t size, pool_t pool,
			     struct lmdb_link_record *rec_r,
			     const char **error_r)
{
	struct lmdb_reader r;
	const char **keywords;
	unsigned int i, count;

	i_zero(rec_r);
	rec_r->pop3_uidl = "";
	reader_init(&r, data, size);
	if (!reader_check_version(&r, "link"))
		return reader_finish(&r, error_r);
	rec_r->flags = get_u8(&r, "flags");
	(void)get_u16(&r, "reserved");
	rec_r->body_id = get_u64(&r, "body_id");
	rec_r->save_date = (int64_t)get_u64(&r, "save_date");
	rec_r->pop3_order = get_u32(&r, "pop3_order");
	rec_r->modseq = get_u64(&r, "modseq");
	rec_r->pop3_uidl = get_str16(&r, pool, LMDB_UIDL_MAX_LEN, "pop3_uidl");
	count = get_u16(&r, "keywords_count");
	if (r.error == NULL && count > LMDB_KEYWORDS_MAX)
		r.error = t_strdup_printf("too many keywords (%u)", count);
	if (r.error != NULL)
		return reader_finish(&r, error_r);

	keywords = p_new(pool, const char *, count + 1);
	for (i = 0; i < count && r.error == NULL; i++) {
		uint8_t len = get_u8(&r, "keyword length");

		if (len == 0 && r.error == NULL)
			r.error = "empty keyword";
		keywords[i] = get_str(&r, pool, len, LMDB_KEYWORD_MAX_LEN,
				      "keyword");
	}
	rec_r->keywords = keywords;
	rec_r->keywords_count = count;
	return reader_finish(&r, error_r);
}

void lmdb_mailbox_record_encode(buffer_t *buf,
				const struct lmdb_mailbox_record *rec)
{
	put_u8(buf, LMDB_RECORD_VERSION);
	put_u8(buf, rec->state);
	put_u8(buf, (uint8_t)rec->hierarchy_sep);
	put_u8(buf, 0);
	put_u32(buf, rec->uid_validity);
	put_u32(buf, rec->highest_uid);
	put_u64(buf, rec->highest_modseq);
	put_u64(buf, (uint64_t)rec->created);
	put_str16(buf, rec->name, LMDB_NAME_MAX_LEN);
}

bool lmdb_mailbox_record_decode(const void *data, size_t size, pool_t pool,
				struct lmdb_mailbox_record *rec_r,
				const char **error_r)
{
	struct lmdb_reader r;
	uint8_t state;

	i_zero(rec_r);
	rec_r->name = "";
	reader_init(&r, data, size);
	if (!reader_check_version(&r, "mailbox"))
		return reader_finish(&r, error_r);
	state = get_u8(&r, "state");
	rec_r->hierarchy_sep = (char)get_u8(&r, "hierarchy_sep");
	(void)get_u8(&r, "reserved");
	rec_r->uid_validity = get_u32(&r, "uid_validity");
	rec_r->highest_uid = get_u32(&r, "highest_uid");
	rec_r->highest_modseq = get_u64(&r, "highest_modseq");
	rec_r->created = (int64_t)get_u64(&r, "created");
	rec_r->name = get_str16(&r, pool, LMDB_NAME_MAX_LEN, "name");
	if (r.error != NULL)
		return reader_finish(&r, error_r);
	if (state > LMDB_MAILBOX_STATE_DELETED) {
		*error_r = t_strdup_printf("mailbox record has invalid state %u",
					   state);
		return FALSE;
	}
	rec_r->state = state;
	return TRUE;
}

void lmdb_chunk_header_encode(unsigned char hdr_r[LMDB_CHUNK_HDR_SIZE],
			      const void *data, size_t size)
{
	hdr_r[0] = LMDB_RECORD_VERSION;
	hdr_r[1] = 0;
	hdr_r[2] = 0;
	hdr_r[3] = 0;
	cpu32_to_be_unaligned(lmdb_crc32(data, size), hdr_r + 4);
}

bool lmdb_chunk_decode(const void *value, size_t value_size,
		       const void **data_r, size_t *size_r,
		       const char **error_r)
{
	const unsigned char *p = value;
	uint32_t crc;

	if (value_size < LMDB_CHUNK_HDR_SIZE) {
		*error_r = "chunk shorter than its header";
		return FALSE;
	}
	if (p[0] == 0 || p[0] > LMDB_RECORD_VERSION) {
		*error_r = t_strdup_printf("chunk has unknown version %u", p[0]);
		return FALSE;
	}
	crc = be32_to_cpu_unaligned(p + 4);
	*data_r = p + LMDB_CHUNK_HDR_SIZE;
	*size_r = value_size - LMDB_CHUNK_HDR_SIZE;
	if (lmdb_crc32(*data_r, *size_r) != crc) {
		*error_r = "chunk checksum mismatch";
		return FALSE;
	}
	return TRUE;
}

bool lmdb_uidl_is_valid(const char *uidl)
{
	const unsigned char *p;

	if (uidl[0] == '\0' || strlen(uidl) > LMDB_UIDL_MAX_LEN)
		return FALSE;
	for (p = (const unsigned char *)uidl; *p != '\0'; p++) {
		if (*p < 0x21 || *p > 0x7e)
			return FALSE;
	}
	return TRUE;
}
