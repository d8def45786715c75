/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "lmdb-crc32.h"
#include "lmdb-values.h"
#include "lmdb-records.h"
#include "lmdb-codec.h"

/* The record codecs (docs/schema.md). Each record type has one field
   writer and one field reader, shared by the current version and the
   schema-1 reader the upgrade uses; lmdb-codec.c does the bytes. */

/* --- env --- */

static void env_fields_write(struct lmdb_writer *w,
			     const struct lmdb_env_record *rec)
{
	lmdb_put_u32(w, rec->schema_version);
	lmdb_put_u64(w, rec->generation);
	lmdb_put_u64(w, rec->next_body_id);
	lmdb_put_u64(w, rec->created);
	lmdb_put_u64(w, rec->links);
	lmdb_put_u64(w, rec->link_vsize_bytes);
	lmdb_put_u64(w, rec->bodies);
	lmdb_put_u64(w, rec->body_bytes);
	lmdb_put_u64(w, rec->last_purge);
}

static bool env_fields_read(struct lmdb_reader *r,
			    struct lmdb_env_record *rec_r,
			    const char **error_r)
{
	rec_r->schema_version = lmdb_get_u32(r, "schema_version");
	rec_r->generation = lmdb_get_u64(r, "generation");
	rec_r->next_body_id = lmdb_get_u64(r, "next_body_id");
	rec_r->created = lmdb_get_u64(r, "created");
	rec_r->links = lmdb_get_u64(r, "links");
	rec_r->link_vsize_bytes = lmdb_get_u64(r, "link_vsize_bytes");
	rec_r->bodies = lmdb_get_u64(r, "bodies");
	rec_r->body_bytes = lmdb_get_u64(r, "body_bytes");
	rec_r->last_purge = lmdb_get_u64(r, "last_purge");
	if (r->error == NULL && rec_r->next_body_id == 0)
		lmdb_reader_invalid(r, "next_body_id 0");
	return lmdb_reader_finish(r, error_r);
}

/* What a decoder refuses, an encoder refuses too: a record it wrote
   must read back. */
static const char *env_check(const struct lmdb_env_record *rec)
{
	return rec->next_body_id == 0 ? "env record with next_body_id 0" : NULL;
}

bool lmdb_env_record_encode(buffer_t *buf, const struct lmdb_env_record *rec,
			    const char **error_r)
{
	struct lmdb_writer w;

	if ((*error_r = env_check(rec)) != NULL)
		return FALSE;
	lmdb_writer_init(&w, buf);
	env_fields_write(&w, rec);
	return lmdb_writer_finish(&w, LMDB_RECORD_TYPE_ENV, LMDB_ENV_RECORD_KEY,
			     LMDB_ENV_RECORD_KEY_SIZE, error_r);
}

bool lmdb_env_record_decode(const void *data, size_t size,
			    struct lmdb_env_record *rec_r,
			    const char **error_r)
{
	struct lmdb_reader r;

	i_zero(rec_r);
	if (!lmdb_reader_open(&r, LMDB_RECORD_TYPE_ENV, LMDB_ENV_RECORD_KEY,
			 LMDB_ENV_RECORD_KEY_SIZE, data, size))
		return lmdb_reader_finish(&r, error_r);
	return env_fields_read(&r, rec_r, error_r);
}

bool lmdb_env_record_decode_v1(const void *data, size_t size,
			       struct lmdb_env_record *rec_r,
			       const char **error_r)
{
	struct lmdb_reader r;

	i_zero(rec_r);
	if (!lmdb_reader_open_v1(&r, LMDB_RECORD_TYPE_ENV, data, size))
		return lmdb_reader_finish(&r, error_r);
	return env_fields_read(&r, rec_r, error_r);
}

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
			     struct lmdb_body_record *rec_r,
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
	return body_fields_read(&r, pool, rec_r, error_r);
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
	return body_fields_read(&r, pool, rec_r, error_r);
}

