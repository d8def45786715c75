/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "istream.h"
#include "str.h"
#include "index-mail.h"
#include "index-pop3-uidl.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-istream.h"
#include "lmdb-mail.h"
#include "lmdb-uidl.h"
#include "lmdb-values.h"
#include "lmdb-storage.h"

struct mail *
lmdb_mail_alloc(struct mailbox_transaction_context *t,
		enum mail_fetch_field wanted_fields,
		struct mailbox_header_lookup_ctx *wanted_headers)
{
	struct lmdb_mail *mail;
	pool_t pool;

	pool = pool_alloconly_create("mail", 2048);
	mail = p_new(pool, struct lmdb_mail, 1);
	mail->records_pool = pool_alloconly_create("lmdb mail records", 512);
	index_mail_init(&mail->imail, t, wanted_fields, wanted_headers,
			pool, NULL);
	return &mail->imail.mail.mail;
}

static void lmdb_mail_forget(struct lmdb_mail *mail)
{
	i_stream_unref(&mail->body_stream);
	mail->records_seq = 0;
	mail->have_link = FALSE;
	mail->have_body = FALSE;
	mail->deferred = NULL;
	/* NULL while the mail is being freed */
	if (mail->records_pool != NULL)
		p_clear(mail->records_pool);
}

static void lmdb_mail_close(struct mail *_mail)
{
	struct lmdb_mail *mail = LMDB_MAIL(_mail);

	index_mail_close(_mail);
	lmdb_mail_forget(mail);
}

static void lmdb_mail_free(struct mail *_mail)
{
	struct lmdb_mail *mail = LMDB_MAIL(_mail);

	i_stream_unref(&mail->body_stream);
	pool_unref(&mail->records_pool);
	index_mail_free(_mail);
}

/* A damaged record or body fails this message alone, with an error a
   client can act on: IMAP answers NO [PARSE] instead of disconnecting (as
   it does after an internal error), POP3 -ERR. The details go to the log;
   doveadm lmdb verify -r repairs or quarantines it. */
static void lmdb_mail_set_damaged(struct mail *mail, const char *fmt, ...)
	ATTR_FORMAT(2, 3);
static void lmdb_mail_set_damaged(struct mail *mail, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	e_error(mail_event(mail), "lmdb: %s (doveadm lmdb verify -r "
		"repairs or quarantines it)", t_strdup_vprintf(fmt, args));
	va_end(args);
	mail_storage_set_error(mail->box->storage, MAIL_ERROR_INVALIDDATA,
			       "Message is damaged and can't be read");
}

static int lmdb_mail_read(struct lmdb_mail *mail, bool want_body);

/* The records of the current message are loaded: the link, and the body
   record too if want_body. */
static bool lmdb_mail_have_records(struct lmdb_mail *mail, bool want_body)
{
	struct mail *_mail = &mail->imail.mail.mail;

	return mail->records_seq == _mail->seq &&
		mail->records_uid == _mail->uid &&
		(mail->have_body || !want_body);
}

static int lmdb_mail_get(struct lmdb_mail *mail, bool want_body)
{
	if (lmdb_mail_have_records(mail, want_body))
		return 0;
	/* metadata only: allowed where reading the body is not, e.g.
	   POP3 with pop3_fast_size_lookups */
	if (!mail_metadata_access_start(&mail->imail.mail.mail))
		return -1;
	return lmdb_mail_read(mail, want_body);
}

int lmdb_mail_get_records(struct lmdb_mail *mail)
{
	return lmdb_mail_get(mail, TRUE);
}

int lmdb_mail_get_link(struct lmdb_mail *mail)
{
	return lmdb_mail_get(mail, FALSE);
}

int lmdb_mail_read_records(struct lmdb_mail *mail)
{
	return lmdb_mail_read(mail, TRUE);
}

