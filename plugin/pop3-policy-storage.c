/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "mail-namespace.h"
#include "mailbox-list-private.h"
#include "pop3-policy-env.h"
#include "pop3-policy-plugin.h"

/* Mailbox and mail hooks: which mailboxes and mails get which policy,
   and the buffer of state writes that is flushed in one LMDB
   transaction per mailbox commit/close (a UIDL listing of 100,000
   messages must not cost 100,000 commits). */

struct pop3_policy_pending *
pop3_policy_pending_get(struct pop3_policy_mailbox *pbox, const char *guid)
{
	struct pop3_policy_pending *pending;

	if (pbox->pending_pool == NULL) {
		pbox->pending_pool = pool_alloconly_create(
			"pop3_policy pending", 4096);
		p_array_init(&pbox->pending, pbox->pending_pool, 64);
		hash_table_create(&pbox->pending_by_guid, pbox->pending_pool,
				  0, str_hash, strcmp);
		hash_table_create(&pbox->pending_uidls, pbox->pending_pool,
				  0, str_hash, strcmp);
	}
	pending = hash_table_lookup(pbox->pending_by_guid, guid);
	if (pending == NULL) {
		pending = p_new(pbox->pending_pool,
				struct pop3_policy_pending, 1);
		pending->guid = p_strdup(pbox->pending_pool, guid);
		hash_table_insert(pbox->pending_by_guid, pending->guid,
				  pending);
		array_push_back(&pbox->pending, &pending);
	}
	return pending;
}

static void pop3_policy_pending_free(struct pop3_policy_mailbox *pbox)
{
	if (pbox->pending_pool == NULL)
		return;
	hash_table_destroy(&pbox->pending_by_guid);
	hash_table_destroy(&pbox->pending_uidls);
	pool_unref(&pbox->pending_pool);
}

struct pop3_policy_flush_context {
	struct pop3_policy_mailbox *pbox;
	/* conflicts found in the transaction, logged after it */
	ARRAY_TYPE(const_string) warnings;
};

static int
pop3_policy_flush_one(struct pop3_policy_env *env, MDB_txn *txn,
		      struct pop3_policy_flush_context *ctx,
		      const struct pop3_policy_pending *pending,
		      const char **error_r)
{
	struct pop3_policy_msg_record rec;
	struct pop3_policy_uidl_record urec;
	const char *damage;
	bool changed = FALSE;
	int ret;

	ret = pop3_policy_env_msg_lookup(env, txn, pending->guid, &rec,
					 &damage, error_r);
	if (ret < 0)
		return MDB_CORRUPTED;
	if (damage != NULL &&
	    (pending->uidl != NULL || pending->download != 0 ||
	     pending->hidden)) {
		/* never read back: replaced by what this session knows.
		   What is lost is safe to lose: a first download (the
		   message then counts as not downloaded, kept longer) and
		   the hidden bit (the keyword is the truth); the UIDL came
		   from the reservation or was derived again, with a warning
		   (pop3-policy-uidl.c) */
		const char *w = t_strdup_printf("%s (written again)", damage);
		array_push_back(&ctx->warnings, &w);
	}
	if (ret == 0) {
		/* an arrival of a message the plugin doesn't know needs no
		   record */
		if (pending->uidl == NULL && pending->download == 0 &&
		    !pending->hidden)
			return 0;
		i_zero(&rec);
		rec.uidl = "";
		rec.guid = pending->guid;
		changed = TRUE;
	} else if (pending->arrived && rec.first_download != 0) {
		/* back in the maildrop: downloads before don't count (see
		   "Messages that come back" in docs/pop3-policy.md); its
		   UIDL stays */
		rec.first_download = 0;
		changed = TRUE;
	}
	if (pending->uidl != NULL) {
		if (rec.uidl[0] == '\0') {
			ret = pop3_policy_env_uidl_lookup(env, txn,
							  pending->uidl, &urec,
							  &damage, error_r);
			if (ret < 0)
				return MDB_CORRUPTED;
			if (ret == 0 && damage != NULL) {
				/* this session showed the UIDL for this GUID:
				   reserved for it again, rather than failing
				   the session's whole write */
				const char *w = t_strdup_printf(
					"%s (written again for GUID %s)",
					damage, pending->guid);
				array_push_back(&ctx->warnings, &w);
			}
			if (ret > 0 && strcmp(urec.guid, pending->guid) != 0) {
				/* another session froze the same UIDL for
				   another message since we checked */
				const char *w = t_strdup_printf(
					"UIDL %s shown for GUID %s was frozen "
					"concurrently for GUID %s (use "
					"pop3_lock_session=yes)", pending->uidl,
					pending->guid, urec.guid);
				array_push_back(&ctx->warnings, &w);
			} else if (ret == 0) {
				urec.guid = pending->guid;
				if ((ret = pop3_policy_env_uidl_put(env, txn,
						pending->uidl, &urec,
						error_r)) != 0)
					return ret;
			}
			rec.uidl = pending->uidl;
			changed = TRUE;
		} else if (strcmp(rec.uidl, pending->uidl) != 0) {
			const char *w = t_strdup_printf(
				"GUID %s: UIDL %s was frozen concurrently, "
				"this session showed %s (use "
				"pop3_lock_session=yes)", pending->guid,
				rec.uidl, pending->uidl);
			array_push_back(&ctx->warnings, &w);
		}
	}
	if (pending->download != 0 && rec.first_download == 0) {
		rec.first_download = pending->download;
		changed = TRUE;
	}
	if (pending->hidden &&
	    (rec.flags & POP3_POLICY_MSG_FLAG_HIDDEN) == 0) {
		rec.flags |= POP3_POLICY_MSG_FLAG_HIDDEN;
		changed = TRUE;
	}
	if (!changed)
		return 0;
	if (rec.uidl[0] == '\0' && rec.first_download == 0 && rec.flags == 0)
		return pop3_policy_env_msg_del(env, txn, rec.guid, error_r);
	return pop3_policy_env_msg_put(env, txn, &rec, error_r);
}