/* --- links --- */

static const char *link_check(const struct lmdb_link_record *rec)
{
	unsigned int i;

	if (rec->body_id == 0)
		return "link record with body_id 0";
	if ((rec->flags & ~LMDB_LINK_FLAGS_MASK) != 0)
		return t_strdup_printf("link record has flags 0x%x", rec->flags);
	/* read back, these reach IMAP replies and Dovecot's assertions:
	   a UIDL with a line break, say, would be a protocol injection */
	if (rec->pop3_uidl != NULL && rec->pop3_uidl[0] != '\0' &&
	    !lmdb_uidl_is_valid(rec->pop3_uidl)) {
		return t_strdup_printf("link record has an invalid POP3 UIDL "
			"(pop3_uidl, %zu bytes%s)", strlen(rec->pop3_uidl),
			strlen(rec->pop3_uidl) > LMDB_UIDL_MAX_LEN ?
			", too long" : "");
	}
	if (rec->keywords_count > LMDB_KEYWORDS_MAX) {
		return t_strdup_printf("link record has %u keywords",
				       rec->keywords_count);
	}
	for (i = 0; i < rec->keywords_count; i++) {
		if (!lmdb_keyword_is_valid(rec->keywords[i]))
			return "link record has an invalid keyword";
	}
	return NULL;
}

static void link_fields_write(struct lmdb_writer *w,
			      const struct lmdb_link_record *rec)
{
	unsigned int i;

	lmdb_put_u8(w, rec->flags);
	lmdb_put_u16(w, 0);
	lmdb_put_u64(w, rec->body_id);
	lmdb_put_u64(w, (uint64_t)rec->save_date);
	lmdb_put_u32(w, rec->pop3_order);
	lmdb_put_u64(w, rec->modseq);
	lmdb_put_str16(w, rec->pop3_uidl, LMDB_UIDL_MAX_LEN, TRUE,
		       "POP3 UIDL");
	lmdb_put_u16(w, rec->keywords_count);
	for (i = 0; i < rec->keywords_count; i++) {
		size_t len = strlen(rec->keywords[i]);

		lmdb_put_u8(w, len);
		buffer_append(w->buf, rec->keywords[i], len);
	}
}

static void lmdb_link_drop_invalid_keywords(struct lmdb_link_record *rec)
{
	const char **keywords = (const char **)rec->keywords;
	unsigned int i, n = 0;

	for (i = 0; i < rec->keywords_count; i++) {
		if (lmdb_keyword_is_valid(keywords[i]))
			keywords[n++] = keywords[i];
	}
	keywords[n] = NULL;
	rec->keywords_count = n;
}

/* The fields, structurally: every length within the record. */
static bool link_fields_read(struct lmdb_reader *r, pool_t pool,
			     struct lmdb_link_record *rec_r,
			     const char **error_r)
{
	const char **keywords;
	unsigned int i, count;

	rec_r->flags = lmdb_get_u8(r, "flags");
	(void)lmdb_get_u16(r, "reserved");
	rec_r->body_id = lmdb_get_u64(r, "body_id");
	rec_r->save_date = (int64_t)lmdb_get_u64(r, "save_date");
	rec_r->pop3_order = lmdb_get_u32(r, "pop3_order");
	rec_r->modseq = lmdb_get_u64(r, "modseq");
	rec_r->pop3_uidl = lmdb_get_str16(r, pool, LMDB_UIDL_MAX_LEN,
					  "pop3_uidl");
	count = lmdb_get_u16(r, "keywords_count");
	if (r->error == NULL && count > LMDB_KEYWORDS_MAX)
		r->error = t_strdup_printf("too many keywords (%u)", count);
	if (r->error != NULL)
		return lmdb_reader_finish(r, error_r);

	keywords = p_new(pool, const char *, count + 1);
	for (i = 0; i < count && r->error == NULL; i++) {
		uint8_t len = lmdb_get_u8(r, "keyword length");

		if (len == 0 && r->error == NULL)
			r->error = "empty keyword";
		keywords[i] = lmdb_get_str(r, pool, len, LMDB_KEYWORD_MAX_LEN,
					   "keyword");
	}
	rec_r->keywords = keywords;
	rec_r->keywords_count = count;
	return lmdb_reader_finish(r, error_r);
}

