#ifndef LMDB_QUARANTINE_H
#define LMDB_QUARANTINE_H

/* Records damaged beyond repair are moved, raw, into the "quarantine"
   DBI (doveadm lmdb verify -r): out of the way of every reader, kept for
   the admin and for salvage. No lib-storage types here. */

#include "lmdb-env.h"

/* Inside a write transaction: move the record under key in dbi (named
   dbi_name) into the quarantine, with the reason. Returns 0 (also if the
   record is gone already) or an LMDB code. */
int lmdb_quarantine_move(struct lmdb_env *env, MDB_txn *txn, MDB_dbi dbi,
			 const char *dbi_name, const void *key,
			 size_t key_size, const char *reason, int64_t now,
			 const char **error_r);
/* Number of quarantined records. */
int lmdb_quarantine_count(struct lmdb_env *env, MDB_txn *txn,
			  uint64_t *count_r, const char **error_r);

#endif
