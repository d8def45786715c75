/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "crc32.h"
#include "hex-binary.h"
#include "strfuncs.h"
#include "fuzz-common.h"

#include <stdio.h>
#include <stdlib.h>

void fuzz_init(void)
{
	if (lib_is_initialized())
		return;
	lib_init();
	/* libFuzzer ends with exit(): that is a clean exit for Dovecot */
	lib_set_clean_exit(TRUE);
}

uint8_t fuzz_u8(struct fuzz_input *in)
{
	return in->p < in->end ? *in->p++ : 0;
}

uint16_t fuzz_u16(struct fuzz_input *in)
{
	uint16_t v = fuzz_u8(in);

	return (v << 8) | fuzz_u8(in);
}

uint32_t fuzz_u32(struct fuzz_input *in)
{
	uint32_t v = fuzz_u16(in);

	return (v << 16) | fuzz_u16(in);
}

uint64_t fuzz_u64(struct fuzz_input *in)
{
	uint64_t v = fuzz_u32(in);

	return (v << 32) | fuzz_u32(in);
}

size_t fuzz_bytes(struct fuzz_input *in, size_t max, const unsigned char **p_r)
{
	size_t n = I_MIN(max, fuzz_input_left(in));

	*p_r = in->p;
	in->p += n;
	return n;
}

size_t fuzz_slice(struct fuzz_input *in, size_t max, const unsigned char **p_r)
{
	size_t n = fuzz_u16(in);

	return fuzz_bytes(in, I_MIN(n, max), p_r);
}

void *fuzz_dup(const void *data, size_t size)
{
	/* malloc(0) may return NULL; keep a valid, empty allocation */
	void *copy = malloc(size == 0 ? 1 : size);

	if (copy == NULL)
		i_fatal_status(FATAL_OUTOFMEM, "malloc(%zu) failed", size);
	if (size > 0)
		memcpy(copy, data, size);
	return copy;
}

/* --- a pool that lets AddressSanitizer see every allocation --- */

struct fuzz_pool {
	struct pool pool;
	int refcount;
	ARRAY(void *) allocs;
};

static const char *fuzz_pool_get_name(pool_t pool ATTR_UNUSED)
{
	return "fuzz";
}

static void fuzz_pool_ref(pool_t pool)
{
	struct fuzz_pool *fpool = container_of(pool, struct fuzz_pool, pool);

	fpool->refcount++;
}

static void fuzz_pool_clear(pool_t pool)
{
	struct fuzz_pool *fpool = container_of(pool, struct fuzz_pool, pool);
	void *const *mem;

	array_foreach(&fpool->allocs, mem)
		free(*mem);
	array_clear(&fpool->allocs);
}

static void fuzz_pool_unref(pool_t *_pool)
{
	pool_t pool = *_pool;
	struct fuzz_pool *fpool = container_of(pool, struct fuzz_pool, pool);

	*_pool = NULL;
	if (--fpool->refcount > 0)
		return;
	fuzz_pool_clear(pool);
	array_free(&fpool->allocs);
	free(fpool);
}

static void *fuzz_pool_malloc(pool_t pool, size_t size)
{
	struct fuzz_pool *fpool = container_of(pool, struct fuzz_pool, pool);
	void *mem = calloc(1, size == 0 ? 1 : size);

	if (mem == NULL)
		i_fatal_status(FATAL_OUTOFMEM, "calloc(%zu) failed", size);
	array_push_back(&fpool->allocs, &mem);
	return mem;
}

static void fuzz_pool_free(pool_t pool ATTR_UNUSED, void *mem ATTR_UNUSED)
{
	/* freed with the pool */
}

static void *fuzz_pool_realloc(pool_t pool, void *mem, size_t old_size,
			       size_t new_size)
{
	void *new_mem = fuzz_pool_malloc(pool, new_size);

	if (mem != NULL)
		memcpy(new_mem, mem, I_MIN(old_size, new_size));
	return new_mem;
}

static size_t fuzz_pool_get_max_easy_alloc_size(pool_t pool ATTR_UNUSED)
{
	return 0;
}

static const struct pool_vfuncs fuzz_pool_vfuncs = {
	fuzz_pool_get_name,
	fuzz_pool_ref,
	fuzz_pool_unref,
	fuzz_pool_malloc,
	fuzz_pool_free,
	fuzz_pool_realloc,
	fuzz_pool_clear,
	fuzz_pool_get_max_easy_alloc_size,
};

pool_t fuzz_pool_create(void)
{
	struct fuzz_pool *fpool = calloc(1, sizeof(*fpool));

	if (fpool == NULL)
		i_fatal_status(FATAL_OUTOFMEM, "calloc() failed");
	fpool->pool.v = &fuzz_pool_vfuncs;
	fpool->refcount = 1;
	i_array_init(&fpool->allocs, 16);
	return &fpool->pool;
}

/* --- checksums --- */

uint32_t fuzz_record_crc(uint8_t type, const void *key, size_t key_size,
			 const void *fields, size_t fields_size)
{
	uint32_t crc = crc32_data(&type, 1);

	crc = crc32_data_more(crc, key, key_size);
	return crc32_data_more(crc, fields, fields_size);
}

void fuzz_seal(unsigned char *value, size_t size, uint8_t type,
	       const void *key, size_t key_size)
{
	if (size < 5)
		return;
	cpu32_to_be_unaligned(fuzz_record_crc(type, key, key_size, value + 5,
					      size - 5), value + 1);
}

/* --- failures --- */

void fuzz_fail(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	fprintf(stderr, "FUZZ CHECK FAILED: ");
	vfprintf(stderr, fmt, args);
	fputc('\n', stderr);
	va_end(args);
	abort();
}

void fuzz_assert_bytes(const char *what, const void *a, size_t a_size,
		       const void *b, size_t b_size)
{
	if (a_size == b_size && memcmp(a, b, a_size) == 0)
		return;
	fuzz_fail("%s differ:\n  %s (%zu bytes)\n  %s (%zu bytes)", what,
		  binary_to_hex(a, I_MIN(a_size, 512)), a_size,
		  binary_to_hex(b, I_MIN(b_size, 512)), b_size);
}
