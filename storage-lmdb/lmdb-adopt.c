/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "mail-index-modseq.h"
#include "lmdb-link.h"
#include "lmdb-sync.h"
#include "lmdb-storage.h"
#include "lmdb-uidl.h"

/* Adoption, the part of every backend sync that brings into the index
   what LMDB has beyond it: links at or above next_uid (a save that
   committed to LMDB but not to the index before a crash, or a lost
   index) with their mirrored flags, keywords and modseqs, and next_uid
   raised above every UID LMDB ever used, so no UID is given twice. The
   reverse too: index records above every UID LMDB ever used (a save whose
   LMDB commit a power cut lost) are expunged, and after a crash that cost
   the index part of its log, every record whose link is gone. */

struct lmdb_adopt_link {
	uint32_t uid;
	struct lmdb_link_record rec;
};


/* What LMDB knows beyond the index: links at or above next_uid (a save
   that committed to LMDB but not to the index before a crash, or a lost
   index) and the highest UID ever used. Read in batches: a lost index of
   a mailbox with a million messages is adopted over several syncs, each
   holding one batch in memory. */
#define LMDB_SYNC_ADOPT_BATCH 5000

struct lmdb_sync_lmdb_state {
	struct lmdb_mailbox *mbox;
	uint32_t next_uid;
	pool_t pool;
	struct lmdb_mailbox_record fallback;

	ARRAY(struct lmdb_adopt_link) links;
	uint32_t min_next_uid;
	/* the highest UID LMDB ever used: its mailbox record's and its
	   highest link's; without a mailbox record (damage) nothing above
	   it is taken for unsaved */
	uint32_t lmdb_highest_uid;
	bool have_record;
	/* the mirrored HIGHESTMODSEQ */
	uint64_t highest_modseq;
	/* more links wait for the next batch, from resume_uid on */
	bool more;
	uint32_t resume_uid;
	/* damage stepped over, logged after the transaction */
	ARRAY_TYPE(const_string) damage;
};

static int
lmdb_sync_read_state_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_sync_lmdb_state *state = context;
	struct lmdb_mailbox *mbox = state->mbox;
	struct lmdb_env *env = mbox->storage->env;
	struct lmdb_mailbox_record mrec;
	struct lmdb_link_iter *iter;
	struct lmdb_link_record rec;
	struct lmdb_adopt_link *link;
	const char *damage;
	uint32_t highest_uid, uid;
	unsigned int n = 0;
	int ret;

	/* this may run again after the map grew */
	p_clear(state->pool);
	p_array_init(&state->links, state->pool, 64);
	p_array_init(&state->damage, state->pool, 4);
	state->min_next_uid = 0;
	state->lmdb_highest_uid = 0;
	state->have_record = FALSE;
	state->highest_modseq = 0;
	state->more = FALSE;
	ret = lmdb_mailbox_get_repair(env, txn, mbox->mailbox_guid,
				      &state->fallback, state->pool, &mrec,
				      &damage, error_r);
	if (ret < 0)
		return MDB_CORRUPTED;
	if (damage != NULL) {
		damage = p_strdup_printf(state->pool, "mailbox record was "
			"damaged (%s): rewritten from the index", damage);
		array_push_back(&state->damage, &damage);
	}
	if (ret > 0 && mrec.highest_uid < (uint32_t)-1)
		state->min_next_uid = mrec.highest_uid + 1;
	if (ret > 0) {
		state->highest_modseq = mrec.highest_modseq;
		state->lmdb_highest_uid = mrec.highest_uid;
		state->have_record = TRUE;
	}
	if ((ret = lmdb_link_get_highest_uid(env, txn, mbox->mailbox_guid,
					     &highest_uid, error_r)) != 0)
		return ret;
	state->lmdb_highest_uid = I_MAX(state->lmdb_highest_uid, highest_uid);
	if (highest_uid < state->next_uid)
		return 0;
	if (highest_uid < (uint32_t)-1)
		state->min_next_uid = I_MAX(state->min_next_uid, highest_uid + 1);

	iter = lmdb_link_iter_init(env, txn, mbox->mailbox_guid,
				   state->next_uid);
	while ((ret = lmdb_link_iter_next(iter, state->pool, &uid, &rec)) > 0) {
		if (ret == 2) {
			/* contained: the message is lost to the index (its
			   UID stays used); verify -r quarantines it */
			damage = p_strdup_printf(state->pool, "%s: not added "
				"to the index",
				lmdb_link_iter_get_error(iter));
			array_push_back(&state->damage, &damage);
		} else {
			link = array_append_space(&state->links);
			link->uid = uid;
			link->rec = rec;
		}
		state->resume_uid = uid + 1;
		if (++n >= LMDB_SYNC_ADOPT_BATCH && uid < highest_uid) {
			state->more = TRUE;
			break;
		}
	}
	if (lmdb_link_iter_deinit(&iter, error_r) < 0)
		return MDB_CORRUPTED;
	return 0;
}

