#ifndef LMDB_CODEC_H
#define LMDB_CODEC_H

/* The byte level of the record codecs (lmdb-records*.c only): a writer
   that appends big-endian fields and seals the record with its
   checksum, and a bounds-checked reader. A reader that runs past the end
   or meets an invalid field remembers the first error and returns zeros
   from then on, so a decoder reads all fields and checks once. */

#include "lmdb-records.h"

struct lmdb_writer {
	buffer_t *buf;
	size_t start;
	const char *error;
};

struct lmdb_reader {
	const unsigned char *p, *end;
	const char *error;
};

const char *lmdb_record_type_name(enum lmdb_record_type type);
/* CRC-32 of the type byte, the key and the fields */
uint32_t lmdb_record_crc(enum lmdb_record_type type, const void *key,
			 size_t key_size, const void *fields,
			 size_t fields_size);

/* Appends the version byte and room for the checksum. */
void lmdb_writer_init(struct lmdb_writer *w, buffer_t *buf);
void lmdb_put_u8(struct lmdb_writer *w, uint8_t v);
void lmdb_put_u16(struct lmdb_writer *w, uint16_t v);
void lmdb_put_u32(struct lmdb_writer *w, uint32_t v);
void lmdb_put_u64(struct lmdb_writer *w, uint64_t v);
/* valid: the field's own rule for str (the caller knows the field) */
void lmdb_put_str16(struct lmdb_writer *w, const char *str, size_t max_len,
		    bool valid, const char *what);
/* Seal the record with its checksum, or take it back out of the buffer
   and fail if a field couldn't be stored. */
bool lmdb_writer_finish(struct lmdb_writer *w, enum lmdb_record_type type,
			const void *key, size_t key_size,
			const char **error_r);

void lmdb_reader_init(struct lmdb_reader *r, const void *data, size_t size);
/* Check the version and checksum of a version-2 record and position the
   reader after its header. */
bool lmdb_reader_open(struct lmdb_reader *r, enum lmdb_record_type type,
		      const void *key, size_t key_size,
		      const void *data, size_t size);
/* The same for a schema-1 record, which has no checksum. */
bool lmdb_reader_open_v1(struct lmdb_reader *r, enum lmdb_record_type type,
			 const void *data, size_t size);
uint8_t lmdb_get_u8(struct lmdb_reader *r, const char *what);
uint16_t lmdb_get_u16(struct lmdb_reader *r, const char *what);
uint32_t lmdb_get_u32(struct lmdb_reader *r, const char *what);
uint64_t lmdb_get_u64(struct lmdb_reader *r, const char *what);
void lmdb_get_bytes(struct lmdb_reader *r, void *dest, size_t n,
		    const char *what);
/* Strings come back as C strings: a NUL inside is an error. */
const char *lmdb_get_str(struct lmdb_reader *r, pool_t pool, size_t len,
			 size_t max_len, const char *what);
const char *lmdb_get_str16(struct lmdb_reader *r, pool_t pool,
			   size_t max_len, const char *what);
void lmdb_reader_invalid(struct lmdb_reader *r, const char *what);
/* Trailing bytes are allowed (a later revision may append fields). */
bool lmdb_reader_finish(struct lmdb_reader *r, const char **error_r);

#endif
