/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "istream.h"
#include "istream-crlf.h"
#include "ostream.h"
#include "index-mail.h"
#include "lmdb-body.h"
#include "lmdb-ostream.h"
#include "lmdb-values.h"
#include "lmdb-save.h"

/* Save flow: each message's body goes into LMDB at save_finish as a
   PENDING body, without the index lock. At commit, under the mailbox's
   index sync lock, UIDs are assigned and all links are written in one
   short LMDB transaction, before the index commit. Small bodies skip the
   first step: they stay in memory and are written in the link
   transaction, so a delivery costs one LMDB commit, not two. */

/* How many bytes of bodies one transaction keeps in memory for the link
   transaction (a MULTIAPPEND or dsync writes the rest at save_finish) */
#define LMDB_SAVE_DEFER_MAX_BYTES (4 * 1024 * 1024)

struct mail_save_context *
lmdb_save_alloc(struct mailbox_transaction_context *t)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(t->box);
	struct lmdb_save_context *ctx;
	pool_t pool;

	i_assert((t->flags & MAILBOX_TRANSACTION_FLAG_EXTERNAL) != 0);

	if (t->save_ctx != NULL) {
		ctx = LMDB_SAVECTX(t->save_ctx);
		ctx->failed = FALSE;
		ctx->finished = FALSE;
		return &ctx->ctx;
	}
	pool = pool_alloconly_create("lmdb save", 4096);
	ctx = p_new(pool, struct lmdb_save_context, 1);
	ctx->pool = pool;
	ctx->ctx.transaction = t;
	ctx->trans = t->itrans;
	ctx->mbox = mbox;
	ctx->dsync = (t->flags & MAILBOX_TRANSACTION_FLAG_SYNC) != 0;
	p_array_init(&ctx->mails, pool, 32);
	t->save_ctx = &ctx->ctx;
	return t->save_ctx;
}

pool_t lmdb_save_get_pool(struct mail_save_context *_ctx)
{
	return LMDB_SAVECTX(_ctx)->pool;
}

struct lmdb_copy_cache *
lmdb_save_get_copy_cache(struct mail_save_context *_ctx)
{
	return &LMDB_SAVECTX(_ctx)->copy_cache;
}

void lmdb_save_copy_finished(struct mail_save_context *_ctx)
{
	LMDB_SAVECTX(_ctx)->finished = TRUE;
}

const struct lmdb_save_mail *
lmdb_save_get_mail(struct mailbox_transaction_context *t, uint32_t seq)
{
	struct lmdb_save_context *ctx;
	const struct lmdb_save_mail *smail;

	if (t->save_ctx == NULL)
		return NULL;
	ctx = LMDB_SAVECTX(t->save_ctx);
	array_foreach(&ctx->mails, smail) {
		if (smail->seq == seq)
			return smail;
	}
	return NULL;
}

static void lmdb_save_keywords(struct lmdb_save_context *ctx,
			       struct lmdb_save_mail *smail)
{
	const ARRAY_TYPE(keywords) *names;
	struct mail_keywords *kw = ctx->ctx.data.keywords;
	const char **keywords;
	unsigned int i, n = 0;

	if (kw == NULL || kw->count == 0)
		return;
	names = mail_index_get_keywords(ctx->mbox->box.index);
	keywords = p_new(ctx->pool, const char *, kw->count + 1);
	for (i = 0; i < kw->count && n < LMDB_KEYWORDS_MAX; i++) {
		const char *const *name;

		if (kw->idx[i] >= array_count(names))
			continue;
		name = array_idx(names, kw->idx[i]);
		/* an index may hold keywords Dovecot no longer accepts:
		   the mirror keeps only what it can store */
		if (!lmdb_keyword_is_valid(*name))
			continue;
		keywords[n++] = p_strdup(ctx->pool, *name);
	}
	smail->keywords = keywords;
	smail->keywords_count = n;
}

bool lmdb_save_keeps_uidl(struct mail_save_context *ctx)
{
	/* mailbox_save_using_mail() (LMTP, LDA) sets copying_or_moving too,
	   with saving: that is a new message. dsync's copies are the same
	   message under another UID (a UID conflict renumbers it; the old
	   UID is expunged in the same run). */
	return !ctx->copying_or_moving || ctx->saving || ctx->moving ||
		(ctx->transaction->flags & MAILBOX_TRANSACTION_FLAG_SYNC) != 0;
}

/* A GUID or UIDL from outside (dsync, another storage, a plugin) that
   lmdb can't keep as given becomes the 128-bit digest Dovecot itself
   makes of such strings: dsync compares GUIDs that way for storages with
   128-bit GUIDs (as lmdb declares), so a repeated import recognises the
   message, and the same input always gives the same value. */
static void lmdb_save_normalize(struct lmdb_save_context *ctx, char **value,
				bool (*is_valid)(const char *),
				const char *what)
{
	const char *digest;

	if (*value == NULL || is_valid(*value))
		return;
	digest = lmdb_value_digest(*value);
	e_warning(ctx->mbox->box.event, "lmdb: %s of %zu bytes can't be "
		  "stored as given (too long, or characters it may not hold): "
		  "stored as its digest %s", what, strlen(*value), digest);
	i_free(*value);
	*value = i_strdup(digest);
}

