#ifndef GEN_CORPUS_H
#define GEN_CORPUS_H

/* What the parts of the seed generator share: the corpus directory,
   fixed times and GUIDs (the output is deterministic), writing a seed
   and building a target's input fields (u16/u32 big-endian, u16 length
   + bytes, as fuzz-common.h reads them). */

#include "buffer.h"
#include "guid.h"

#define NOW 1700000000

extern const char *corpus_dir;
extern const guid_128_t inbox_guid, archive_guid;

/* corpus_dir/target/name */
void seed(const char *target, const char *name, const void *data,
	  size_t size);
void seed_str(const char *target, const char *name, const char *str);
void seed_buf(const char *target, const char *name, const buffer_t *buf);

void put_u16(buffer_t *buf, uint16_t v);
void put_u32(buffer_t *buf, uint32_t v);
void put_slice(buffer_t *buf, const void *data, size_t size);
void put_str(buffer_t *buf, const char *str);
/* i_fatal() unless an encoder succeeded */
void check(bool ok, const char *error);

/* gen-corpus-records.c: the lmdb record, key and value targets and the
   body reader */
void gen_corpus_records(void);
/* gen-corpus-pop3-policy.c: the pop3_policy targets */
void gen_corpus_pop3_policy(void);

#endif