static int
pop3_policy_flush_write(struct pop3_policy_env *env, MDB_txn *txn,
			void *context, const char **error_r)
{
	struct pop3_policy_flush_context *ctx = context;
	struct pop3_policy_pending *pending;
	int ret;

	array_clear(&ctx->warnings);
	array_foreach_elem(&ctx->pbox->pending, pending) {
		ret = pop3_policy_flush_one(env, txn, ctx, pending, error_r);
		if (ret != 0)
			return ret;
	}
	return 0;
}

static bool
pop3_policy_pending_only_arrivals(struct pop3_policy_mailbox *pbox)
{
	struct pop3_policy_pending *pending;

	array_foreach_elem(&pbox->pending, pending) {
		if (pending->uidl != NULL || pending->download != 0 ||
		    pending->hidden)
			return FALSE;
	}
	return TRUE;
}

int pop3_policy_pending_flush(struct pop3_policy_mailbox *pbox,
			      const char **error_r)
{
	struct pop3_policy_flush_context ctx;
	struct pop3_policy_env *env;
	const char *warning;
	int ret;

	if (pbox->pending_pool == NULL || array_count(&pbox->pending) == 0)
		return 0;
	if (pop3_policy_pending_only_arrivals(pbox)) {
		/* an IMAP copy into INBOX of a user who never used POP3
		   needn't create the file */
		ret = pop3_policy_user_get_env_if_exists(pbox->puser, &env,
							 error_r);
		if (ret == 0) {
			pop3_policy_pending_free(pbox);
			return 0;
		}
	} else {
		ret = pop3_policy_user_get_env(pbox->puser, &env, error_r);
	}
	if (ret < 0)
		return -1;
	i_zero(&ctx);
	ctx.pbox = pbox;
	t_array_init(&ctx.warnings, 4);
	ret = pop3_policy_env_write(env, pop3_policy_flush_write, &ctx,
				    error_r);
	array_foreach_elem(&ctx.warnings, warning) {
		e_warning(pbox->puser->user->event,
			  POP3_POLICY_LOG_PREFIX"%s", warning);
	}
	/* on failure the writes are lost either way: retrying at every
	   commit would only repeat the error */
	pop3_policy_pending_free(pbox);
	return ret == 0 ? 0 : -1;
}

