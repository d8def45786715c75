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