/* Append the message to the index transaction and remember what its link
   will need at commit. Shared by save and single-instance copy. */
struct lmdb_save_mail *
lmdb_save_add_to_index(struct mail_save_context *_ctx)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);
	struct mail_save_data *mdata = &_ctx->data;
	struct lmdb_save_mail *smail;

	lmdb_save_normalize(ctx, &mdata->guid, lmdb_guid_is_valid,
			    "Message GUID");
	lmdb_save_normalize(ctx, &mdata->pop3_uidl, lmdb_uidl_is_valid,
			    "POP3 UIDL");
	mail_index_append(ctx->trans, mdata->uid, &ctx->seq);
	mail_index_update_flags(ctx->trans, ctx->seq, MODIFY_REPLACE,
				mdata->flags & ENUM_NEGATE(MAIL_RECENT));
	if (mdata->keywords != NULL) {
		mail_index_update_keywords(ctx->trans, ctx->seq,
					   MODIFY_REPLACE, mdata->keywords);
	}
	if (mdata->min_modseq != 0)
		mail_index_update_modseq(ctx->trans, ctx->seq, mdata->min_modseq);

	smail = array_append_space(&ctx->mails);
	smail->seq = ctx->seq;
	smail->flags = mdata->flags & MAIL_FLAGS_NONRECENT;
	smail->save_date = mdata->save_date != (time_t)-1 ?
		mdata->save_date : ioloop_time;
	if (mdata->pop3_uidl != NULL)
		smail->pop3_uidl = p_strdup(ctx->pool, mdata->pop3_uidl);
	else if (!lmdb_save_keeps_uidl(_ctx)) {
		/* RFC 1939: a UIDL is unique in the maildrop, and a copy
		   leaves its original where it was (and shares its GUID,
		   so %g would repeat the original's UIDL) */
		smail->new_uidl = TRUE;
	}
	smail->pop3_order = mdata->pop3_order;
	lmdb_save_keywords(ctx, smail);
	return smail;
}

int lmdb_save_begin(struct mail_save_context *_ctx, struct istream *input)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);
	struct lmdb_storage *storage = ctx->mbox->storage;
	struct istream *crlf_input;
	const char *error;
	int ret;

	/* refuse early when the map is at its ceiling minus the reserve */
	ret = lmdb_env_check_space(storage->env, 0, &error);
	if (ret <= 0) {
		lmdb_storage_set_lmdb_error(&storage->storage,
					    ret < 0 ? EIO : MDB_MAP_FULL, error);
		ctx->failed = TRUE;
		return -1;
	}

	(void)lmdb_save_add_to_index(_ctx);
	mail_set_seq_saving(_ctx->dest_mail, ctx->seq);

	/* same line-ending policy as maildir, so the bytes a client gets
	   back are the same on both */
	if (storage->storage.set->mail_save_crlf)
		crlf_input = i_stream_create_crlf(input);
	else
		crlf_input = i_stream_create_lf(input);
	ctx->input = index_mail_cache_parse_init(_ctx->dest_mail, crlf_input);
	i_stream_unref(&crlf_input);

	ctx->writer = lmdb_body_writer_init(storage->env);
	ctx->body_output = lmdb_ostream_create(ctx->writer);
	o_stream_cork(ctx->body_output);
	_ctx->data.output = ctx->body_output;

	if (_ctx->data.received_date == (time_t)-1)
		_ctx->data.received_date = ioloop_time;
	return 0;
}

int lmdb_save_continue(struct mail_save_context *_ctx)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);

	if (ctx->failed)
		return -1;
	if (index_storage_save_continue(_ctx, ctx->input,
					_ctx->dest_mail) < 0) {
		/* Dovecot logged the failed write (with our reason) and made
		   it an internal error; a full map or disk is temporary, as
		   when it is found at the end of the save */
		if (ctx->writer != NULL && lmdb_env_error_is_space(
			lmdb_body_writer_get_last_ret(ctx->writer))) {
			lmdb_storage_set_space_error(
				&ctx->mbox->storage->storage);
		}
		ctx->failed = TRUE;
		return -1;
	}
	return 0;
}

static void lmdb_save_write_error(struct lmdb_save_context *ctx,
				  struct ostream *output)
{
	struct mail_storage *storage = &ctx->mbox->storage->storage;
	int ret = lmdb_body_writer_get_last_ret(ctx->writer);

	if (ret != 0) {
		lmdb_storage_set_lmdb_error(storage, ret, t_strdup_printf(
			"Saving mail to %s failed: %s", ctx->mbox->box.vname,
			o_stream_get_error(output)));
	} else {
		mail_set_critical(ctx->ctx.dest_mail, "write(%s) failed: %s",
				  o_stream_get_name(output),
				  o_stream_get_error(output));
	}
}