/* The transaction didn't commit: nothing arrived. */
static void pop3_policy_pending_no_arrivals(struct pop3_policy_mailbox *pbox)
{
	struct pop3_policy_pending *pending;

	if (pbox->pending_pool == NULL)
		return;
	array_foreach_elem(&pbox->pending, pending)
		pending->arrived = FALSE;
}

static void pop3_policy_flush_or_log(struct mailbox *box,
				     struct pop3_policy_mailbox *pbox)
{
	const char *error;

	T_BEGIN {
		if (pop3_policy_pending_flush(pbox, &error) < 0) {
			e_error(box->event, POP3_POLICY_LOG_PREFIX
				"Failed to save POP3 state: %s", error);
		}
	} T_END;
}

static int
pop3_policy_transaction_commit(struct mailbox_transaction_context *t,
			       struct mail_transaction_commit_changes *changes_r)
{
	struct mailbox *box = t->box;
	struct pop3_policy_mailbox *pbox = POP3_POLICY_MAILBOX_CONTEXT(box);
	int ret;

	/* a moved message must be in its destination before the source
	   loses it */
	if (pop3_policy_dele_transaction_commit(pbox, t) < 0) {
		pbox->module_ctx.super.transaction_rollback(t);
		pop3_policy_dele_audit_end(pbox, FALSE);
		pop3_policy_pending_no_arrivals(pbox);
		pop3_policy_flush_or_log(box, pbox);
		return -1;
	}
	ret = pbox->module_ctx.super.transaction_commit(t, changes_r);
	pop3_policy_dele_audit_end(pbox, ret == 0);
	if (ret < 0)
		pop3_policy_pending_no_arrivals(pbox);
	/* no Dovecot lock is held any more: safe to take the LMDB writer */
	pop3_policy_flush_or_log(box, pbox);
	return ret;
}

static void
pop3_policy_transaction_rollback(struct mailbox_transaction_context *t)
{
	struct mailbox *box = t->box;
	struct pop3_policy_mailbox *pbox = POP3_POLICY_MAILBOX_CONTEXT(box);

	pop3_policy_dele_transaction_rollback(pbox);
	pbox->module_ctx.super.transaction_rollback(t);
	pop3_policy_pending_no_arrivals(pbox);
	/* UIDLs were shown and downloads happened whatever becomes of the
	   transaction */
	pop3_policy_flush_or_log(box, pbox);
}

/* A message copied or moved into the maildrop, or saved into it with a
   GUID it had before (dsync): note its arrival. */
static void pop3_policy_note_arrival(struct pop3_policy_mailbox *pbox,
				     const char *guid)
{
	if (pbox->maildrop && guid != NULL && guid[0] != '\0')
		pop3_policy_pending_get(pbox, guid)->arrived = TRUE;
}

static int pop3_policy_copy(struct mail_save_context *ctx, struct mail *mail)
{
	struct pop3_policy_mailbox *pbox =
		POP3_POLICY_MAILBOX_CONTEXT(ctx->transaction->box);
	const char *guid;

	if (pbox->module_ctx.super.copy(ctx, mail) < 0)
		return -1;
	if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) == 0)
		pop3_policy_note_arrival(pbox, guid);
	return 0;
}

static int pop3_policy_save_finish(struct mail_save_context *ctx)
{
	struct pop3_policy_mailbox *pbox =
		POP3_POLICY_MAILBOX_CONTEXT(ctx->transaction->box);
	const char *guid = t_strdup(ctx->data.guid);

	if (pbox->module_ctx.super.save_finish(ctx) < 0)
		return -1;
	pop3_policy_note_arrival(pbox, guid);
	return 0;
}

/* A POP3 session's maildrop opens only with the environment: without
   it no UIDL can be frozen or checked against the reservations, no keep
   DELE or download recorded. Refused (-ERR [SYS/TEMP], logged) rather
   than served with fallback UIDLs, which every client would download
   again, and again when the environment is back. */
static int pop3_policy_mailbox_open(struct mailbox *box)
{
	struct pop3_policy_mailbox *pbox = POP3_POLICY_MAILBOX_CONTEXT(box);
	struct pop3_policy_env *env;
	const char *error;

	if (pop3_policy_user_get_env(pbox->puser, &env, &error) < 0) {
		e_error(box->event, POP3_POLICY_LOG_PREFIX
			"POP3 session refused: %s", error);
		mail_storage_set_error(box->storage, MAIL_ERROR_TEMP,
				       MAIL_ERRSTR_CRITICAL_MSG);
		return -1;
	}
	return pbox->module_ctx.super.open(box);
}

