/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "mail-index-modseq.h"
#include "mail-transaction-log-private.h"
#include "mailbox-recent-flags.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-sync.h"
#include "lmdb-storage.h"
#include "lmdb-uidls.h"
#include "lmdb-values.h"

/* a link's state as read from the index before the LMDB transaction:
   the transaction itself never calls back into Dovecot */
struct lmdb_sync_flag_update {
	uint32_t uid;
	uint8_t flags;
	uint64_t modseq;
	unsigned int keywords_count;
	const char *const *keywords;
};

struct lmdb_sync_write_ctx {
	struct lmdb_mailbox *mbox;
	const ARRAY_TYPE(seq_range) *expunged_uids;
	ARRAY(struct lmdb_sync_flag_update) updates;
	uint64_t highest_modseq;
	/* the mailbox record as the index knows it, for a damaged one */
	struct lmdb_mailbox_record fallback;

	/* counter changes of this write, applied once at its end */
	uint64_t links_removed, vsize_removed;
	/* damage met and stepped over, logged after the transaction */
	pool_t damage_pool;
	ARRAY_TYPE(const_string) damage;
};

static void lmdb_sync_damage(struct lmdb_sync_write_ctx *ctx,
			     const char *fmt, ...) ATTR_FORMAT(2, 3);
static void lmdb_sync_damage(struct lmdb_sync_write_ctx *ctx,
			     const char *fmt, ...)
{
	va_list args;
	const char *str;

	va_start(args, fmt);
	str = p_strdup_vprintf(ctx->damage_pool, fmt, args);
	va_end(args);
	array_push_back(&ctx->damage, &str);
}

static int
lmdb_sync_expunge_link(struct lmdb_sync_write_ctx *ctx, MDB_txn *txn,
		       uint32_t uid, const char **error_r)
{
	struct lmdb_env *env = ctx->mbox->storage->env;
	struct lmdb_link_record link;
	const char *error;
	uint64_t vsize = 0;
	int found, ret;

	ret = lmdb_link_take(env, txn, ctx->mbox->mailbox_guid, uid,
			     pool_datastack_create(), &link, &found, &error);
	if (ret != 0) {
		*error_r = error;
		return ret;
	}
	if (found == 0) {
		/* already gone: a sync that crashed after LMDB committed */
		return 0;
	}
	ctx->links_removed++;
	if (found > 0 &&
	    (ret = lmdb_uidls_unset(env, txn, ctx->mbox->mailbox_guid,
				    link.pop3_uidl, uid, error_r)) != 0)
		return ret;
	if (found < 0) {
		/* a damaged link must not block the expunge; its body's
		   reference is left to doveadm lmdb verify -r */
		lmdb_sync_damage(ctx, "%s: dropped it", error);
		return 0;
	}
	ret = lmdb_body_release(env, txn, link.body_id, ioloop_time, &vsize,
				&error);
	if (ret == MDB_NOTFOUND) {
		/* the link pointed at a body that's gone: nothing to drop */
		return 0;
	}
	if (ret == MDB_CORRUPTED) {
		/* the message goes all the same: one damaged body must not
		   stop every later sync of the mailbox */
		lmdb_sync_damage(ctx, "uid=%u: %s (its link was dropped; "
				 "doveadm lmdb verify -r frees the body)",
				 uid, error);
		return 0;
	}
	if (ret != 0) {
		*error_r = error;
		return ret;
	}
	ctx->vsize_removed += vsize;
	return 0;
}