bool lmdb_link_record_encode(buffer_t *buf, const guid_128_t mailbox_guid,
			     uint32_t uid, const struct lmdb_link_record *rec,
			     const char **error_r)
{
	unsigned char key[LMDB_LINK_KEY_SIZE];
	struct lmdb_writer w;

	if ((*error_r = link_check(rec)) != NULL)
		return FALSE;
	lmdb_link_key_encode(mailbox_guid, uid, key);
	lmdb_writer_init(&w, buf);
	link_fields_write(&w, rec);
	return lmdb_writer_finish(&w, LMDB_RECORD_TYPE_LINK, key, sizeof(key),
			     error_r);
}

bool lmdb_link_record_decode(const guid_128_t mailbox_guid, uint32_t uid,
			     const void *data, size_t size, pool_t pool,
			     struct lmdb_link_record *rec_r,
			     const char **error_r)
{
	unsigned char key[LMDB_LINK_KEY_SIZE];
	struct lmdb_reader r;

	i_zero(rec_r);
	rec_r->pop3_uidl = "";
	lmdb_link_key_encode(mailbox_guid, uid, key);
	if (!lmdb_reader_open(&r, LMDB_RECORD_TYPE_LINK, key, sizeof(key),
			 data, size))
		return lmdb_reader_finish(&r, error_r);
	if (!link_fields_read(&r, pool, rec_r, error_r))
		return FALSE;
	return (*error_r = link_check(rec_r)) == NULL;
}

bool lmdb_link_record_decode_v1(const void *data, size_t size, pool_t pool,
				struct lmdb_link_record *rec_r,
				const char **error_r)
{
	struct lmdb_reader r;

	i_zero(rec_r);
	rec_r->pop3_uidl = "";
	if (!lmdb_reader_open_v1(&r, LMDB_RECORD_TYPE_LINK, data, size))
		return lmdb_reader_finish(&r, error_r);
	if (!link_fields_read(&r, pool, rec_r, error_r))
		return FALSE;
	/* schema 1 stored UIDLs and keywords from outside as given; the
	   upgrade keeps such a link, with what schema 2 can hold: a UIDL
	   becomes its digest (as a save does now), keywords that can't be
	   mirrored are dropped (the index keeps them) */
	if (rec_r->pop3_uidl[0] != '\0' && !lmdb_uidl_is_valid(rec_r->pop3_uidl))
		rec_r->pop3_uidl = p_strdup(pool, lmdb_value_digest(rec_r->pop3_uidl));
	lmdb_link_drop_invalid_keywords(rec_r);
	rec_r->flags &= LMDB_LINK_FLAGS_MASK;
	return (*error_r = link_check(rec_r)) == NULL;
}

/* --- mailboxes --- */

static const char *mailbox_check(const struct lmdb_mailbox_record *rec)
{
	if (rec->state > LMDB_MAILBOX_STATE_DELETED) {
		return t_strdup_printf("mailbox record has invalid state %u",
				       rec->state);
	}
	if (rec->name == NULL || !lmdb_mailbox_name_is_valid(rec->name)) {
		return t_strdup_printf("mailbox record has an invalid mailbox "
			"name (%zu bytes%s)", rec->name == NULL ? 0 :
			strlen(rec->name), rec->name != NULL &&
			strlen(rec->name) > LMDB_NAME_MAX_LEN ?
			", too long" : "");
	}
	return NULL;
}