static void pop3_policy_mailbox_close(struct mailbox *box)
{
	struct pop3_policy_mailbox *pbox = POP3_POLICY_MAILBOX_CONTEXT(box);

	/* a transaction still open at close never commits */
	pop3_policy_pending_no_arrivals(pbox);
	pop3_policy_flush_or_log(box, pbox);
	pop3_policy_dele_close(pbox);
	pbox->module_ctx.super.close(box);
}

static void pop3_policy_mailbox_free(struct mailbox *box)
{
	struct pop3_policy_mailbox *pbox = POP3_POLICY_MAILBOX_CONTEXT(box);

	/* a mailbox that was never opened is never closed */
	pop3_policy_pending_no_arrivals(pbox);
	pop3_policy_flush_or_log(box, pbox);
	pop3_policy_pending_free(pbox);
	pbox->module_ctx.super.free(box);
}

void pop3_policy_mailbox_allocated(struct mailbox *box)
{
	struct mailbox_vfuncs *v = box->vlast;
	struct pop3_policy_user *puser =
		POP3_POLICY_USER_CONTEXT(box->storage->user);
	struct pop3_policy_mailbox *pbox;
	bool maildrop;

	if (puser == NULL)
		return;
	maildrop = box->inbox_user &&
		box->list->ns == pop3_policy_user_inbox_ns(box->storage->user);
	if (!maildrop && (box->flags & MAILBOX_FLAG_POP3_SESSION) == 0)
		return;

	pbox = p_new(box->pool, struct pop3_policy_mailbox, 1);
	pbox->puser = puser;
	pbox->maildrop = maildrop;
	pbox->pop3_session = (box->flags & MAILBOX_FLAG_POP3_SESSION) != 0;
	pbox->module_ctx.super = *v;
	box->vlast = &pbox->module_ctx.super;
	v->transaction_commit = pop3_policy_transaction_commit;
	v->transaction_rollback = pop3_policy_transaction_rollback;
	v->close = pop3_policy_mailbox_close;
	v->free = pop3_policy_mailbox_free;
	if (maildrop && pbox->pop3_session)
		v->open = pop3_policy_mailbox_open;
	if (maildrop) {
		v->copy = pop3_policy_copy;
		v->save_finish = pop3_policy_save_finish;
	}
	MODULE_CONTEXT_SET(box, pop3_policy_storage_module, pbox);

	if (pbox->pop3_session)
		puser->pop3_inbox_opened = TRUE;
}

static void pop3_policy_mail_close(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct pop3_policy_mail *pmail = POP3_POLICY_MAIL_CONTEXT(mail);

	pop3_policy_download_close(_mail);
	pmail->dele_done = FALSE;
	pmail->module_ctx.super.close(_mail);
}

static void pop3_policy_mail_free(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct pop3_policy_mail *pmail = POP3_POLICY_MAIL_CONTEXT(mail);

	pop3_policy_download_close(_mail);
	pmail->module_ctx.super.free(_mail);
}

void pop3_policy_mail_allocated(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct mail_vfuncs *v = mail->vlast;
	struct pop3_policy_mailbox *pbox =
		POP3_POLICY_MAILBOX_CONTEXT(_mail->box);
	struct pop3_policy_mail *pmail;

	if (pbox == NULL)
		return;

	pmail = p_new(mail->pool, struct pop3_policy_mail, 1);
	pmail->module_ctx.super = *v;
	mail->vlast = &pmail->module_ctx.super;
	/* frozen UIDLs are answered in every session, so that dsync
	   carries them to a new server; new ones are frozen only when a
	   POP3 client sees them */
	v->get_special = pop3_policy_uidl_get_special;
	v->close = pop3_policy_mail_close;
	v->free = pop3_policy_mail_free;
	if (pbox->pop3_session) {
		v->get_stream = pop3_policy_download_get_stream;
		v->expunge = pop3_policy_dele_expunge;
		v->update_keywords = pop3_policy_dele_update_keywords;
	}
	MODULE_CONTEXT_SET(mail, pop3_policy_mail_module, pmail);
}
