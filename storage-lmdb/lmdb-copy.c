/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "ioloop.h"
#include "mail-cache.h"
#include "index-mail.h"
#include "mail-copy.h"
#include "lmdb-mail.h"
#include "lmdb-storage.h"

/* Single-instance copy: inside one LMDB environment a copy (or move) is a
   new link to the same body, whose reference count goes up at commit.
   Anything else goes through the ordinary save path. */
static bool lmdb_copy_can_link(struct mail_save_context *ctx,
			       struct mail *mail)
{
	struct lmdb_mailbox *dest = LMDB_MAILBOX(ctx->transaction->box);
	const char *guid;

	if (mail->box->storage->storage_class != &lmdb_storage ||
	    LMDB_STORAGE(mail->box->storage)->env != dest->storage->env)
		return FALSE;
	if (ctx->transaction->box->disable_reflink_copy_to)
		return FALSE;
	if (mail->saving) {
		/* its body may still be only in memory (no id to link to):
		   copied from the stream instead */
		return FALSE;
	}
	if (ctx->data.guid != NULL) {
		/* the caller wants a different GUID: the body would
		   have to change */
		if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0 ||
		    strcmp(guid, ctx->data.guid) != 0)
			return FALSE;
	}
	return TRUE;
}

/* Resolve the source mailbox's cache fields to the destination's field
   indexes, leaving out what the destination doesn't cache. Dovecot's own
   helper does this by name for every mail; for a large COPY that was most
   of the command's work. */
static void
lmdb_copy_cache_init(struct lmdb_copy_cache *cc, pool_t pool,
		     struct mail_save_context *ctx, struct mailbox *src_box)
{
	struct mailbox *dest_box = ctx->transaction->box;
	struct mailbox_metadata src_md, dest_md;
	const struct mailbox_cache_field *field;
	const struct mail_cache_field *dest_field;
	struct lmdb_copy_cache_field *f;
	unsigned int src_idx, dest_idx;

	cc->src_box = src_box;
	cc->src_cache = src_box->cache;
	if (!array_is_created(&cc->fields)) {
		p_array_init(&cc->fields, pool, 16);
		cc->buf = buffer_create_dynamic(pool, 256);
	}
	array_clear(&cc->fields);
	/* the destination lookup opens its cache and refreshes the
	   decisions; neither lookup can fail for these items */
	if (mailbox_get_metadata(src_box, MAILBOX_METADATA_CACHE_FIELDS,
				 &src_md) < 0 ||
	    mailbox_get_metadata(dest_box, MAILBOX_METADATA_CACHE_FIELDS,
				 &dest_md) < 0)
		i_unreached();
	array_foreach(src_md.cache_fields, field) {
		src_idx = mail_cache_register_lookup(src_box->cache,
						     field->name);
		dest_idx = mail_cache_register_lookup(dest_box->cache,
						      field->name);
		if (src_idx == UINT_MAX || dest_idx == UINT_MAX)
			continue;
		/* the copy's stored UIDL may be the caller's (dsync), not the
		   source's, and a cached UIDL is answered before the stored
		   one: the first listing caches what was stored */
		if (strcmp(field->name, "pop3.uidl") == 0 ||
		    strcmp(field->name, "pop3.order") == 0)
			continue;
		dest_field = mail_cache_register_get_field(dest_box->cache,
							   dest_idx);
		if ((dest_field->decision &
		     ENUM_NEGATE(MAIL_CACHE_DECISION_FORCED)) ==
		    MAIL_CACHE_DECISION_NO)
			continue;
		f = array_append_space(&cc->fields);
		f->src_idx = src_idx;
		f->dest_idx = dest_idx;
		f->save_date = strcmp(field->name, "date.save") == 0;
		f->physical_size = strcmp(field->name, "size.physical") == 0;
		f->virtual_size = strcmp(field->name, "size.virtual") == 0;
	}
}