static int lmdb_mail_read_link(struct lmdb_mail *mail, MDB_txn *txn)
{
	struct mail *_mail = &mail->imail.mail.mail;
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(_mail->box);
	const struct lmdb_save_mail *smail;
	const char *error;
	int ret;

	if (_mail->saving) {
		/* not committed yet: the save context knows the body */
		smail = lmdb_save_get_mail(_mail->transaction, _mail->seq);
		if (smail == NULL ||
		    (smail->body_id == 0 && smail->deferred == NULL)) {
			mail_set_critical(_mail,
				"lmdb: Mail being saved has no body yet");
			return -1;
		}
		i_zero(&mail->link);
		mail->link.body_id = smail->body_id;
		mail->link.save_date = smail->save_date;
		mail->link.pop3_uidl = smail->pop3_uidl == NULL ? "" :
			p_strdup(mail->records_pool, smail->pop3_uidl);
		mail->link.pop3_order = smail->pop3_order;
		mail->have_link = FALSE;
		mail->deferred = smail->body_id == 0 ? smail->deferred : NULL;
		return 0;
	}
	ret = lmdb_link_get(mbox->storage->env, txn, mbox->mailbox_guid,
			    _mail->uid, mail->records_pool, &mail->link, &error);
	if (ret <= 0) {
		if (ret == -2)
			lmdb_mail_set_damaged(_mail, "uid=%u: %s", _mail->uid, error);
		else if (ret < 0)
			mail_set_critical(_mail, "lmdb: %s", error);
		else
			mail_set_expunged(_mail);
		mail->link_damaged = ret == -2;
		return -1;
	}
	mail->link_damaged = FALSE;
	mail->have_link = TRUE;
	return 0;
}

static int lmdb_mail_read(struct lmdb_mail *mail, bool want_body)
{
	struct mail *_mail = &mail->imail.mail.mail;
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(_mail->box);
	struct lmdb_env *env = mbox->storage->env;
	uint64_t body_id;
	MDB_txn *txn;
	const char *error;
	int ret;

	if (lmdb_mail_have_records(mail, want_body))
		return 0;
	if (mail->records_seq != _mail->seq ||
	    mail->records_uid != _mail->uid)
		lmdb_mail_forget(mail);

	_mail->transaction->stats.open_lookup_count++;
	if (lmdb_env_read_begin(env, &txn, &error) < 0) {
		mail_set_critical(_mail, "lmdb: %s", error);
		return -1;
	}
	if (mail->records_seq == 0 && lmdb_mail_read_link(mail, txn) < 0) {
		lmdb_env_read_end(env, &txn);
		return -1;
	}
	mail->records_seq = _mail->seq;
	mail->records_uid = _mail->uid;
	if (!want_body) {
		lmdb_env_read_end(env, &txn);
		return 0;
	}
	if (mail->deferred != NULL) {
		lmdb_env_read_end(env, &txn);
		lmdb_body_writer_get_record(mail->deferred, &mail->body);
		mail->have_body = TRUE;
		return 0;
	}
	body_id = mail->link.body_id;
	ret = lmdb_body_lookup(env, txn, body_id, mail->records_pool,
			       &mail->body, &error);
	lmdb_env_read_end(env, &txn);
	if (ret <= 0) {
		if (ret == 0) {
			error = t_strdup_printf("body %"PRIu64" is missing",
						body_id);
		}
		lmdb_mail_set_damaged(_mail, "uid=%u: %s", _mail->uid, error);
		return -1;
	}
	mail->have_body = TRUE;
	return 0;
}

static int lmdb_mail_get_physical_size(struct mail *_mail, uoff_t *size_r)
{
	struct lmdb_mail *mail = LMDB_MAIL(_mail);
	struct index_mail_data *data = &mail->imail.data;

	if (index_mail_get_physical_size(_mail, size_r) == 0)
		return 0;
	if (lmdb_mail_get_records(mail) < 0)
		return -1;
	data->physical_size = mail->body.message_size;
	*size_r = data->physical_size;
	return 0;
}