static int
lmdb_sync_write_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_sync_write_ctx *ctx = context;
	struct lmdb_env *env = ctx->mbox->storage->env;
	const guid_128_t *guid = &ctx->mbox->mailbox_guid;
	const struct lmdb_sync_flag_update *upd;
	struct lmdb_link_record link;
	struct lmdb_mailbox_record mrec;
	struct seq_range_iter iter;
	const char *damage, *error;
	pool_t pool = pool_datastack_create();
	unsigned int n = 0;
	uint32_t uid;
	int ret;

	/* this may run again after the map grew */
	ctx->links_removed = ctx->vsize_removed = 0;
	p_clear(ctx->damage_pool);
	p_array_init(&ctx->damage, ctx->damage_pool, 4);
	if (ctx->expunged_uids != NULL) {
		seq_range_array_iter_init(&iter, ctx->expunged_uids);
		while (seq_range_array_iter_nth(&iter, n++, &uid)) {
			if ((ret = lmdb_sync_expunge_link(ctx, txn, uid,
							  error_r)) != 0)
				return ret;
		}
	}
	if (ctx->links_removed > 0 &&
	    (ret = lmdb_link_count(env, txn, -(int64_t)ctx->links_removed,
				   -(int64_t)ctx->vsize_removed,
				   error_r)) != 0)
		return ret;
	array_foreach(&ctx->updates, upd) {
		i_zero(&link);
		link.flags = upd->flags;
		link.modseq = upd->modseq;
		link.keywords_count = upd->keywords_count;
		link.keywords = upd->keywords;
		ret = lmdb_link_set_flags(env, txn, *guid, upd->uid, &link,
					  &error);
		if (ret == MDB_CORRUPTED) {
			/* the mirror of this one message can't be updated;
			   the index keeps its flags */
			lmdb_sync_damage(ctx, "%s: its flags were not "
					 "mirrored", error);
		} else if (ret != 0) {
			*error_r = error;
			return ret;
		}
	}
	if (ctx->highest_modseq != 0) {
		ret = lmdb_mailbox_get_repair(env, txn, *guid, &ctx->fallback,
					      pool, &mrec, &damage, error_r);
		if (ret < 0)
			return MDB_CORRUPTED;
		if (damage != NULL) {
			lmdb_sync_damage(ctx, "mailbox record was damaged "
					 "(%s): rewritten from the index",
					 damage);
		}
		if (ret > 0 && mrec.highest_modseq < ctx->highest_modseq) {
			mrec.highest_modseq = ctx->highest_modseq;
			if ((ret = lmdb_mailbox_put(env, txn, *guid, &mrec,
						    error_r)) != 0)
				return ret;
		}
	}
	return 0;
}

static void
lmdb_sync_get_flag_update(struct mail_index_view *view, uint32_t seq,
			  struct lmdb_sync_flag_update *upd_r)
{
	const struct mail_index_record *rec;
	const ARRAY_TYPE(keywords) *names;
	ARRAY_TYPE(keyword_indexes) idx;
	const char **keywords;
	unsigned int i, count, names_count;
	const unsigned int *idxs;
	const char *const *namep;

	rec = mail_index_lookup(view, seq);
	upd_r->flags = rec->flags & MAIL_FLAGS_NONRECENT;
	upd_r->modseq = mail_index_modseq_lookup(view, seq);

	t_array_init(&idx, 8);
	mail_index_lookup_keywords(view, seq, &idx);
	names = mail_index_get_keywords(view->index);
	names_count = array_count(names);
	idxs = array_get(&idx, &count);
	keywords = t_new(const char *, count + 1);
	upd_r->keywords_count = 0;
	for (i = 0; i < count && upd_r->keywords_count < LMDB_KEYWORDS_MAX; i++) {
		if (idxs[i] >= names_count)
			continue;
		namep = array_idx(names, idxs[i]);
		/* an index may hold keywords Dovecot no longer accepts (or a
		   crafted one): the mirror keeps only what the link encoder
		   stores, or the whole sync would fail on one message */
		if (!lmdb_keyword_is_valid(*namep))
			continue;
		keywords[upd_r->keywords_count++] = *namep;
	}
	upd_r->keywords = keywords;
}

int lmdb_sync_mirror_flags(struct lmdb_mailbox *mbox,
			   struct mail_index_view *view,
			   const ARRAY_TYPE(seq_range) *uids,
			   const ARRAY_TYPE(seq_range) *expunged_uids,
			   const char **error_r, int *lmdb_ret_r)
{
	struct lmdb_sync_write_ctx ctx;
	struct lmdb_sync_flag_update *upd;
	struct seq_range_iter iter;
	unsigned int n = 0;
	uint32_t uid, seq;
	int ret;

	i_zero(&ctx);
	ctx.mbox = mbox;
	ctx.expunged_uids = expunged_uids;
	t_array_init(&ctx.updates, 32);
	lmdb_mailbox_fallback_record(mbox, view, &ctx.fallback);
	if (uids != NULL) {
		seq_range_array_iter_init(&iter, uids);
		while (seq_range_array_iter_nth(&iter, n++, &uid)) {
			if (expunged_uids != NULL &&
			    seq_range_exists(expunged_uids, uid))
				continue;
			if (!mail_index_lookup_seq(view, uid, &seq))
				continue;
			upd = array_append_space(&ctx.updates);
			upd->uid = uid;
			lmdb_sync_get_flag_update(view, seq, upd);
		}
	}
	ctx.highest_modseq = mail_index_modseq_get_highest(view);
	if (array_count(&ctx.updates) == 0 &&
	    (expunged_uids == NULL || array_count(expunged_uids) == 0)) {
		/* only the modseq mirror: not worth a synced commit */
		*lmdb_ret_r = 0;
		return 0;
	}
	/* Flags alone need no synced commit: Dovecot doesn't fsync flag
	   changes in the index either (mail_fsync=optimized), and the
	   mirror is read only when the index is lost. Expunges must be
	   durable: a link back after a crash would be mail the index
	   dropped but a rebuild brings back. */
	ctx.damage_pool = pool_alloconly_create("lmdb sync damage", 512);
	ret = lmdb_env_write(mbox->storage->env, lmdb_sync_write_txn, &ctx,
			     expunged_uids != NULL &&
			     array_count(expunged_uids) > 0, error_r);
	if (ret == 0) {
		const char *damage;

		array_foreach_elem(&ctx.damage, damage) {
			e_error(mbox->box.event, "lmdb: %s: %s",
				mbox->storage->env_path, damage);
		}
	}
	pool_unref(&ctx.damage_pool);
	*lmdb_ret_r = ret;
	return ret == 0 ? 0 : -1;
}