static void mailbox_fields_write(struct lmdb_writer *w,
				 const struct lmdb_mailbox_record *rec)
{
	lmdb_put_u8(w, rec->state);
	lmdb_put_u8(w, (uint8_t)rec->hierarchy_sep);
	lmdb_put_u8(w, 0);
	lmdb_put_u32(w, rec->uid_validity);
	lmdb_put_u32(w, rec->highest_uid);
	lmdb_put_u64(w, rec->highest_modseq);
	lmdb_put_u64(w, (uint64_t)rec->created);
	lmdb_put_str16(w, rec->name, LMDB_NAME_MAX_LEN, TRUE, "mailbox name");
}

static bool mailbox_fields_read(struct lmdb_reader *r, pool_t pool,
				struct lmdb_mailbox_record *rec_r,
				const char **error_r)
{
	uint8_t state;

	state = lmdb_get_u8(r, "state");
	rec_r->hierarchy_sep = (char)lmdb_get_u8(r, "hierarchy_sep");
	(void)lmdb_get_u8(r, "reserved");
	rec_r->uid_validity = lmdb_get_u32(r, "uid_validity");
	rec_r->highest_uid = lmdb_get_u32(r, "highest_uid");
	rec_r->highest_modseq = lmdb_get_u64(r, "highest_modseq");
	rec_r->created = (int64_t)lmdb_get_u64(r, "created");
	rec_r->name = lmdb_get_str16(r, pool, LMDB_NAME_MAX_LEN, "name");
	if (r->error != NULL)
		return lmdb_reader_finish(r, error_r);
	rec_r->state = state;
	return (*error_r = mailbox_check(rec_r)) == NULL;
}

bool lmdb_mailbox_record_encode(buffer_t *buf, const guid_128_t mailbox_guid,
				const struct lmdb_mailbox_record *rec,
				const char **error_r)
{
	struct lmdb_writer w;

	if ((*error_r = mailbox_check(rec)) != NULL)
		return FALSE;
	lmdb_writer_init(&w, buf);
	mailbox_fields_write(&w, rec);
	return lmdb_writer_finish(&w, LMDB_RECORD_TYPE_MAILBOX, mailbox_guid,
			     GUID_128_SIZE, error_r);
}

bool lmdb_mailbox_record_decode(const guid_128_t mailbox_guid,
				const void *data, size_t size, pool_t pool,
				struct lmdb_mailbox_record *rec_r,
				const char **error_r)
{
	struct lmdb_reader r;

	i_zero(rec_r);
	rec_r->name = "";
	if (!lmdb_reader_open(&r, LMDB_RECORD_TYPE_MAILBOX, mailbox_guid,
			 GUID_128_SIZE, data, size))
		return lmdb_reader_finish(&r, error_r);
	return mailbox_fields_read(&r, pool, rec_r, error_r);
}

bool lmdb_mailbox_record_decode_v1(const void *data, size_t size, pool_t pool,
				   struct lmdb_mailbox_record *rec_r,
				   const char **error_r)
{
	struct lmdb_reader r;

	i_zero(rec_r);
	rec_r->name = "";
	if (!lmdb_reader_open_v1(&r, LMDB_RECORD_TYPE_MAILBOX, data, size))
		return lmdb_reader_finish(&r, error_r);
	return mailbox_fields_read(&r, pool, rec_r, error_r);
}

/* --- gc entries --- */

void lmdb_gc_value_encode(buffer_t *buf,
			  const unsigned char key[LMDB_GC_KEY_SIZE])
{
	struct lmdb_writer w;
	const char *error;

	lmdb_writer_init(&w, buf);
	if (!lmdb_writer_finish(&w, LMDB_RECORD_TYPE_GC, key, LMDB_GC_KEY_SIZE,
			   &error))
		i_unreached();
}

bool lmdb_gc_value_check(const unsigned char key[LMDB_GC_KEY_SIZE],
			 const void *data, size_t size, const char **error_r)
{
	struct lmdb_reader r;

	(void)lmdb_reader_open(&r, LMDB_RECORD_TYPE_GC, key, LMDB_GC_KEY_SIZE,
			  data, size);
	return lmdb_reader_finish(&r, error_r);
}