/* Read in a write transaction, though it writes nothing: a writer killed
   after its commit reached the disk but before it updated LMDB's lock
   file leaves readers on the previous state until the next writer
   repairs it. Taking the writer repairs it now, so links that crash left
   behind are seen (and adopted) before our UIDs are assigned. */
static int lmdb_sync_read_state(struct lmdb_sync_lmdb_state *state)
{
	struct lmdb_mailbox *mbox = state->mbox;
	const char *error;
	int ret;
	const char *damage;

	ret = lmdb_env_write(mbox->storage->env, lmdb_sync_read_state_txn,
			     state, FALSE, &error);
	if (ret != 0) {
		lmdb_storage_set_lmdb_error(mbox->box.storage, ret,
			t_strdup_printf("%s: reading LMDB state failed: %s",
					mbox->box.vname, error));
		return -1;
	}
	array_foreach_elem(&state->damage, damage) {
		e_error(mbox->box.event, "lmdb: %s: %s",
			mbox->storage->env_path, damage);
	}
	return 0;
}

/* Append the links the index lacks, with their mirrored flags, keywords
   and modseq. */
static void lmdb_sync_adopt_links(struct lmdb_sync_context *ctx,
				  const struct lmdb_sync_lmdb_state *state)
{
	struct lmdb_mailbox *mbox = ctx->mbox;
	struct mail_index *index = mbox->box.index;
	const struct lmdb_adopt_link *link, *first, *last;
	struct mail_keywords *kw;
	uint32_t seq, highest_uidl_uid = 0;
	bool have_order = FALSE, have_modseq = FALSE;

	array_foreach(&state->links, link) {
		if (link->rec.modseq != 0)
			have_modseq = TRUE;
	}
	if (have_modseq && !mail_index_have_modseq_tracking(index)) {
		/* an index older than the links (a crash lost its unsynced
		   tail) may predate modseq tracking, and a modseq update
		   without it breaks the index; once: the index isn't
		   refreshed during the sync, so the check stays FALSE */
		mail_index_modseq_enable(index);
	}
	array_foreach(&state->links, link) {
		mail_index_append(ctx->trans, link->uid, &seq);
		mail_index_update_flags(ctx->trans, seq, MODIFY_REPLACE,
					link->rec.flags & MAIL_FLAGS_NONRECENT);
		if (link->rec.keywords_count > 0) {
			kw = mail_index_keywords_create(index,
							link->rec.keywords);
			mail_index_update_keywords(ctx->trans, seq,
						   MODIFY_REPLACE, kw);
			mail_index_keywords_unref(&kw);
		}
		if (link->rec.modseq != 0)
			mail_index_update_modseq(ctx->trans, seq,
						 link->rec.modseq);
		if (link->rec.pop3_uidl != NULL &&
		    link->rec.pop3_uidl[0] != '\0')
			highest_uidl_uid = link->uid;
		if (link->rec.pop3_order != 0)
			have_order = TRUE;
	}
	ctx->adopted_count = array_count(&state->links);
	if (ctx->adopted_count > 0) {
		/* what the saves wrote into the lost index tail besides
		   the records */
		lmdb_uidl_note_saved(mbox, ctx->trans, highest_uidl_uid,
				     have_order);
		if (state->highest_modseq >
		    mail_index_modseq_get_highest(ctx->sync_view)) {
			mail_index_update_highest_modseq(ctx->trans,
							 state->highest_modseq);
		}
		first = array_front(&state->links);
		last = array_back(&state->links);
		e_warning(mbox->box.event, "lmdb: Added %u messages that "
			  "were in LMDB but missing from the index "
			  "(UIDs %u..%u)", ctx->adopted_count,
			  first->uid, last->uid);
	}
	/* the next sync takes the next batch */
	mbox->need_adopt = state->more;
}