/* The expunges a sync drops from LMDB were requested in the index's
   transaction log, which Dovecot writes without an fsync
   (mail_fsync=optimized syncs neither the request nor the sync's own
   record). LMDB's expunge commit is synced: a power cut after it that
   lost the request would leave an index record without a link, a
   message no session can read and a POP3 session that can't start.
   Made durable first, the request is read again by the next sync, which
   finds the link already gone (lmdb_sync_expunge_link). */
static int lmdb_sync_log_fsync(struct lmdb_mailbox *mbox)
{
	struct mail_transaction_log_file *file;

	if (mbox->box.storage->set->parsed_fsync_mode == FSYNC_MODE_NEVER)
		return 0;
	/* the request may be in the file before the head, if the log was
	   rotated since */
	for (file = mbox->box.index->log->files; file != NULL;
	     file = file->next) {
		if (MAIL_TRANSACTION_LOG_FILE_IN_MEMORY(file))
			continue;
		if (fdatasync(file->fd) < 0) {
			mailbox_set_critical(&mbox->box,
				"fdatasync(%s) failed: %m", file->filepath);
			return -1;
		}
	}
	return 0;
}

static void lmdb_sync_add(struct lmdb_sync_context *ctx,
			  const struct mail_index_sync_rec *sync_rec)
{
	uint32_t seq, seq1, seq2, uid;

	if (!mail_index_lookup_seq_range(ctx->sync_view, sync_rec->uid1,
					 sync_rec->uid2, &seq1, &seq2))
		return;

	switch (sync_rec->type) {
	case MAIL_INDEX_SYNC_TYPE_EXPUNGE:
		for (seq = seq1; seq <= seq2; seq++) {
			mail_index_lookup_uid(ctx->sync_view, seq, &uid);
			if (!mail_index_transaction_is_expunged(ctx->trans, seq)) {
				mail_index_expunge(ctx->trans, seq);
				seq_range_array_add(&ctx->expunged_uids, uid);
			}
		}
		break;
	case MAIL_INDEX_SYNC_TYPE_FLAGS:
	case MAIL_INDEX_SYNC_TYPE_KEYWORD_ADD:
	case MAIL_INDEX_SYNC_TYPE_KEYWORD_REMOVE:
		/* the sync view already has the final state: remember
		   which UIDs to mirror */
		seq_range_array_add_range(&ctx->flag_uids, sync_rec->uid1,
					  sync_rec->uid2);
		break;
	}
}

int lmdb_sync_begin(struct lmdb_mailbox *mbox, enum lmdb_sync_flags flags,
		    struct lmdb_sync_context **ctx_r)
{
	struct mailbox *box = &mbox->box;
	struct lmdb_sync_context *ctx;
	const struct mail_index_header *hdr;
	struct mail_index_sync_rec sync_rec;
	enum mail_index_sync_flags sync_flags;
	const char *error;
	uint32_t seq1, seq2;
	int ret, lmdb_ret;

	*ctx_r = NULL;
	sync_flags = index_storage_get_sync_flags(box) |
		MAIL_INDEX_SYNC_FLAG_AVOID_FLAG_UPDATES;
	if ((flags & LMDB_SYNC_FLAG_FORCE) == 0 && !mbox->need_adopt)
		sync_flags |= MAIL_INDEX_SYNC_FLAG_REQUIRE_CHANGES;

	ctx = i_new(struct lmdb_sync_context, 1);
	ctx->mbox = mbox;
	i_array_init(&ctx->expunged_uids, 32);
	i_array_init(&ctx->flag_uids, 32);
	for (;;) {
		ret = index_storage_expunged_sync_begin(box,
				&ctx->index_sync_ctx, &ctx->sync_view,
				&ctx->trans, sync_flags);
		if (ret <= 0) {
			array_free(&ctx->expunged_uids);
			array_free(&ctx->flag_uids);
			i_free(ctx);
			return ret;
		}
		if ((flags & LMDB_SYNC_FLAG_REBUILD) == 0)
			break;
		/* rebuild while holding the lock, then sync the result */
		ret = lmdb_sync_index_rebuild(mbox);
		mail_index_sync_rollback(&ctx->index_sync_ctx);
		index_storage_expunging_deinit(box);
		if (ret < 0) {
			array_free(&ctx->expunged_uids);
			array_free(&ctx->flag_uids);
			i_free(ctx);
			return -1;
		}
		flags &= ENUM_NEGATE(LMDB_SYNC_FLAG_REBUILD);
	}

