#ifndef LMDB_ISTREAM_H
#define LMDB_ISTREAM_H

#include "lmdb-records.h"

struct lmdb_body_reader;

/* A stream over a body's chunks, read through a body reader that keeps
   one LMDB snapshot for the stream's whole life: the body can't change
   or vanish mid-stream while other processes expunge and free it (the
   price: a slow client pins the pages of that snapshot until it is done,
   as any LMDB reader does). The stream owns the reader. */
struct istream *
lmdb_istream_create(struct lmdb_body_reader *reader, uint64_t body_id,
		    const struct lmdb_body_record *rec);
/* Check every chunk of the body (presence, size, checksum) in the
   stream's snapshot; from then on reads skip the checksums. Returns 1 if
   the body is whole, 0 if it is damaged, -1 on error (*error_r). */
int lmdb_istream_verify(struct istream *input, const char **error_r);
/* A read error must end the process instead of ending the stream: for
   Dovecot 2.3's POP3 server, which ends a RETR with "." even after its
   input failed (pop3-commands.c, fetch_callback()), so that the client
   would store a truncated message, or an empty one. */
void lmdb_istream_set_fatal_on_error(struct istream *input);

#endif