static void lmdb_sync_raise_next_uid(struct lmdb_sync_context *ctx,
				     uint32_t min_next_uid)
{
	const struct mail_index_header *hdr =
		mail_index_get_header(ctx->sync_view);

	if (min_next_uid <= hdr->next_uid)
		return;
	ctx->raised_next_uid = TRUE;
	/* applied after the adopted appends of this transaction */
	mail_index_update_header(ctx->trans,
		offsetof(struct mail_index_header, next_uid),
		&min_next_uid, sizeof(min_next_uid), FALSE);
}

/* What the crash cleanups below expunged, for their one log line. */
struct lmdb_sync_expunged {
	uint32_t first_uid, last_uid;
	unsigned int count;
};

static void lmdb_sync_expunge_record(struct lmdb_sync_context *ctx,
				     uint32_t seq, uint32_t uid,
				     struct lmdb_sync_expunged *ex)
{
	mail_index_expunge(ctx->trans, seq);
	seq_range_array_add(&ctx->expunged_uids, uid);
	if (ex->count++ == 0)
		ex->first_uid = uid;
	ex->last_uid = uid;
}

/* Index records above every UID LMDB ever used have no link and never
   had one that lasted: a save commits its links to LMDB without a flush,
   writes its index records and flushes LMDB after that, outside the index
   lock, before it acknowledges (lmdb-save-commit.c). A power cut in
   between can keep the index records and lose the links: the message was
   never acknowledged, but its record would stay unreadable, and POP3
   can't start with it. They go, as force-resync would drop them; their
   UIDs stay used. */
static void lmdb_sync_expunge_unsaved(struct lmdb_sync_context *ctx,
				      uint32_t lmdb_highest_uid)
{
	struct lmdb_mailbox *mbox = ctx->mbox;
	struct lmdb_sync_expunged ex = { 0, 0, 0 };
	uint32_t seq, seq1, seq2, uid;

	if (lmdb_highest_uid == (uint32_t)-1 ||
	    !mail_index_lookup_seq_range(ctx->sync_view, lmdb_highest_uid + 1,
					 (uint32_t)-1, &seq1, &seq2))
		return;
	for (seq = seq1; seq <= seq2; seq++) {
		if (mail_index_transaction_is_expunged(ctx->trans, seq))
			continue;
		mail_index_lookup_uid(ctx->sync_view, seq, &uid);
		lmdb_sync_expunge_record(ctx, seq, uid, &ex);
	}
	if (ex.count > 0) {
		e_warning(mbox->box.event, "lmdb: Expunged %u index records "
			  "above the highest UID LMDB has used (UIDs %u..%u; "
			  "most likely saves a crash cut off before they were "
			  "acknowledged; nothing could read them)", ex.count,
			  ex.first_uid, ex.last_uid);
	}
}

/* The UIDs of the index records whose link is gone (in a read
   transaction: nothing of Dovecot is called inside it). Damaged links
   count as there. Returns -1 if LMDB failed: then nothing is taken for
   gone. */