	hdr = mail_index_get_header(ctx->sync_view);
	if (hdr->uid_validity == 0 && hdr->next_uid == 1) {
		/* opened between mkdir and index creation: nothing to
		   sync yet */
		*ctx_r = ctx;
		return 1;
	}
	if (mail_index_lookup_seq_range(ctx->sync_view, hdr->first_recent_uid,
					hdr->next_uid, &seq1, &seq2))
		mailbox_recent_flags_set_seqs(box, ctx->sync_view, seq1, seq2);

	while (mail_index_sync_next(ctx->index_sync_ctx, &sync_rec))
		lmdb_sync_add(ctx, &sync_rec);

	ret = 0;
	if (array_count(&ctx->expunged_uids) > 0)
		ret = lmdb_sync_log_fsync(mbox);
	if (ret == 0) T_BEGIN {
		if (lmdb_sync_mirror_flags(mbox, ctx->sync_view,
					   &ctx->flag_uids,
					   &ctx->expunged_uids, &error,
					   &lmdb_ret) < 0) {
			lmdb_storage_set_lmdb_error(box->storage, lmdb_ret,
				t_strdup_printf("%s: sync failed: %s",
						box->vname, error));
			ret = -1;
		}
	} T_END;
	if (ret == 0 && lmdb_sync_adopt(ctx) < 0)
		ret = -1;
	if (ret < 0) {
		mail_index_sync_rollback(&ctx->index_sync_ctx);
		index_storage_expunging_deinit(box);
		array_free(&ctx->expunged_uids);
		array_free(&ctx->flag_uids);
		i_free(ctx);
		return -1;
	}
	*ctx_r = ctx;
	return 1;
}

int lmdb_sync_finish(struct lmdb_sync_context **_ctx, bool success)
{
	struct lmdb_sync_context *ctx = *_ctx;
	struct mailbox *box = &ctx->mbox->box;
	struct seq_range_iter iter;
	unsigned int n = 0;
	uint32_t uid;
	int ret = success ? 0 : -1;

	*_ctx = NULL;
	if (success) {
		mail_index_view_ref(ctx->sync_view);
		if (mail_index_sync_commit(&ctx->index_sync_ctx) < 0) {
			mailbox_set_index_error(box);
			ret = -1;
		} else {
			/* quota and other plugins learn of expunges only
			   from these notifications */
			box->tmp_sync_view = ctx->sync_view;
			seq_range_array_iter_init(&iter, &ctx->expunged_uids);
			while (seq_range_array_iter_nth(&iter, n++, &uid))
				mailbox_sync_notify(box, uid,
						    MAILBOX_SYNC_TYPE_EXPUNGE);
			mailbox_sync_notify(box, 0, 0);
			box->tmp_sync_view = NULL;
		}
		mail_index_view_close(&ctx->sync_view);
	} else {
		mail_index_sync_rollback(&ctx->index_sync_ctx);
	}
	index_storage_expunging_deinit(box);
	array_free(&ctx->expunged_uids);
	array_free(&ctx->flag_uids);
	i_free(ctx);
	return ret;
}

int lmdb_sync(struct lmdb_mailbox *mbox, enum lmdb_sync_flags flags)
{
	struct lmdb_sync_context *ctx;

	if (lmdb_sync_begin(mbox, flags, &ctx) < 0)
		return -1;
	if (ctx == NULL)
		return 0;
	return lmdb_sync_finish(&ctx, TRUE);
}

struct mailbox_sync_context *
lmdb_storage_sync_init(struct mailbox *box, enum mailbox_sync_flags flags)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	enum lmdb_sync_flags lmdb_flags = 0;
	int ret = 0;

	if ((flags & MAILBOX_SYNC_FLAG_FORCE_RESYNC) != 0)
		lmdb_flags |= LMDB_SYNC_FLAG_FORCE | LMDB_SYNC_FLAG_REBUILD;
	if (index_mailbox_want_full_sync(box, flags) || mbox->need_adopt ||
	    lmdb_flags != 0) {
		ret = lmdb_sync(mbox, lmdb_flags);
		/* a large adoption comes in batches, a sync each */
		while (ret == 0 && mbox->need_adopt)
			ret = lmdb_sync(mbox, 0);
	}
	return index_mailbox_sync_init(box, flags, ret < 0);
}