static int lmdb_mail_get_virtual_size(struct mail *_mail, uoff_t *size_r)
{
	struct lmdb_mail *mail = LMDB_MAIL(_mail);
	struct index_mail_data *data = &mail->imail.data;

	if (index_mail_get_cached_virtual_size(&mail->imail, size_r))
		return 0;
	if (lmdb_mail_get_records(mail) < 0)
		return -1;
	data->virtual_size = mail->body.virtual_size;
	*size_r = data->virtual_size;
	return 0;
}

static int lmdb_mail_get_received_date(struct mail *_mail, time_t *date_r)
{
	struct lmdb_mail *mail = LMDB_MAIL(_mail);
	struct index_mail_data *data = &mail->imail.data;

	if (index_mail_get_received_date(_mail, date_r) == 0)
		return 0;
	if (lmdb_mail_get_records(mail) < 0)
		return -1;
	data->received_date = (time_t)mail->body.received_date;
	*date_r = data->received_date;
	return 0;
}

static int lmdb_mail_get_save_date(struct mail *_mail, time_t *date_r)
{
	struct lmdb_mail *mail = LMDB_MAIL(_mail);
	struct index_mail_data *data = &mail->imail.data;

	if (index_mail_get_save_date(_mail, date_r) > 0)
		return 1;
	if (lmdb_mail_get_link(mail) < 0)
		return -1;
	data->save_date = (time_t)mail->link.save_date;
	*date_r = data->save_date;
	return 1;
}

/* A stored UIDL never changes, so Dovecot's cache may answer for it: a
   POP3 listing then touches no LMDB page, where a cold one would fault
   in the link pages of the whole maildrop.  "" is not cached, so a UIDL
   stored later (pop3_save_uidl) is never hidden behind it. */
static int lmdb_mail_get_pop3_uidl(struct lmdb_mail *mail,
				   const char **value_r)
{
	struct index_mail *imail = &mail->imail;
	struct index_mailbox_context *ibox =
		INDEX_STORAGE_CONTEXT(imail->mail.mail.box);
	unsigned int field_idx = ibox->cache_fields[MAIL_CACHE_POP3_UIDL].idx;
	string_t *str;

	str = str_new(imail->mail.data_pool, 32);
	if (index_mail_cache_lookup_field(imail, str, field_idx) > 0 &&
	    str_len(str) > 0 && strlen(str_c(str)) == str_len(str) &&
	    lmdb_uidl_is_valid(str_c(str))) {
		*value_r = str_c(str);
		return 0;
	}
	if (lmdb_mail_get_link(mail) < 0) {
		if (!mail->link_damaged)
			return -1;
		/* a POP3 listing must not end for one damaged message: its
		   stored UIDL is lost, POP3 shows the format's value (the
		   error is logged; verify -r quarantines it) */
		*value_r = "";
		return 0;
	}
	*value_r = p_strdup(imail->mail.data_pool, mail->link.pop3_uidl);
	if ((*value_r)[0] != '\0') {
		index_mail_cache_add_idx(imail, field_idx, *value_r,
					 strlen(*value_r));
	}
	return 0;
}

