/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "lmdb-crc32.h"
#include "lmdb-values.h"
#include "lmdb-records.h"
#include "lmdb-codec.h"

/* The codecs of a body's records: the body record (size, chunking,
   reference count, state) and its chunks. */

/* --- bodies --- */

static const char *body_check(const struct lmdb_body_record *rec)
{
	if (rec->state < LMDB_BODY_STATE_PENDING ||
	    rec->state > LMDB_BODY_STATE_DEAD) {
		return t_strdup_printf("body record has invalid state %u",
				       rec->state);
	}
	if (rec->guid != NULL && rec->guid[0] != '\0' &&
	    !lmdb_guid_is_valid(rec->guid)) {
		return t_strdup_printf("body record has an invalid message "
			"GUID (%zu bytes%s)", strlen(rec->guid),
			strlen(rec->guid) > LMDB_GUID_MAX_LEN ?
			", too long" : "");
	}
	if (rec->chunk_size > LMDB_CHUNK_SIZE_MAX) {
		return t_strdup_printf("body record has chunk size %u",
				       rec->chunk_size);
	}
	/* the chunk layout must be able to hold exactly physical_size
	   bytes, or a reader could be sent past the last chunk */
	if (rec->chunk_size == 0 &&
	    (rec->physical_size > 0 || rec->chunk_count > 0))
		return "body record has zero chunk size";
	/* written without the + chunk_size - 1 idiom, which can overflow */
	if (rec->chunk_size != 0 &&
	    rec->chunk_count != rec->physical_size / rec->chunk_size +
	    (rec->physical_size % rec->chunk_size != 0 ? 1 : 0)) {
		return t_strdup_printf(
			"body record chunk count %u doesn't match size "
			"%"PRIu64" / chunk size %u", rec->chunk_count,
			rec->physical_size, rec->chunk_size);
	}
	if (rec->virtual_size < rec->message_size)
		return "body record virtual size below message size";
	return NULL;
}

static void body_fields_write(struct lmdb_writer *w,
			      const struct lmdb_body_record *rec)
{
	/* "" for the placeholder of a body still being written */
	bool guid_valid = rec->guid == NULL || rec->guid[0] == '\0' ||
		lmdb_guid_is_valid(rec->guid);

	lmdb_put_u8(w, rec->state);
	lmdb_put_u16(w, 0);
	lmdb_put_u32(w, rec->refcount);
	lmdb_put_u64(w, rec->physical_size);
	lmdb_put_u64(w, rec->message_size);
	lmdb_put_u64(w, rec->virtual_size);
	lmdb_put_u64(w, (uint64_t)rec->received_date);
	lmdb_put_u64(w, (uint64_t)rec->save_date);
	lmdb_put_u64(w, (uint64_t)rec->state_since);
	lmdb_put_u32(w, rec->chunk_count);
	lmdb_put_u32(w, rec->chunk_size);
	buffer_append(w->buf, rec->sha256, LMDB_SHA256_SIZE);
	buffer_append(w->buf, rec->orig_mailbox_guid, GUID_128_SIZE);
	lmdb_put_str16(w, rec->guid, LMDB_GUID_MAX_LEN, guid_valid, "message GUID");
}

static bool body_fields_read(struct lmdb_reader *r, pool_t pool,
			     struct lmdb_body_record *rec_r, bool schema1,
			     const char **error_r)
{
	uint8_t state;

	state = lmdb_get_u8(r, "state");
	(void)lmdb_get_u16(r, "reserved");
	rec_r->refcount = lmdb_get_u32(r, "refcount");
	rec_r->physical_size = lmdb_get_u64(r, "physical_size");
	rec_r->message_size = lmdb_get_u64(r, "message_size");
	rec_r->virtual_size = lmdb_get_u64(r, "virtual_size");
	rec_r->received_date = (int64_t)lmdb_get_u64(r, "received_date");
	rec_r->save_date = (int64_t)lmdb_get_u64(r, "save_date");
	rec_r->state_since = (int64_t)lmdb_get_u64(r, "state_since");
	rec_r->chunk_count = lmdb_get_u32(r, "chunk_count");
	rec_r->chunk_size = lmdb_get_u32(r, "chunk_size");
	lmdb_get_bytes(r, rec_r->sha256, LMDB_SHA256_SIZE, "sha256");
	lmdb_get_bytes(r, rec_r->orig_mailbox_guid, GUID_128_SIZE,
		  "orig_mailbox_guid");
	rec_r->guid = lmdb_get_str16(r, pool, LMDB_GUID_MAX_LEN, "guid");
	if (r->error != NULL)
		return lmdb_reader_finish(r, error_r);
	rec_r->state = state;
	/* schema 1 stored message GUIDs from outside as given; the upgrade
	   keeps such a body with the GUID's digest, as a save makes now */
	if (schema1 && rec_r->guid[0] != '\0' &&
	    !lmdb_guid_is_valid(rec_r->guid))
		rec_r->guid = p_strdup(pool, lmdb_value_digest(rec_r->guid));
	if ((*error_r = body_check(rec_r)) != NULL)
		return FALSE;
	return TRUE;
}

