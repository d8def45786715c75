/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-sync.h"
#include "lmdb-uidl.h"
#include "lmdb-uidls.h"
#include "lmdb-save.h"

/* Committing a save or copy transaction: under the mailbox's index sync
   lock, UIDs are assigned, each message's POP3 UIDL made its own, and all
   links written in one LMDB transaction before the index commit; after
   it, LMDB's flush decides whether the save is acknowledged. */

struct lmdb_save_link_ctx {
	struct lmdb_save_context *save;
	const guid_128_t *mailbox_guid;
	/* FALSE: write the links; TRUE: undo them */
	bool undo;
	/* the mailbox record as the index knows it, for a damaged one */
	struct lmdb_mailbox_record fallback;
	/* results */
	const char *damage;
	/* a copied message's body was freed meanwhile (expunged) */
	bool copy_expunged;
	uint32_t uid_validity;
	/* a dsync transaction (MAILBOX_TRANSACTION_FLAG_SYNC) */
	bool dsync;
	/* UIDLs that were taken and replaced, for the log */
	const char *uidl_changes;
};

/* Returns 1 if the link was removed, 0 if it wasn't ours, or an LMDB
   code. */
static int
lmdb_save_undo_link(struct lmdb_save_link_ctx *lctx, MDB_txn *txn,
		    const struct lmdb_save_mail *smail, const char **error_r)
{
	struct lmdb_env *env = lctx->save->mbox->storage->env;
	struct lmdb_link_record old;
	uint64_t vsize;
	int ret;

	ret = lmdb_link_get(env, txn, *lctx->mailbox_guid, smail->uid,
			    pool_datastack_create(), &old, error_r);
	if (ret <= 0 || old.body_id != smail->body_id)
		return 0;
	if ((ret = lmdb_link_delete(env, txn, *lctx->mailbox_guid,
				    smail->uid, error_r)) != 0 ||
	    (ret = lmdb_uidls_unset(env, txn, *lctx->mailbox_guid,
				    old.pop3_uidl, smail->uid, error_r)) != 0)
		return ret;
	ret = lmdb_body_release(env, txn, smail->body_id, ioloop_time,
				&vsize, error_r);
	return ret == MDB_NOTFOUND || ret == 0 ? 1 : ret;
}

/* At most this many alternatives are tried for a UIDL that is taken. */
#define LMDB_SAVE_UIDL_ALTERNATIVES 100

/* Is uidl held by a link of the mailbox other than smail's own? An entry
   whose link is gone or holds another UIDL is stale: dropped. A link to
   the same body counts as the same message only in dsync's transactions
   (a UID conflict renumbers a message and expunges its old UID in the
   same run) and when it is the source of a MOVE within the mailbox;
   elsewhere (a copy moved back where its original is) it is another
   message. Returns 1 if taken, 0 if free, or -1 with an LMDB
   code in *ret_r. */
static int
lmdb_save_uidl_taken(struct lmdb_save_link_ctx *lctx, MDB_txn *txn,
		     const struct lmdb_save_mail *smail, const char *uidl,
		     int *ret_r, const char **error_r)
{
	struct lmdb_env *env = lctx->save->mbox->storage->env;
	const guid_128_t *guid = lctx->mailbox_guid;
	struct lmdb_link_record link;
	ARRAY_TYPE(lmdb_uid) holders;
	uint32_t holder;
	int ret;

	t_array_init(&holders, 4);
	if ((*ret_r = lmdb_uidls_holders(env, txn, *guid, uidl, &holders,
					 error_r)) != 0)
		return -1;
	array_foreach_elem(&holders, holder) {
		if (holder == smail->uid)
			continue;
		ret = lmdb_link_get(env, txn, *guid, holder,
				    pool_datastack_create(), &link, error_r);
		if (ret == -1) {
			*ret_r = MDB_CORRUPTED;
			return -1;
		}
		if (ret <= 0 || strcmp(link.pop3_uidl, uidl) != 0) {
			if ((*ret_r = lmdb_uidls_unset(env, txn, *guid, uidl,
						       holder, error_r)) != 0)
				return -1;
			continue;
		}
		if (link.body_id == smail->body_id &&
		    (lctx->dsync || holder == smail->moved_from_uid))
			continue;
		return 1;
	}
	return 0;
}

/* Make smail's UIDL its own in the mailbox. A UIDL held by another
   message stays with that one (its POP3 clients have seen it) and the
   newcomer gets the value of Dovecot's default format for its own UID,
   which a UID never reused keeps free (a suffix if even that is taken). */
