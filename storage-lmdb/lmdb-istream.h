#ifndef LMDB_ISTREAM_H
#define LMDB_ISTREAM_H

#include "lmdb-records.h"

struct lmdb_env;

/* A stream over a body's chunks. Each read copies one chunk out in a read
   transaction of its own: no LMDB transaction outlives a read call, so a
   slow POP3 client never pins old pages. */
struct istream *
lmdb_istream_create(struct lmdb_env *env, uint64_t body_id,
		    const struct lmdb_body_record *rec);
/* Every chunk was verified (lmdb_body_verify): stop checking checksums on
   each read. */
void lmdb_istream_set_verified(struct istream *input);

#endif
