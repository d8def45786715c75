#ifndef LMDB_BODY_PRIVATE_H
#define LMDB_BODY_PRIVATE_H

/* Shared by lmdb-body.c, lmdb-body-writer.c and lmdb-body-read.c. */

#include "lmdb-body.h"

int lmdb_body_put_record(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
			 const struct lmdb_body_record *rec,
			 const char **error_r);
/* Add (or remove) the gc entry of a PENDING or DEAD body. */
int lmdb_body_gc_key_set(struct lmdb_env *env, MDB_txn *txn,
			 enum lmdb_gc_kind kind, int64_t since,
			 uint64_t body_id, bool add, const char **error_r);
/* Keep the env record's body counters exact. */
int lmdb_body_count(struct lmdb_env *env, MDB_txn *txn, int bodies,
		    int64_t bytes, const char **error_r);
/* Position cursor on chunk idx of the body: a B-tree search for the
   first one, a step for each following one (chunk keys are adjacent). */
int lmdb_body_chunk_next(MDB_cursor *cursor, uint64_t body_id,
			 uint32_t idx, bool first, MDB_val *val_r);

#endif