static int
lmdb_save_claim_uidl(struct lmdb_save_link_ctx *lctx, MDB_txn *txn,
		     struct lmdb_save_mail *smail, const char **error_r)
{
	struct lmdb_save_context *ctx = lctx->save;
	struct lmdb_env *env = ctx->mbox->storage->env;
	const char *uidl = smail->pop3_uidl, *given = smail->pop3_uidl;
	unsigned int n;
	int ret, taken;

	if (uidl == NULL || uidl[0] == '\0')
		return 0;
	for (n = 0; n < LMDB_SAVE_UIDL_ALTERNATIVES; n++) {
		taken = lmdb_save_uidl_taken(lctx, txn, smail, uidl, &ret,
					     error_r);
		if (taken < 0)
			return ret;
		if (taken == 0)
			break;
		uidl = n == 0 ?
			t_strdup_printf("%08x%08x", smail->uid,
					lctx->uid_validity) :
			t_strdup_printf("%08x%08x-%u", smail->uid,
					lctx->uid_validity, n);
	}
	if (n == LMDB_SAVE_UIDL_ALTERNATIVES) {
		*error_r = t_strdup_printf("no free POP3 UIDL for uid=%u",
					   smail->uid);
		return EINVAL;
	}
	if (uidl != given) {
		smail->pop3_uidl = p_strdup(ctx->pool, uidl);
		lctx->uidl_changes = p_strdup_printf(ctx->pool,
			"%s%suid=%u: %s -> %s", lctx->uidl_changes == NULL ?
			"" : lctx->uidl_changes, lctx->uidl_changes == NULL ?
			"" : ", ", smail->uid, given, uidl);
	}
	return lmdb_uidls_set(env, txn, *lctx->mailbox_guid, smail->pop3_uidl,
			      smail->uid, error_r);
}

static int
lmdb_save_link_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_save_link_ctx *lctx = context;
	struct lmdb_save_context *ctx = lctx->save;
	struct lmdb_env *env = ctx->mbox->storage->env;
	struct lmdb_save_mail *smail;
	struct lmdb_link_record link;
	struct lmdb_mailbox_record mrec;
	pool_t pool = pool_datastack_create();
	uint32_t highest_uid = 0;
	int64_t links = 0, vsize_bytes = 0;
	int ret;

	lctx->damage = NULL;
	lctx->copy_expunged = FALSE;
	lctx->uidl_changes = NULL;
	array_foreach_modifiable(&ctx->mails, smail) {
		if (lctx->undo) {
			ret = lmdb_save_undo_link(lctx, txn, smail, error_r);
			if (ret == 0)
				continue;
			if (ret != 1)
				return ret;
			links--;
			vsize_bytes -= smail->virtual_size;
			continue;
		}
		if (smail->deferred != NULL &&
		    (ret = lmdb_body_writer_write_txn(smail->deferred, txn,
					&smail->body_id, error_r)) != 0)
			return ret;
		if ((ret = lmdb_save_claim_uidl(lctx, txn, smail,
						error_r)) != 0)
			return ret;
		i_zero(&link);
		link.body_id = smail->body_id;
		link.save_date = smail->save_date;
		link.flags = smail->flags;
		link.pop3_uidl = smail->pop3_uidl;
		link.pop3_order = smail->pop3_order;
		link.keywords = smail->keywords;
		link.keywords_count = smail->keywords_count;
		/* an existing link (MDB_KEYEXIST) can only be damage: sync
		   adopted every link at or above next_uid */
		if ((ret = lmdb_link_add(env, txn, *lctx->mailbox_guid,
					 smail->uid, &link, error_r)) != 0)
			return ret;
		ret = lmdb_body_ref(env, txn, smail->body_id, 1, ioloop_time,
				    NULL, error_r);
		if (ret == MDB_NOTFOUND && smail->copied) {
			/* another session expunged the original and its
			   body was freed before this copy committed */
			lctx->copy_expunged = TRUE;
		}
		if (ret != 0)
			return ret;
		links++;
		vsize_bytes += smail->virtual_size;
		highest_uid = I_MAX(highest_uid, smail->uid);
	}
	/* the env record is one key every commit rewrites: once per
	   transaction, not once per mail */
	if (links != 0 &&
	    (ret = lmdb_link_count(env, txn, links, vsize_bytes,
				   error_r)) != 0)
		return ret;
	if (lctx->undo)
		return 0;

	lctx->fallback.highest_uid = I_MAX(lctx->fallback.highest_uid,
					   highest_uid);
	ret = lmdb_mailbox_get_repair(env, txn, *lctx->mailbox_guid,
				      &lctx->fallback, pool, &mrec,
				      &lctx->damage, error_r);
	if (ret < 0)
		return MDB_CORRUPTED;
	if (lctx->damage != NULL)
		lctx->damage = p_strdup(ctx->pool, lctx->damage);
	if (ret > 0 && mrec.highest_uid < highest_uid) {
		mrec.highest_uid = highest_uid;
		return lmdb_mailbox_put(env, txn, *lctx->mailbox_guid, &mrec,
					error_r);
	}
	return 0;
}

