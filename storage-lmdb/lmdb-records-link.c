/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "lmdb-crc32.h"
#include "lmdb-values.h"
#include "lmdb-records.h"
#include "lmdb-codec.h"

/* The codecs of a message's link (mailbox GUID + UID -> body, flags,
   keywords, UIDL) and of the UIDL index entries that point at links. */

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