static void
lmdb_copy_cache_fields(struct mail_save_context *ctx, struct mail *src_mail,
		       uint32_t dest_seq)
{
	struct lmdb_copy_cache *cc = lmdb_save_get_copy_cache(ctx);
	struct mailbox_transaction_context *dest_t = ctx->transaction;
	struct index_mail *dest_imail = INDEX_MAIL(ctx->dest_mail);
	const struct lmdb_copy_cache_field *f;
	const uint32_t *vsizep;
	uint32_t t;
	uoff_t size;

	if (cc->src_box != src_mail->box ||
	    cc->src_cache != src_mail->box->cache) {
		lmdb_copy_cache_init(cc, lmdb_save_get_pool(ctx), ctx,
				     src_mail->box);
	}
	array_foreach(&cc->fields, f) {
		buffer_set_used_size(cc->buf, 0);
		if (f->save_date) {
			/* a copy is saved now */
			t = ioloop_time;
			buffer_append(cc->buf, &t, sizeof(t));
		} else if (mail_cache_lookup_field(
				src_mail->transaction->cache_view, cc->buf,
				src_mail->seq, f->src_idx) <= 0) {
			/* not cached, or broken: the destination parses
			   the mail again if it needs the field */
			continue;
		} else if ((f->physical_size || f->virtual_size) &&
			   dest_imail != NULL && cc->buf->used == sizeof(size)) {
			/* quota asks the new mail's size before the cache
			   transaction is readable */
			memcpy(&size, cc->buf->data, sizeof(size));
			if (f->physical_size)
				dest_imail->data.physical_size = size;
			else
				dest_imail->data.virtual_size = size;
		}
		mail_cache_add(dest_t->cache_trans, dest_seq, f->dest_idx,
			       cc->buf->data, cc->buf->used);
	}
	vsizep = index_mail_get_vsize_extension(src_mail);
	if (vsizep != NULL && *vsizep != 0 && *vsizep != (uint32_t)-1) {
		mail_index_update_ext(dest_t->itrans, dest_seq,
				      dest_t->box->mail_vsize_ext_id,
				      vsizep, NULL);
	}
}

/* Is mail in the mailbox ctx saves into? (IMAP opens the destination
   of a MOVE as a mailbox of its own, also when it is the selected one) */
static bool
lmdb_copy_same_mailbox(struct mail_save_context *ctx, struct mail *mail)
{
	struct lmdb_mailbox *src = LMDB_MAILBOX(mail->box);
	struct lmdb_mailbox *dest = LMDB_MAILBOX(ctx->transaction->box);

	return !guid_128_is_empty(dest->mailbox_guid) &&
		guid_128_equals(src->mailbox_guid, dest->mailbox_guid);
}

int lmdb_copy(struct mail_save_context *_ctx, struct mail *mail)
{
	struct lmdb_mail *src;
	struct lmdb_save_mail *smail;
	struct mail_save_data *mdata = &_ctx->data;
	pool_t pool;

	if (!lmdb_copy_can_link(_ctx, mail))
		return mail_storage_copy(_ctx, mail);

	src = LMDB_MAIL(mail);
	if (lmdb_mail_read_records(src) < 0) {
		lmdb_save_copy_finished(_ctx);
		index_save_context_free(_ctx);
		return -1;
	}
	if (mdata->received_date == (time_t)-1)
		mdata->received_date = (time_t)src->body.received_date;
	if (mdata->pop3_uidl == NULL && src->link.pop3_uidl[0] != '\0' &&
	    lmdb_save_keeps_uidl(_ctx)) {
		/* a UIDL shown to a POP3 client stays with the message */
		mailbox_save_set_pop3_uidl(_ctx, src->link.pop3_uidl);
	}
	if (mdata->pop3_order == 0 && src->link.pop3_order != 0)
		mailbox_save_set_pop3_order(_ctx, src->link.pop3_order);

	smail = lmdb_save_add_to_index(_ctx);
	pool = lmdb_save_get_pool(_ctx);
	smail->body_id = src->link.body_id;
	smail->virtual_size = src->body.virtual_size;
	smail->guid = p_strdup(pool, src->body.guid);
	smail->copied = TRUE;
	if (_ctx->moving && lmdb_copy_same_mailbox(_ctx, mail))
		smail->moved_from_uid = mail->uid;
	lmdb_copy_cache_fields(_ctx, mail, smail->seq);
	if (_ctx->dest_mail != NULL)
		mail_set_seq_saving(_ctx->dest_mail, smail->seq);
	lmdb_save_copy_finished(_ctx);
	index_save_context_free(_ctx);
	return 0;
}
