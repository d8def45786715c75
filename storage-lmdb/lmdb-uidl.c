/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "ioloop.h"
#include "index-mail.h"
#include "index-pop3-uidl.h"
#include "dlmdb-compat.h"
#include "lmdb-link.h"
#include "lmdb-records.h"
#include "lmdb-uidls.h"
#include "lmdb-values.h"
#include "lmdb-storage.h"
#include "lmdb-uidl.h"

int lmdb_uidl_check_format(const char *format, const char **error_r)
{
	static const enum dlmdb_uidl_var unusable[] = {
		DLMDB_UIDL_VAR_FILENAME,
		DLMDB_UIDL_VAR_MD5,
	};
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(unusable); i++) {
		if (!dlmdb_uidl_format_uses(format, unusable[i]))
			continue;
		*error_r = t_strdup_printf(
			"pop3_uidl_format=%s uses %s, which the lmdb storage "
			"can't provide: use %s (recommended) or %s%s", format,
			dlmdb_uidl_var_name(unusable[i]),
			dlmdb_uidl_var_name(DLMDB_UIDL_VAR_GUID),
			dlmdb_uidl_var_name(DLMDB_UIDL_VAR_UID),
			dlmdb_uidl_var_name(DLMDB_UIDL_VAR_UIDVALIDITY));
		return -1;
	}
	return 0;
}

void lmdb_uidl_assign(struct lmdb_mailbox *mbox, uint32_t uid_validity, pool_t pool,
		      ARRAY_TYPE(lmdb_save_mail) *mails)
{
	const char *format = mbox->box.storage->set->pop3_uidl_format;
	struct lmdb_save_mail *smail;
	string_t *str;
	const char *error;

	str = t_str_new(64);
	array_foreach_modifiable(mails, smail) {
		if (smail->pop3_uidl != NULL && smail->pop3_uidl[0] != '\0')
			continue;
		if (smail->new_uidl) {
			/* a copy: the value of Dovecot's default format for
			   its new UID, which no other message of the mailbox
			   can have (UIDs are never reused, and %g values are
			   32 digits long) */
			smail->pop3_uidl = p_strdup_printf(pool, "%08x%08x",
							   smail->uid,
							   uid_validity);
			continue;
		}
		if (format == NULL || format[0] == '\0')
			continue;
		const struct dlmdb_uidl_vars vars = {
			.uid = smail->uid,
			.uid_validity = uid_validity,
			.guid = smail->guid != NULL ? smail->guid : "",
			.md5 = "",
			.filename = "",
		};
		str_truncate(str, 0);
		if (dlmdb_uidl_format_expand(str, format, &vars, &error) < 0 ||
		    !lmdb_uidl_is_valid(str_c(str))) {
			/* leave it to the POP3 server's own formatting;
			   it will report the error to the client */
			continue;
		}
		smail->pop3_uidl = p_strdup(pool, str_c(str));
	}
}

struct lmdb_uidl_update {
	uint32_t uid;
	const char *uidl;
};
ARRAY_DEFINE_TYPE(lmdb_uidl_update, struct lmdb_uidl_update);

struct lmdb_transaction_context {
	union mailbox_transaction_module_context module_ctx;
	pool_t pool;
	ARRAY_TYPE(lmdb_uidl_update) uidl_updates;
};

static MODULE_CONTEXT_DEFINE_INIT(lmdb_transaction_module,
				  &mail_storage_module_register);
#define LMDB_TRANSACTION_CONTEXT(obj) \
	MODULE_CONTEXT(obj, lmdb_transaction_module)

void lmdb_uidl_note_saved(struct lmdb_mailbox *mbox,
			  struct mail_index_transaction *trans,
			  uint32_t highest_uidl_uid, bool have_order)
{
	struct lmdb_index_header hdr;

	if (highest_uidl_uid != 0)
		index_pop3_uidl_set_max_uid(&mbox->box, trans, highest_uidl_uid);
	if ((highest_uidl_uid != 0 || have_order) &&
	    lmdb_read_header(mbox, &hdr, TRUE) == 0) {
		if (highest_uidl_uid != 0)
			hdr.flags |= LMDB_INDEX_HEADER_FLAG_HAVE_POP3_UIDLS;
		if (have_order)
			hdr.flags |= LMDB_INDEX_HEADER_FLAG_HAVE_POP3_ORDERS;
		lmdb_update_header(mbox, trans, &hdr);
	}
}

