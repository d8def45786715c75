#ifndef LMDB_SCHEMA_H
#define LMDB_SCHEMA_H

struct lmdb_env;

/* In the write transaction of an open that found the schema missing or
   not current: create the DBIs and, for a new environment, the env
   record; convert an older schema's records; rebuild a missing or
   damaged env record from the records it counts. Returns 0, or an LMDB
   code with *error_r (MDB_VERSION_MISMATCH for an environment of a newer
   module). */
int lmdb_schema_init(struct lmdb_env *env, MDB_txn *txn,
		     const char **error_r);

#endif