static int
lmdb_mail_get_special(struct mail *_mail, enum mail_fetch_field field,
		      const char **value_r)
{
	struct lmdb_mail *mail = LMDB_MAIL(_mail);

	switch (field) {
	case MAIL_FETCH_UIDL_BACKEND:
		if (!index_pop3_uidl_can_exist(_mail)) {
			*value_r = "";
			return 0;
		}
		if (lmdb_mail_get_pop3_uidl(mail, value_r) < 0)
			return -1;
		index_pop3_uidl_update_exists(_mail, (*value_r)[0] != '\0');
		return 0;
	case MAIL_FETCH_POP3_ORDER:
		/* cheap when no message has an order: one header flag */
		if (!lmdb_mailbox_have_pop3_orders(LMDB_MAILBOX(_mail->box)) ||
		    !index_pop3_uidl_can_exist(_mail)) {
			*value_r = "";
			return 0;
		}
		if (lmdb_mail_get_link(mail) < 0) {
			if (!mail->link_damaged)
				return -1;
			*value_r = "";
			return 0;
		}
		*value_r = mail->link.pop3_order == 0 ? "" :
			p_strdup_printf(mail->imail.mail.data_pool, "%u",
					mail->link.pop3_order);
		return 0;
	case MAIL_FETCH_GUID:
		/* Also under MAIL_LOOKUP_ABORT_NOT_IN_CACHE: index_mail_expunge()
		   asks that way, and an expunge logged without its GUID makes
		   a stateless dsync or a replicator full sync copy the message
		   back ("Expunged mail has no GUID, can't verify it"). sdbox
		   and maildir answer from their index; for us it is two B-tree
		   lookups. */
		if (lmdb_mail_read_records(mail) < 0)
			return -1;
		*value_r = p_strdup(mail->imail.mail.data_pool,
				    mail->body.guid);
		return 0;
	case MAIL_FETCH_REFCOUNT:
		if (lmdb_mail_get_records(mail) < 0)
			return -1;
		*value_r = p_strdup_printf(mail->imail.mail.data_pool, "%u",
					   mail->body.refcount);
		return 0;
	case MAIL_FETCH_REFCOUNT_ID:
	case MAIL_FETCH_STORAGE_ID:
		if (lmdb_mail_get_link(mail) < 0)
			return -1;
		if (mail->link.body_id == 0) {
			/* being saved, the body still in memory */
			*value_r = "";
			return 0;
		}
		*value_r = p_strdup_printf(mail->imail.mail.data_pool,
					   "%"PRIx64, mail->link.body_id);
		return 0;
	default:
		break;
	}
	return index_mail_get_special(_mail, field, value_r);
}

/* Check every chunk before the first byte of the body goes out, in the
   stream's own snapshot: a POP3 RETR ends with "." even when the stream
   breaks mid-way, and a client in delete mode would then DELE mail it
   never got whole. */
static int lmdb_mail_verify_body(struct lmdb_mail *mail)
{
	struct mail *_mail = &mail->imail.mail.mail;
	const char *error;
	int ret;

	ret = lmdb_istream_verify(mail->body_stream, &error);
	if (ret < 0) {
		mail_set_critical(_mail, "lmdb: uid=%u body %"PRIu64": %s",
				  _mail->uid, mail->link.body_id, error);
		return -1;
	}
	if (ret == 0) {
		lmdb_mail_set_damaged(_mail, "uid=%u body %"PRIu64
				      " (GUID %s) is damaged: %s", _mail->uid,
				      mail->link.body_id, mail->body.guid,
				      error);
		return -1;
	}
	mail->body_verified = TRUE;
	return 0;
}

static int lmdb_mail_open_stream(struct lmdb_mail *mail, bool get_body,
				 struct istream **stream_r)
{
	struct mail *_mail = &mail->imail.mail.mail;
	struct mail_private *pmail = &mail->imail.mail;
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(_mail->box);
	struct lmdb_body_reader *reader;
	struct lmdb_body_record rec;
	struct istream *input;
	const char *error;
	int ret;