void lmdb_mail_update_pop3_uidl(struct mail *mail, const char *uidl)
{
	struct mailbox_transaction_context *t = mail->transaction;
	struct lmdb_transaction_context *lt = LMDB_TRANSACTION_CONTEXT(t);
	struct lmdb_uidl_update *upd;

	if (mail->saving || !lmdb_uidl_is_valid(uidl))
		return;
	if (lt == NULL) {
		pool_t pool = pool_alloconly_create("lmdb transaction", 1024);

		lt = p_new(pool, struct lmdb_transaction_context, 1);
		lt->pool = pool;
		p_array_init(&lt->uidl_updates, pool, 64);
		MODULE_CONTEXT_SET(t, lmdb_transaction_module, lt);
	}
	upd = array_append_space(&lt->uidl_updates);
	upd->uid = mail->uid;
	upd->uidl = p_strdup(lt->pool, uidl);

	/* the header says a UIDL may exist for this UID. Not cached here:
	   the write may fail or find a UIDL already stored, and a cached
	   UIDL is answered before the stored one; the next listing caches
	   what was stored. */
	index_pop3_uidl_set_max_uid(mail->box, t->itrans, mail->uid);
}

struct lmdb_uidl_write_ctx {
	struct lmdb_mailbox *mbox;
	const ARRAY_TYPE(lmdb_uidl_update) *updates;
};

static int
lmdb_uidl_write_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_uidl_write_ctx *ctx = context;
	struct lmdb_env *env = ctx->mbox->storage->env;
	const struct lmdb_uidl_update *upd;
	struct lmdb_link_record link;
	pool_t pool = pool_datastack_create();
	ARRAY_TYPE(lmdb_uid) holders;
	int ret;

	array_foreach(ctx->updates, upd) {
		ret = lmdb_link_get(env, txn, ctx->mbox->mailbox_guid,
				    upd->uid, pool, &link, error_r);
		/* damaged (left to verify), expunged meanwhile, or a UIDL
		   already fixed: a UIDL once stored never changes */
		if (ret <= 0 || link.pop3_uidl[0] != '\0')
			continue;
		/* taken by another message: not stored (the POP3 server
		   keeps computing it, and verify shows the clash) */
		t_array_init(&holders, 2);
		if ((ret = lmdb_uidls_holders(env, txn,
					      ctx->mbox->mailbox_guid,
					      upd->uidl, &holders,
					      error_r)) != 0)
			return ret;
		if (array_count(&holders) > 0)
			continue;
		if ((ret = lmdb_uidls_set(env, txn, ctx->mbox->mailbox_guid,
					  upd->uidl, upd->uid, error_r)) != 0)
			return ret;
		link.pop3_uidl = upd->uidl;
		if ((ret = lmdb_link_put(env, txn, ctx->mbox->mailbox_guid,
					 upd->uid, &link, error_r)) != 0)
			return ret;
	}
	return 0;
}

static void lmdb_transaction_free(struct lmdb_transaction_context *lt)
{
	pool_unref(&lt->pool);
}

int lmdb_transaction_commit(struct mailbox_transaction_context *t,
			    struct mail_transaction_commit_changes *changes_r)
{
	struct lmdb_transaction_context *lt = LMDB_TRANSACTION_CONTEXT(t);
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(t->box);
	struct lmdb_uidl_write_ctx ctx;
	const char *error;
	int ret;

	if (lt != NULL) {
		ctx.mbox = mbox;
		ctx.updates = &lt->uidl_updates;
		ret = lmdb_env_write(mbox->storage->env, lmdb_uidl_write_txn,
				     &ctx, TRUE, &error);
		if (ret != 0) {
			/* the UIDLs are written again the next time they
			   are listed: not worth failing the session */
			e_error(t->box->event, "lmdb: Saving %u POP3 UIDLs "
				"failed: %s", array_count(&lt->uidl_updates),
				error);
		}
		lmdb_transaction_free(lt);
	}
	i_free(mbox->commit_sync_error);
	ret = index_transaction_commit(t, changes_r);
	if (ret == 0 && mbox->commit_sync_error != NULL) {
		/* the index and LMDB hold the mail, but the disk didn't
		   take it: don't acknowledge (LMTP answers 451, IMAP NO) */
		mail_storage_set_critical(mbox->box.storage,
			"lmdb: %s (the save is not acknowledged: the mail may "
			"still appear, or vanish after a system crash)",
			mbox->commit_sync_error);
		i_free(mbox->commit_sync_error);
		ret = -1;
	}
	return ret;
}

void lmdb_transaction_rollback(struct mailbox_transaction_context *t)
{
	struct lmdb_transaction_context *lt = LMDB_TRANSACTION_CONTEXT(t);

	if (lt != NULL)
		lmdb_transaction_free(lt);
	index_transaction_rollback(t);
}