static int lmdb_save_write_links(struct lmdb_save_context *ctx, bool undo)
{
	struct lmdb_save_link_ctx lctx;
	const char *error;
	int ret;

	i_zero(&lctx);
	lctx.save = ctx;
	lctx.mailbox_guid = &ctx->mbox->mailbox_guid;
	lctx.undo = undo;
	lctx.uid_validity = ctx->uid_validity;
	lctx.dsync = ctx->dsync;
	if (ctx->sync_ctx != NULL) {
		lmdb_mailbox_fallback_record(ctx->mbox,
					     ctx->sync_ctx->sync_view,
					     &lctx.fallback);
	} else {
		lmdb_mailbox_fallback_record(ctx->mbox, ctx->mbox->box.view,
					     &lctx.fallback);
	}
	/* no fsync while the mailbox's index lock is held: concurrent
	   deliveries would queue behind each other's disk waits. The sync
	   follows in commit_post, outside the lock, and the commit fails if
	   it fails (lmdb_transaction_commit()). */
	ret = lmdb_env_write(ctx->mbox->storage->env, lmdb_save_link_txn,
			     &lctx, undo, &error);
	if (ret == 0 && !undo)
		ctx->need_env_sync = TRUE;
	if (ret == 0 && lctx.uidl_changes != NULL) {
		e_info(ctx->mbox->box.event, "lmdb: POP3 UIDLs another message "
		       "of the mailbox already has were replaced: %s",
		       lctx.uidl_changes);
	}
	if (ret == 0 && lctx.damage != NULL) {
		e_error(ctx->mbox->box.event, "lmdb: %s: mailbox record "
			"was damaged (%s): rewritten from the index",
			ctx->mbox->storage->env_path, lctx.damage);
	}
	if (ret != 0 && !undo) {
		struct lmdb_save_mail *smail;

		/* ids of deferred bodies from the aborted transaction */
		array_foreach_modifiable(&ctx->mails, smail) {
			if (smail->deferred != NULL)
				smail->body_id = 0;
		}
	}
	if (ret != 0) {
		if (ret == MDB_KEYEXIST) {
			mailbox_set_critical(&ctx->mbox->box,
				"lmdb: %s (index and LMDB disagree; "
				"run doveadm force-resync)", error);
		} else if (lctx.copy_expunged) {
			mail_storage_set_error(&ctx->mbox->storage->storage,
				MAIL_ERROR_EXPUNGED,
				"Some of the requested messages no longer exist.");
		} else {
			lmdb_storage_set_lmdb_error(&ctx->mbox->storage->storage,
				ret, t_strdup_printf("%s: %s links failed: %s",
					ctx->mbox->box.vname,
					undo ? "Undoing" : "Writing", error));
		}
		return -1;
	}
	return 0;
}

static void lmdb_save_assign_uids(struct lmdb_save_context *ctx,
				  const ARRAY_TYPE(seq_range) *uids)
{
	struct lmdb_save_mail *smail;
	struct seq_range_iter iter;
	unsigned int n = 0;
	uint32_t uid;
	bool ret;

	seq_range_array_iter_init(&iter, uids);
	array_foreach_modifiable(&ctx->mails, smail) {
		ret = seq_range_array_iter_nth(&iter, n++, &uid);
		i_assert(ret);
		smail->uid = uid;
	}
	i_assert(!seq_range_array_iter_nth(&iter, n, &uid));
}

static void lmdb_save_update_pop3_header(struct lmdb_save_context *ctx)
{
	const struct lmdb_save_mail *smail;
	uint32_t highest_uidl_uid = 0;
	bool have_order = FALSE;

	array_foreach(&ctx->mails, smail) {
		if (smail->pop3_uidl != NULL && smail->pop3_uidl[0] != '\0')
			highest_uidl_uid = I_MAX(highest_uidl_uid, smail->uid);
		if (smail->pop3_order != 0)
			have_order = TRUE;
	}
	lmdb_uidl_note_saved(ctx->mbox, ctx->trans, highest_uidl_uid,
			     have_order);
}

