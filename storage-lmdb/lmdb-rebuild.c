/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "mail-index-modseq.h"
#include "mailbox-list-private.h"
#include "mailbox-uidvalidity.h"
#include "index-rebuild.h"
#include "lmdb-link.h"
#include "lmdb-sync.h"
#include "lmdb-storage.h"

/* Rebuild a mailbox's index from its LMDB links (doveadm force-resync).
   Where the old index or its .backup still has a message, its flags,
   keywords and modseq win (index_rebuild_index_metadata); otherwise the
   mirror in the link record fills them in. */

struct lmdb_rebuild_link {
	uint32_t uid;
	struct lmdb_link_record rec;
};
ARRAY_DEFINE_TYPE(lmdb_rebuild_link, struct lmdb_rebuild_link);

/* index_index_rebuild_deinit() wants a UIDVALIDITY generator that gets
   only the list; the mailbox record's value is handed over here */
static uint32_t lmdb_rebuild_uid_validity;

static unsigned int lmdb_rebuild_get_uidvalidity(struct mailbox_list *list)
{
	if (lmdb_rebuild_uid_validity != 0)
		return lmdb_rebuild_uid_validity;
	return mailbox_uidvalidity_next(list,
		t_strconcat(mailbox_list_get_root_forced(list,
			MAILBOX_LIST_PATH_TYPE_CONTROL),
			"/"LMDB_UIDVALIDITY_FILE_NAME, NULL));
}

static int
lmdb_rebuild_read_links(struct lmdb_mailbox *mbox, pool_t pool,
			ARRAY_TYPE(lmdb_rebuild_link) *links,
			struct lmdb_mailbox_record *mrec_r)
{
	struct lmdb_env *env = mbox->storage->env;
	struct lmdb_link_iter *iter;
	struct lmdb_rebuild_link *link;
	struct lmdb_link_record rec;
	MDB_txn *txn;
	const char *error;
	uint32_t uid;
	int ret;

	if (lmdb_env_read_begin(env, &txn, &error) < 0) {
		mailbox_set_critical(&mbox->box, "lmdb: %s", error);
		return -1;
	}
	ret = lmdb_mailbox_get(env, txn, mbox->mailbox_guid, pool, mrec_r,
			       &error);
	if (ret <= 0) {
		if (ret < 0)
			e_error(mbox->box.event, "lmdb: %s", error);
		i_zero(mrec_r);
	}
	iter = lmdb_link_iter_init(env, txn, mbox->mailbox_guid, 1);
	while ((ret = lmdb_link_iter_next(iter, pool, &uid, &rec)) > 0) {
		if (ret == 2) {
			/* contained to that message: verify -r quarantines
			   it */
			e_error(mbox->box.event, "lmdb: %s: not in the "
				"rebuilt index", lmdb_link_iter_get_error(iter));
			continue;
		}
		link = array_append_space(links);
		link->uid = uid;
		link->rec = rec;
	}
	/* the cursor itself failed (a damaged page): nothing past it can
	   be reached, and stepping over it again would meet the same page.
	   An index rebuilt from part of the links would hide the rest, so
	   the rebuild fails and the index stays as it is; salvage reads
	   around damaged pages. */
	ret = lmdb_link_iter_deinit(&iter, &error);
	lmdb_env_read_end(env, &txn);
	if (ret < 0) {
		mailbox_set_critical(&mbox->box, "lmdb: Can't rebuild the "
			"index: LMDB failed after %u links: %s (run doveadm "
			"lmdb salvage)", array_count(links), error);
		return -1;
	}
	return 0;
}

static void
lmdb_rebuild_add_link(struct index_rebuild_context *ctx,
		      const struct lmdb_rebuild_link *link)
{
	struct mail_keywords *kw;
	uint32_t seq, old_seq;

	mail_index_append(ctx->trans, link->uid, &seq);
	if (mail_index_lookup_seq(ctx->view, link->uid, &old_seq) ||
	    (ctx->backup_view != NULL &&
	     mail_index_lookup_seq(ctx->backup_view, link->uid, &old_seq))) {
		index_rebuild_index_metadata(ctx, seq, link->uid);
		return;
	}
	mail_index_update_flags(ctx->trans, seq, MODIFY_REPLACE,
				link->rec.flags & MAIL_FLAGS_NONRECENT);
	if (link->rec.keywords_count > 0) {
		kw = mail_index_keywords_create(ctx->box->index,
						link->rec.keywords);
		mail_index_update_keywords(ctx->trans, seq, MODIFY_REPLACE, kw);
		mail_index_keywords_unref(&kw);
	}
	if (link->rec.modseq != 0)
		mail_index_update_modseq(ctx->trans, seq, link->rec.modseq);
}

int lmdb_sync_index_rebuild(struct lmdb_mailbox *mbox)
{
	struct mailbox *box = &mbox->box;
	struct index_rebuild_context *ctx;
	struct mail_index_view *view;
	struct mail_index_transaction *trans;
	struct lmdb_index_header hdr;
	struct lmdb_mailbox_record mrec;
	ARRAY_TYPE(lmdb_rebuild_link) links;
	const struct lmdb_rebuild_link *link;
	uint64_t old_highest_modseq;
	pool_t pool;
	int ret;

	e_warning(box->event, "lmdb: Rebuilding index of %s from LMDB",
		  box->vname);
	pool = pool_alloconly_create("lmdb rebuild", 16384);
	p_array_init(&links, pool, 128);
	if (lmdb_rebuild_read_links(mbox, pool, &links, &mrec) < 0) {
		pool_unref(&pool);
		return -1;
	}

	view = mail_index_view_open(box->index);
	old_highest_modseq = mail_index_modseq_get_highest(view);
	trans = mail_index_transaction_begin(view,
					MAIL_INDEX_TRANSACTION_FLAG_EXTERNAL);
	ctx = index_index_rebuild_init(box, view, trans);
	array_foreach(&links, link) T_BEGIN {
		lmdb_rebuild_add_link(ctx, link);
	} T_END;

	/* the mailbox keeps its identity through the reset */
	if (lmdb_read_header(mbox, &hdr, FALSE) < 0)
		i_zero(&hdr);
	memcpy(hdr.mailbox_guid, mbox->mailbox_guid, sizeof(hdr.mailbox_guid));
	mail_index_set_ext_init_data(box->index, mbox->hdr_ext_id,
				     &hdr, sizeof(hdr));

	lmdb_rebuild_uid_validity = mrec.uid_validity;
	index_index_rebuild_deinit(&ctx, lmdb_rebuild_get_uidvalidity);
	lmdb_rebuild_uid_validity = 0;

	/* QRESYNC clients compare modseqs: after a rebuild from LMDB alone
	   they must only ever go up, so start above the mirrored value */
	if (mrec.highest_modseq >= old_highest_modseq &&
	    mrec.highest_modseq != 0) {
		mail_index_modseq_enable(box->index);
		mail_index_update_highest_modseq(trans,
						 mrec.highest_modseq + 1);
	}
	mail_index_unset_fscked(trans);
	ret = mail_index_transaction_commit(&trans);
	if (ret < 0)
		mailbox_set_index_error(box);
	mail_index_view_close(&view);
	pool_unref(&pool);
	return ret;
}
