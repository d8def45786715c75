#ifndef LMDB_SAVE_H
#define LMDB_SAVE_H

/* Shared by lmdb-save.c (saving a message) and lmdb-save-commit.c
   (committing the transaction's links). */

#include "lmdb-storage.h"

struct lmdb_save_context {
	struct mail_save_context ctx;
	struct lmdb_mailbox *mbox;
	struct mail_index_transaction *trans;
	pool_t pool;

	/* the message being saved now */
	uint32_t seq;
	struct istream *input;
	struct ostream *body_output;
	struct lmdb_body_writer *writer;

	ARRAY_TYPE(lmdb_save_mail) mails;
	struct lmdb_copy_cache copy_cache;
	struct lmdb_sync_context *sync_ctx;
	/* links written at commit_pre, undone if the index commit fails */
	bool links_written;
	/* the links were committed without waiting for the disk: sync once
	   the index lock is released, before the caller acknowledges */
	bool need_env_sync;
	/* bytes of the deferred bodies in mails */
	uint64_t deferred_bytes;
	/* of the mailbox, as the commit's sync view has it */
	uint32_t uid_validity;
	/* the transaction is dsync's (MAILBOX_TRANSACTION_FLAG_SYNC) */
	bool dsync;

	bool failed:1;
	bool finished:1;
};

#define LMDB_SAVECTX(s) (container_of(s, struct lmdb_save_context, ctx))

void lmdb_save_free(struct lmdb_save_context *ctx);

#endif