bool lmdb_body_record_encode(buffer_t *buf, uint64_t body_id,
			     const struct lmdb_body_record *rec,
			     const char **error_r)
{
	unsigned char key[LMDB_BODY_ID_SIZE];
	struct lmdb_writer w;

	if ((*error_r = body_check(rec)) != NULL)
		return FALSE;
	lmdb_body_id_encode(body_id, key);
	lmdb_writer_init(&w, buf);
	body_fields_write(&w, rec);
	return lmdb_writer_finish(&w, LMDB_RECORD_TYPE_BODY, key, sizeof(key),
			     error_r);
}

bool lmdb_body_record_decode(uint64_t body_id, const void *data, size_t size,
			     pool_t pool, struct lmdb_body_record *rec_r,
			     const char **error_r)
{
	unsigned char key[LMDB_BODY_ID_SIZE];
	struct lmdb_reader r;

	i_zero(rec_r);
	rec_r->guid = "";
	lmdb_body_id_encode(body_id, key);
	if (!lmdb_reader_open(&r, LMDB_RECORD_TYPE_BODY, key, sizeof(key),
			 data, size))
		return lmdb_reader_finish(&r, error_r);
	return body_fields_read(&r, pool, rec_r, FALSE, error_r);
}

bool lmdb_body_record_decode_v1(const void *data, size_t size, pool_t pool,
				struct lmdb_body_record *rec_r,
				const char **error_r)
{
	struct lmdb_reader r;

	i_zero(rec_r);
	rec_r->guid = "";
	if (!lmdb_reader_open_v1(&r, LMDB_RECORD_TYPE_BODY, data, size))
		return lmdb_reader_finish(&r, error_r);
	return body_fields_read(&r, pool, rec_r, TRUE, error_r);
}

/* --- chunks --- */

static uint32_t lmdb_chunk_crc(uint64_t body_id, uint32_t chunk_idx,
			       const void *data, size_t size)
{
	unsigned char key[LMDB_CHUNK_KEY_SIZE];

	lmdb_chunk_key_encode(body_id, chunk_idx, key);
	return lmdb_record_crc(LMDB_RECORD_TYPE_CHUNK, key, sizeof(key),
			       data, size);
}

void lmdb_chunk_header_encode(unsigned char hdr_r[LMDB_CHUNK_HDR_SIZE],
			      uint64_t body_id, uint32_t chunk_idx,
			      const void *data, size_t size)
{
	hdr_r[0] = LMDB_RECORD_VERSION;
	hdr_r[1] = 0;
	hdr_r[2] = 0;
	hdr_r[3] = 0;
	cpu32_to_be_unaligned(lmdb_chunk_crc(body_id, chunk_idx, data, size),
			      hdr_r + 4);
}

bool lmdb_chunk_decode(uint64_t body_id, uint32_t chunk_idx,
		       const void *value, size_t value_size,
		       const void **data_r, size_t *size_r,
		       const char **error_r)
{
	const unsigned char *p = value;
	uint32_t crc;

	if (value_size < LMDB_CHUNK_HDR_SIZE) {
		*error_r = "chunk shorter than its header";
		return FALSE;
	}
	*data_r = p + LMDB_CHUNK_HDR_SIZE;
	*size_r = value_size - LMDB_CHUNK_HDR_SIZE;
	/* no flags are defined: a bit there is damage the checksum, which
	   covers only key and data, can't see */
	if (p[1] != 0 || p[2] != 0 || p[3] != 0) {
		*error_r = "chunk has unknown flags";
		return FALSE;
	}
	switch (p[0]) {
	case LMDB_RECORD_VERSION_1:
		/* written by schema 1: the data alone is checksummed */
		crc = lmdb_crc32(*data_r, *size_r);
		break;
	case LMDB_RECORD_VERSION:
		crc = lmdb_chunk_crc(body_id, chunk_idx, *data_r, *size_r);
		break;
	default:
		*error_r = t_strdup_printf("chunk has unknown version %u", p[0]);
		return FALSE;
	}
	if (crc != be32_to_cpu_unaligned(p + 4)) {
		*error_r = "chunk checksum mismatch";
		return FALSE;
	}
	return TRUE;
}