/* --- quarantine --- */

#define LMDB_QUARANTINE_REASON_MAX_LEN 1024

bool lmdb_quarantine_record_encode(buffer_t *buf, const void *key,
				   size_t key_size,
				   const struct lmdb_quarantine_record *rec,
				   const char **error_r)
{
	struct lmdb_writer w;
	const char *reason = t_strcut(rec->reason, '\0');

	if (strlen(reason) > LMDB_QUARANTINE_REASON_MAX_LEN)
		reason = t_strndup(reason, LMDB_QUARANTINE_REASON_MAX_LEN);
	lmdb_writer_init(&w, buf);
	lmdb_put_u64(&w, (uint64_t)rec->since);
	lmdb_put_str16(&w, reason, LMDB_QUARANTINE_REASON_MAX_LEN, TRUE,
		       "reason");
	buffer_append(w.buf, rec->raw, rec->raw_size);
	return lmdb_writer_finish(&w, LMDB_RECORD_TYPE_QUARANTINE, key,
				  key_size, error_r);
}

bool lmdb_quarantine_record_decode(const void *key, size_t key_size,
				   const void *data, size_t size, pool_t pool,
				   struct lmdb_quarantine_record *rec_r,
				   const char **error_r)
{
	struct lmdb_reader r;

	i_zero(rec_r);
	rec_r->reason = "";
	if (!lmdb_reader_open(&r, LMDB_RECORD_TYPE_QUARANTINE, key, key_size,
			      data, size))
		return lmdb_reader_finish(&r, error_r);
	rec_r->since = (int64_t)lmdb_get_u64(&r, "since");
	rec_r->reason = lmdb_get_str16(&r, pool, LMDB_QUARANTINE_REASON_MAX_LEN,
				       "reason");
	rec_r->raw = r.p;
	rec_r->raw_size = r.end - r.p;
	return lmdb_reader_finish(&r, error_r);
}

/* --- uidls --- */

void lmdb_uidls_key_encode(buffer_t *buf, const guid_128_t mailbox_guid,
			   const char *uidl, uint32_t uid)
{
	unsigned char be[4];

	buffer_append(buf, mailbox_guid, GUID_128_SIZE);
	buffer_append(buf, uidl, strlen(uidl) + 1);
	cpu32_to_be_unaligned(uid, be);
	buffer_append(buf, be, sizeof(be));
}

bool lmdb_uidls_key_match(const void *key, size_t key_size,
			  const guid_128_t mailbox_guid, const char *uidl,
			  uint32_t *uid_r)
{
	const unsigned char *p = key;
	size_t len = strlen(uidl);

	if (key_size != GUID_128_SIZE + len + 1 + 4 ||
	    memcmp(p, mailbox_guid, GUID_128_SIZE) != 0 ||
	    memcmp(p + GUID_128_SIZE, uidl, len + 1) != 0)
		return FALSE;
	*uid_r = be32_to_cpu_unaligned(p + GUID_128_SIZE + len + 1);
	return *uid_r != 0;
}

void lmdb_uidls_value_encode(buffer_t *buf, const void *key, size_t key_size)
{
	struct lmdb_writer w;
	const char *error;

	lmdb_writer_init(&w, buf);
	if (!lmdb_writer_finish(&w, LMDB_RECORD_TYPE_UIDL, key, key_size,
				&error))
		i_unreached();
}

bool lmdb_uidls_value_check(const void *key, size_t key_size,
			    const void *data, size_t size,
			    const char **error_r)
{
	struct lmdb_reader r;

	(void)lmdb_reader_open(&r, LMDB_RECORD_TYPE_UIDL, key, key_size,
			       data, size);
	return lmdb_reader_finish(&r, error_r);
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
