#ifndef LMDB_OSTREAM_H
#define LMDB_OSTREAM_H

struct lmdb_body_writer;

/* An output stream feeding a body writer: what the save path (and any
   plugin that wraps data.output, such as zlib or mail_crypt) writes ends
   up as chunks in LMDB. */
struct ostream *lmdb_ostream_create(struct lmdb_body_writer *writer);

#endif
