#ifndef LMDB_SYNC_H
#define LMDB_SYNC_H

#include "seq-range-array.h"

struct lmdb_mailbox;

enum lmdb_sync_flags {
	/* lock and sync even when the index has no changes for us */
	LMDB_SYNC_FLAG_FORCE = 0x01,
	/* rebuild the index from LMDB first (force-resync) */
	LMDB_SYNC_FLAG_REBUILD = 0x04,
};

/* The backend sync: under the index sync lock, apply expunges to LMDB
   (drop links and references), mirror the final flags and keywords of
   every touched UID into the link records, and append to the index any
   links it doesn't know (left above next_uid by a crash, or found again
   after index loss). The LMDB write happens before the index sync
   commits; if it fails, the sync fails. */
struct lmdb_sync_context {
	struct lmdb_mailbox *mbox;
	struct mail_index_sync_ctx *index_sync_ctx;
	struct mail_index_view *sync_view;
	struct mail_index_transaction *trans;

	ARRAY_TYPE(seq_range) expunged_uids;
	ARRAY_TYPE(seq_range) flag_uids;
	/* UIDs above the index's next_uid that were adopted from LMDB */
	unsigned int adopted_count;
	/* next_uid is raised to above LMDB's highest UID ever used (in
	   this sync's transaction: the sync view doesn't show it yet) */
	bool raised_next_uid;
};

int lmdb_sync_begin(struct lmdb_mailbox *mbox, enum lmdb_sync_flags flags,
		    struct lmdb_sync_context **ctx_r);
int lmdb_sync_finish(struct lmdb_sync_context **ctx, bool success);
int lmdb_sync(struct lmdb_mailbox *mbox, enum lmdb_sync_flags flags);

/* lmdb-adopt.c: inside lmdb_sync_begin(), append to the sync transaction
   the links the index lacks (a batch of them: mbox->need_adopt stays set
   while more wait) and raise next_uid. */
int lmdb_sync_adopt(struct lmdb_sync_context *ctx);

/* lmdb-rebuild.c: with the index sync lock held */
int lmdb_sync_index_rebuild(struct lmdb_mailbox *mbox);

/* Write the flag/keyword mirror of the given UIDs, as they are in view,
   into their link records (one LMDB transaction). */
int lmdb_sync_mirror_flags(struct lmdb_mailbox *mbox,
			   struct mail_index_view *view,
			   const ARRAY_TYPE(seq_range) *uids,
			   const ARRAY_TYPE(seq_range) *expunged_uids,
			   const char **error_r, int *lmdb_ret_r);

#endif
