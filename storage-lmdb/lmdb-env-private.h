#ifndef LMDB_ENV_PRIVATE_H
#define LMDB_ENV_PRIVATE_H

/* Shared by the pieces of the environment: lmdb-env.c (open, registry,
   references), lmdb-env-record.c, lmdb-env-txn.c, lmdb-env-map.c and
   lmdb-env-compact.c. */

#include "lmdb-env.h"

#define LMDB_ENV_MAX_DBS 12
#define LMDB_ENV_WRITE_MAX_RETRIES 64
#define LMDB_ENV_SWAP_LOCK_NAME "dovecot-lmdb.lock"
#define LMDB_ENV_COMPACT_DIR_NAME "compact.tmp"
/* an open waits this long for a running compaction's file swap */
#define LMDB_ENV_OPEN_LOCK_TIMEOUT_SECS 30
/* address space left for everything but the map: heap growth, streams,
   a second user's map in doveadm */
#define LMDB_ENV_VSZ_MARGIN (32 * 1024 * 1024ULL)
/* what an admin does when the map doesn't fit in the address space */
#define LMDB_ENV_VSZ_HINT "raise vsz_limit of the mail services " \
	"(default_vsz_limit) above the size of the user's mail plus 256M"

/* lmdb-env.c */
int lmdb_env_ensure_open(struct lmdb_env *env, const char **error_r);
int lmdb_env_swap_lock(struct lmdb_env *env, int lock_type,
		       unsigned int timeout_secs,
		       struct file_lock **lock_r, const char **error_r);
int lmdb_env_reopen(struct lmdb_env *env, const char **error_r);

/* lmdb-env-txn.c */
int lmdb_env_txn_begin(struct lmdb_env *env, unsigned int flags,
		       MDB_txn **txn_r, const char **error_r);
void lmdb_env_txn_abort(struct lmdb_env *env, MDB_txn **txn);

/* lmdb-env-map.c */
int lmdb_env_grow(struct lmdb_env *env, const char **error_r);
int lmdb_env_adopt_map_size(struct lmdb_env *env, const char **error_r);

#endif