	if (!mail_stream_access_start(_mail))
		return -1;
	if (lmdb_mail_get_records(mail) < 0)
		return -1;
	/* a header-only read checks the chunks it reads as it goes; the
	   whole body is checked when the body is asked for */
	mail->body_verified = FALSE;
	i_stream_unref(&mail->body_stream);
	if (mail->deferred != NULL) {
		/* in memory, never on disk yet: nothing to check */
		input = lmdb_body_writer_open_stream(mail->deferred);
		mail->body_verified = TRUE;
	} else {
		ret = lmdb_body_reader_open(mbox->storage->env,
					    mail->link.body_id,
					    mail->records_pool, &rec, &reader,
					    &error);
		if (ret <= 0) {
			if (ret == 0) {
				/* freed since its link was read: the
				   message was expunged meanwhile */
				mail_set_expunged(_mail);
			} else if (ret == -2) {
				lmdb_mail_set_damaged(_mail, "uid=%u: %s",
						      _mail->uid, error);
			} else {
				mail_set_critical(_mail, "lmdb: uid=%u: %s",
						  _mail->uid, error);
			}
			return -1;
		}
		input = lmdb_istream_create(reader, mail->link.body_id, &rec);
		if ((_mail->box->flags & MAILBOX_FLAG_POP3_SESSION) != 0)
			lmdb_istream_set_fatal_on_error(input);
		mail->body_stream = input;
		i_stream_ref(mail->body_stream);
		if (get_body && lmdb_mail_verify_body(mail) < 0) {
			i_stream_unref(&mail->body_stream);
			i_stream_unref(&input);
			return -1;
		}
	}
	*stream_r = input;
	if (pmail->v.istream_opened != NULL) {
		if (pmail->v.istream_opened(_mail, stream_r) < 0) {
			i_stream_unref(stream_r);
			return -1;
		}
	}
	return 0;
}

static int
lmdb_mail_get_stream(struct mail *_mail, bool get_body,
		     struct message_size *hdr_size,
		     struct message_size *body_size,
		     struct istream **stream_r)
{
	struct lmdb_mail *mail = LMDB_MAIL(_mail);
	struct index_mail_data *data = &mail->imail.data;
	struct istream *input;

	if (data->stream == NULL) {
		if (lmdb_mail_open_stream(mail, get_body, &input) < 0)
			return -1;
		data->stream = input;
		index_mail_set_read_buffer_size(_mail, input);
	} else if (get_body && !mail->body_verified &&
		   mail->body_stream != NULL) {
		if (lmdb_mail_verify_body(mail) < 0)
			return -1;
	}
	return index_mail_init_stream(&mail->imail, hdr_size, body_size,
				      stream_r);
}

struct mail_vfuncs lmdb_mail_vfuncs = {
	.close = lmdb_mail_close,
	.free = lmdb_mail_free,
	.set_seq = index_mail_set_seq,
	.set_uid = index_mail_set_uid,
	.set_uid_cache_updates = index_mail_set_uid_cache_updates,
	.prefetch = index_mail_prefetch,
	.precache = index_mail_precache,
	.add_temp_wanted_fields = index_mail_add_temp_wanted_fields,

	.get_flags = index_mail_get_flags,
	.get_keywords = index_mail_get_keywords,
	.get_keyword_indexes = index_mail_get_keyword_indexes,
	.get_modseq = index_mail_get_modseq,
	.get_pvt_modseq = index_mail_get_pvt_modseq,
	.get_parts = index_mail_get_parts,
	.get_date = index_mail_get_date,
	.get_received_date = lmdb_mail_get_received_date,
	.get_save_date = lmdb_mail_get_save_date,
	.get_virtual_size = lmdb_mail_get_virtual_size,
	.get_physical_size = lmdb_mail_get_physical_size,
	.get_first_header = index_mail_get_first_header,
	.get_headers = index_mail_get_headers,
	.get_header_stream = index_mail_get_header_stream,
	.get_stream = lmdb_mail_get_stream,
	.get_binary_stream = index_mail_get_binary_stream,
	.get_special = lmdb_mail_get_special,
	.get_backend_mail = index_mail_get_backend_mail,
	.update_flags = index_mail_update_flags,
	.update_keywords = index_mail_update_keywords,
	.update_modseq = index_mail_update_modseq,
	.update_pvt_modseq = index_mail_update_pvt_modseq,
	.update_pop3_uidl = lmdb_mail_update_pop3_uidl,
	.expunge = index_mail_expunge,
	.set_cache_corrupted = index_mail_set_cache_corrupted,
	.istream_opened = index_mail_opened,
};