static void lmdb_save_end_output(struct lmdb_save_context *ctx)
{
	struct mail_save_data *mdata = &ctx->ctx.data;
	int ret;

	if (mdata->output != ctx->body_output) {
		/* a plugin (zlib, mail_crypt) wrapped our stream: finish it
		   so its trailer reaches the body */
		ret = o_stream_finish(mdata->output);
	} else {
		ret = o_stream_flush(mdata->output);
	}
	if (ret < 0 && !ctx->failed) {
		lmdb_save_write_error(ctx, mdata->output);
		ctx->failed = TRUE;
	}
	if (mdata->output != ctx->body_output) {
		/* the plugin took over our reference when it wrapped the
		   stream: take one back before its stream lets go */
		o_stream_ref(ctx->body_output);
		o_stream_destroy(&mdata->output);
	}
	mdata->output = NULL;
	o_stream_destroy(&ctx->body_output);
}

/* The parser saw the message as the client sent it (after line-ending
   normalisation, before zlib or mail_crypt): that is the size Dovecot
   reports, whatever the stored bytes are. */
static void lmdb_save_get_message_sizes(struct mail *mail,
					struct lmdb_body_info *info)
{
	struct index_mail *imail = INDEX_MAIL(mail);
	const struct message_part *part = imail->data.parts;

	if (part == NULL)
		return;
	info->message_size = part->header_size.physical_size +
		part->body_size.physical_size;
	info->virtual_size = part->header_size.virtual_size +
		part->body_size.virtual_size;
}

static int lmdb_save_finish_write(struct mail_save_context *_ctx)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);
	struct mail_save_data *mdata = &_ctx->data;
	struct lmdb_save_mail *smail;
	struct lmdb_body_info info;
	uint64_t physical_size, virtual_size;
	guid_128_t guid_128;
	const char *error;
	int ret;

	ctx->finished = TRUE;
	if (ctx->writer == NULL)
		return -1;
	smail = array_back_modifiable(&ctx->mails);
	i_assert(smail->seq == ctx->seq);

	lmdb_save_end_output(ctx);
	if (mdata->save_date != (time_t)-1) {
		/* the parser would cache "now" as the save date: a save date
		   given by dsync must win, in LMDB and in the cache */
		struct index_mail *imail = INDEX_MAIL(_ctx->dest_mail);
		uint32_t t = mdata->save_date;

		index_mail_cache_add(imail, MAIL_CACHE_SAVE_DATE, &t, sizeof(t));
	}
	index_mail_cache_parse_deinit(_ctx->dest_mail, mdata->received_date,
				      !ctx->failed);

	if (!ctx->failed) {
		i_zero(&info);
		lmdb_save_get_message_sizes(_ctx->dest_mail, &info);
		if (mdata->guid != NULL)
			info.guid = mdata->guid;
		else {
			guid_128_generate(guid_128);
			info.guid = guid_128_to_string(guid_128);
		}
		info.received_date = mdata->received_date;
		info.save_date = smail->save_date;
		memcpy(info.orig_mailbox_guid, ctx->mbox->mailbox_guid,
		       sizeof(info.orig_mailbox_guid));
		ret = lmdb_body_writer_finish_deferred(ctx->writer, &info,
			ctx->deferred_bytes,
			LMDB_SAVE_DEFER_MAX_BYTES - ctx->deferred_bytes,
			&physical_size, &virtual_size, &error);
		if (ret > 0) {
			smail->deferred = ctx->writer;
			ctx->writer = NULL;
			ctx->deferred_bytes += physical_size;
		} else if (ret == 0) {
			ret = lmdb_body_writer_finish(ctx->writer, &info,
						      &smail->body_id,
						      &physical_size,
						      &virtual_size, &error);
		}
		if (ret < 0) {
			lmdb_storage_set_lmdb_error(&ctx->mbox->storage->storage,
				lmdb_body_writer_get_last_ret(ctx->writer),
				t_strdup_printf("Saving mail to %s failed: %s",
						ctx->mbox->box.vname, error));
			ctx->failed = TRUE;
		} else {
			smail->virtual_size = virtual_size;
			smail->guid = p_strdup(ctx->pool, info.guid);
		}
	}
	if (!ctx->failed) {
		/* not the UIDL: the commit may replace a taken one, and a
		   cached UIDL is answered before the stored one */
		index_mail_cache_pop3_data(_ctx->dest_mail, NULL,
					   mdata->pop3_order);
	}
	if (ctx->writer != NULL)
		lmdb_body_writer_free(&ctx->writer);

	if (ctx->failed) {
		index_storage_save_abort_last(_ctx, ctx->seq);
		array_pop_back(&ctx->mails);
	}
	i_stream_unref(&ctx->input);
	return ctx->failed ? -1 : 0;
}

int lmdb_save_finish(struct mail_save_context *_ctx)
{
	int ret;

	ret = lmdb_save_finish_write(_ctx);
	index_save_context_free(_ctx);
	return ret;
}

void lmdb_save_cancel(struct mail_save_context *_ctx)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);

	ctx->failed = TRUE;
	(void)lmdb_save_finish(_ctx);
}