int lmdb_transaction_save_commit_pre(struct mail_save_context *_ctx)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);
	struct mailbox_transaction_context *_t = _ctx->transaction;
	const struct mail_index_header *hdr;

	i_assert(ctx->finished);

	if (array_count(&ctx->mails) == 0)
		return 0;

	for (;;) {
		/* no index fsync: the links in LMDB are what makes the
		   save durable (see lmdb_mailbox_open()) */
		if (lmdb_sync_begin(ctx->mbox, LMDB_SYNC_FLAG_FORCE,
				    &ctx->sync_ctx) < 0) {
			lmdb_transaction_save_rollback(_ctx);
			return -1;
		}
		i_assert(ctx->sync_ctx != NULL);
		if (ctx->sync_ctx->adopted_count == 0 &&
		    !ctx->sync_ctx->raised_next_uid)
			break;
		/* links left by a crash were appended (a batch of them),
		   or next_uid raised past UIDs a lost index tail had used,
		   in the sync transaction: commit that first, so our UIDs
		   come after; every round makes progress */
		if (lmdb_sync_finish(&ctx->sync_ctx, TRUE) < 0) {
			lmdb_transaction_save_rollback(_ctx);
			return -1;
		}
	}

	hdr = mail_index_get_header(ctx->sync_ctx->sync_view);
	mail_index_append_finish_uids(ctx->trans, hdr->next_uid,
				      &_t->changes->saved_uids);
	lmdb_save_assign_uids(ctx, &_t->changes->saved_uids);
	ctx->uid_validity = hdr->uid_validity;
	lmdb_uidl_assign(ctx->mbox, hdr->uid_validity, ctx->pool, &ctx->mails);
	lmdb_save_update_pop3_header(ctx);

	if (lmdb_save_write_links(ctx, FALSE) < 0) {
		lmdb_transaction_save_rollback(_ctx);
		return -1;
	}
	ctx->links_written = TRUE;
	_t->changes->uid_validity = hdr->uid_validity;
	return 0;
}

static void lmdb_save_discard_pending(struct lmdb_save_context *ctx)
{
	const struct lmdb_save_mail *smail;
	const char *error;

	array_foreach(&ctx->mails, smail) {
		if (smail->copied || smail->body_id == 0)
			continue;
		if (lmdb_body_discard(ctx->mbox->storage->env, smail->body_id,
				      &error) < 0) {
			e_error(ctx->mbox->box.event,
				"lmdb: Failed to discard unsaved body "
				"%"PRIu64" (left for purge): %s",
				smail->body_id, error);
		}
	}
}

void lmdb_save_free(struct lmdb_save_context *ctx)
{
	struct lmdb_save_mail *smail;

	if (ctx->writer != NULL)
		lmdb_body_writer_free(&ctx->writer);
	array_foreach_modifiable(&ctx->mails, smail) {
		if (smail->deferred != NULL)
			lmdb_body_writer_free(&smail->deferred);
	}
	pool_unref(&ctx->pool);
}

void lmdb_transaction_save_commit_post(struct mail_save_context *_ctx,
	struct mail_index_transaction_commit_result *result)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);
	bool index_failed;

	_ctx->transaction = NULL; /* already freed */

	if (array_count(&ctx->mails) == 0) {
		lmdb_transaction_save_rollback(_ctx);
		return;
	}
	/* the result is zeroed when the index commit failed */
	index_failed = result->log_file_seq == 0;
	if (index_failed) {
		/* the links must not outlive the index records they were
		   written for: the bodies return to the GC */
		(void)lmdb_save_write_links(ctx, TRUE);
		(void)lmdb_sync_finish(&ctx->sync_ctx, FALSE);
	} else {
		mail_index_sync_set_commit_result(
			ctx->sync_ctx->index_sync_ctx, result);
		(void)lmdb_sync_finish(&ctx->sync_ctx, TRUE);
	}
	if (ctx->need_env_sync && !index_failed) {
		const char *error;

		/* concurrent deliveries' syncs of the same file overlap here
		   instead of queueing under the index lock. If the disk
		   refuses, the save must not be acknowledged: the commit
		   fails (lmdb_transaction_commit()), though the message may
		   appear later if the kernel writes it after all. */
		if (lmdb_env_sync(ctx->mbox->storage->env, &error) < 0) {
			i_free(ctx->mbox->commit_sync_error);
			ctx->mbox->commit_sync_error = i_strdup(error);
		}
	}
	lmdb_save_free(ctx);
}

void lmdb_transaction_save_rollback(struct mail_save_context *_ctx)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);

	if (!ctx->finished)
		lmdb_save_cancel(_ctx);
	if (ctx->links_written)
		(void)lmdb_save_write_links(ctx, TRUE);
	if (ctx->sync_ctx != NULL)
		(void)lmdb_sync_finish(&ctx->sync_ctx, FALSE);
	lmdb_save_discard_pending(ctx);
	lmdb_save_free(ctx);
}
