#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

/* What every fuzz target shares: Dovecot's lib set up once, a reader of
   the fuzzer's input as a stream of fields (zeros once it runs out, so
   that every input means something), a pool whose every allocation is
   its own malloc() (AddressSanitizer sees the exact bounds of what a
   decoder allocates; Dovecot's own pools carve big blocks), and the
   sealing the fuzzer may choose to apply, computed with Dovecot's
   crc32 rather than ours so that a wrong lmdb_crc32 can't hide. */

#include "lib.h"
#include "buffer.h"

struct fuzz_input {
	const unsigned char *p, *end;
};

void fuzz_init(void);

static inline void
fuzz_input_init(struct fuzz_input *in, const void *data, size_t size)
{
	in->p = data;
	in->end = in->p + size;
}

static inline size_t fuzz_input_left(const struct fuzz_input *in)
{
	return in->end - in->p;
}

uint8_t fuzz_u8(struct fuzz_input *in);
uint16_t fuzz_u16(struct fuzz_input *in);
uint32_t fuzz_u32(struct fuzz_input *in);
uint64_t fuzz_u64(struct fuzz_input *in);
/* Up to max bytes (fewer if the input runs out); returns how many. The
   pointer is into the input. */
size_t fuzz_bytes(struct fuzz_input *in, size_t max, const unsigned char **p_r);
/* A length-prefixed (u16) slice, at most max bytes. */
size_t fuzz_slice(struct fuzz_input *in, size_t max,
		  const unsigned char **p_r);

/* A copy of data in a malloc() of exactly size bytes: an over-read of a
   piece of the input is caught as well as one of the whole input. */
void *fuzz_dup(const void *data, size_t size);

/* Every allocation a malloc() of its own, freed at pool_unref(). */
pool_t fuzz_pool_create(void);

/* Put the record checksum of schema 2 into value[1..4]: CRC-32 over
   the type byte, the key and value[5..]. No-op for a value shorter than
   the header. */
void fuzz_seal(unsigned char *value, size_t size, uint8_t type,
	       const void *key, size_t key_size);
/* The same checksum, computed with Dovecot's crc32. */
uint32_t fuzz_record_crc(uint8_t type, const void *key, size_t key_size,
			 const void *fields, size_t fields_size);

/* A broken invariant: print and abort, which libFuzzer reports as a
   crash with the input that caused it. */
void fuzz_fail(const char *fmt, ...) ATTR_FORMAT(1, 2) ATTR_NORETURN;
#define fuzz_assert(cond) \
	STMT_START { if (!(cond)) \
		fuzz_fail("%s:%d: check failed: %s", __FILE__, __LINE__, \
			  #cond); } STMT_END

/* Compare two byte ranges; on a difference print both and abort. */
void fuzz_assert_bytes(const char *what, const void *a, size_t a_size,
		       const void *b, size_t b_size);

#endif
