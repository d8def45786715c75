#ifndef LMDB_SCHEMA_H
#define LMDB_SCHEMA_H

struct lmdb_env;
struct lmdb_env_record;

/* In the write transaction of an open that found the schema missing or
   not current: create the DBIs and, for a new environment, the env
   record; convert an older schema's records; rebuild a missing or
   damaged env record from the records it counts. Returns 0, or an LMDB
   code with *error_r (MDB_VERSION_MISMATCH for an environment of a newer
   module). */
int lmdb_schema_init(struct lmdb_env *env, MDB_txn *txn,
		     const char **error_r);

/* The env record's counters as the records say: links whose record and
   body record read (and their virtual sizes), bodies and their bytes.
   Only the counters in rec are set. Returns 0 or an LMDB code. */
int lmdb_schema_recount(struct lmdb_env *env, MDB_txn *txn,
			struct lmdb_env_record *rec, const char **error_r);

#endif