static int lmdb_sync_find_linkless(struct lmdb_sync_context *ctx,
				   ARRAY_TYPE(seq_range) *uids_r)
{
	struct lmdb_mailbox *mbox = ctx->mbox;
	struct lmdb_env *env = mbox->storage->env;
	struct lmdb_link_iter *iter;
	struct lmdb_link_record rec;
	const char *error = "";
	pool_t pool;
	MDB_txn *txn;
	uint32_t seq, count, uid, link_uid = 0;
	bool have_link = FALSE, more = TRUE;
	int ret = 0;

	count = mail_index_view_get_messages_count(ctx->sync_view);
	if (count == 0)
		return 0;
	if (lmdb_env_read_begin(env, &txn, &error) < 0) {
		e_error(mbox->box.event, "lmdb: %s", error);
		return -1;
	}
	pool = pool_alloconly_create("lmdb link check", 1024);
	mail_index_lookup_uid(ctx->sync_view, 1, &uid);
	iter = lmdb_link_iter_init(env, txn, mbox->mailbox_guid, uid);
	for (seq = 1; seq <= count && ret >= 0; seq++) {
		mail_index_lookup_uid(ctx->sync_view, seq, &uid);
		/* both in UID order: step the links up to this UID */
		while (more && (!have_link || link_uid < uid)) {
			p_clear(pool);
			ret = lmdb_link_iter_next(iter, pool, &link_uid, &rec);
			have_link = ret > 0;
			more = ret > 0;
		}
		if (ret >= 0 && (!have_link || link_uid != uid))
			seq_range_array_add(uids_r, uid);
	}
	if (ret >= 0 && lmdb_link_iter_get_bad_keys(iter) > 0) {
		/* a malformed key hides which UID it was: expunge nothing
		   on a guess */
		e_error(mbox->box.event, "lmdb: %s: %u malformed link keys "
			"in the mailbox, so index records without a link are "
			"kept (doveadm lmdb verify -r): %s",
			mbox->storage->env_path,
			lmdb_link_iter_get_bad_keys(iter),
			lmdb_link_iter_get_error(iter));
		array_clear(uids_r);
	}
	if (lmdb_link_iter_deinit(&iter, &error) < 0 || ret < 0) {
		e_error(mbox->box.event, "lmdb: %s: checking the index "
			"against the links failed: %s",
			mbox->storage->env_path, error);
		array_clear(uids_r);
		ret = -1;
	}
	lmdb_env_read_end(env, &txn);
	pool_unref(&pool);
	return ret < 0 ? -1 : 0;
}

/* After a crash that cost the index part of its log (a torn unsynced
   tail makes Dovecot drop the log file and fall back to dovecot.index),
   records of messages expunged since may be back while LMDB dropped
   their links for good: unreadable, and POP3 can't start with them.
   Checked once per mailbox open that found the index behind LMDB, or
   after Dovecot fscked the index: one pass over the mailbox's links. */
static void lmdb_sync_expunge_linkless(struct lmdb_sync_context *ctx)
{
	struct lmdb_mailbox *mbox = ctx->mbox;
	ARRAY_TYPE(seq_range) uids;
	struct seq_range_iter iter;
	struct lmdb_sync_expunged ex = { 0, 0, 0 };
	unsigned int n = 0;
	uint32_t uid, seq;

	mbox->need_link_check = FALSE;
	t_array_init(&uids, 16);
	if (lmdb_sync_find_linkless(ctx, &uids) < 0)
		return;
	seq_range_array_iter_init(&iter, &uids);
	while (seq_range_array_iter_nth(&iter, n++, &uid)) {
		if (!mail_index_lookup_seq(ctx->sync_view, uid, &seq) ||
		    mail_index_transaction_is_expunged(ctx->trans, seq))
			continue;
		lmdb_sync_expunge_record(ctx, seq, uid, &ex);
	}
	if (ex.count > 0) {
		e_warning(mbox->box.event, "lmdb: Expunged %u index records "
			  "found without a link in LMDB (UIDs %u..%u; most "
			  "likely expunges the index lost in a crash; "
			  "nothing could read them)", ex.count, ex.first_uid,
			  ex.last_uid);
	}
}

int lmdb_sync_adopt(struct lmdb_sync_context *ctx)
{
	struct lmdb_mailbox *mbox = ctx->mbox;
	struct lmdb_sync_lmdb_state state;
	int ret = 0;

	i_zero(&state);
	state.mbox = mbox;
	state.next_uid = mail_index_get_header(ctx->sync_view)->next_uid;
	state.pool = pool_alloconly_create("lmdb adopt", 4096);
	lmdb_mailbox_fallback_record(mbox, ctx->sync_view, &state.fallback);
	if (lmdb_sync_read_state(&state) < 0)
		ret = -1;
	else {
		lmdb_sync_adopt_links(ctx, &state);
		if (!state.more && state.have_record)
			lmdb_sync_expunge_unsaved(ctx, state.lmdb_highest_uid);
		if (mail_index_reset_fscked(mbox->box.index))
			mbox->need_link_check = TRUE;
		if (mbox->need_link_check) T_BEGIN {
			lmdb_sync_expunge_linkless(ctx);
		} T_END;
		/* past this batch only (damaged links included); past
		   everything LMDB ever used once all are in */
		lmdb_sync_raise_next_uid(ctx, state.more ?
					 state.resume_uid : state.min_next_uid);
	}
	pool_unref(&state.pool);
	return ret;
}
