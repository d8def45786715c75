/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
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
	if (ctx->data.guid != NULL) {
		/* the caller wants a different GUID: the body would
		   have to change */
		if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0 ||
		    strcmp(guid, ctx->data.guid) != 0)
			return FALSE;
	}
	return TRUE;
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
	if (lmdb_mail_get_records(src) < 0) {
		lmdb_save_copy_finished(_ctx);
		index_save_context_free(_ctx);
		return -1;
	}
	if (mdata->received_date == (time_t)-1)
		mdata->received_date = (time_t)src->body.received_date;
	if (mdata->pop3_uidl == NULL && src->link.pop3_uidl[0] != '\0') {
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
	index_copy_cache_fields(_ctx, mail, smail->seq);
	if (_ctx->dest_mail != NULL)
		mail_set_seq_saving(_ctx->dest_mail, smail->seq);
	lmdb_save_copy_finished(_ctx);
	index_save_context_free(_ctx);
	return 0;
}
