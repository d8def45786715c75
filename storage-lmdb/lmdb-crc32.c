/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "lmdb-crc32.h"

#define LMDB_CRC32_POLY 0xedb88320U

/* tables[k][b]: the CRC of byte b followed by k zero bytes */
static uint32_t lmdb_crc32_tables[8][256];
static bool lmdb_crc32_initialized = FALSE;

static void lmdb_crc32_init(void)
{
	uint32_t crc;
	unsigned int b, k, i;

	for (b = 0; b < 256; b++) {
		crc = b;
		for (i = 0; i < 8; i++)
			crc = (crc >> 1) ^ ((crc & 1) != 0 ? LMDB_CRC32_POLY : 0);
		lmdb_crc32_tables[0][b] = crc;
	}
	for (b = 0; b < 256; b++) {
		crc = lmdb_crc32_tables[0][b];
		for (k = 1; k < 8; k++) {
			crc = (crc >> 8) ^ lmdb_crc32_tables[0][crc & 0xff];
			lmdb_crc32_tables[k][b] = crc;
		}
	}
	lmdb_crc32_initialized = TRUE;
}

uint32_t lmdb_crc32(const void *data, size_t size)
{
	return lmdb_crc32_update(0, data, size);
}

uint32_t lmdb_crc32_update(uint32_t crc, const void *data, size_t size)
{
	const unsigned char *p = data;
	uint32_t lo, hi;

	crc ^= 0xffffffffU;

	if (!lmdb_crc32_initialized)
		lmdb_crc32_init();
	for (; size >= 8; size -= 8, p += 8) {
		/* little-endian words, assembled byte by byte: no alignment
		   or host byte order assumptions */
		lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
			    (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
		hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 |
			(uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
		crc = lmdb_crc32_tables[7][lo & 0xff] ^
			lmdb_crc32_tables[6][(lo >> 8) & 0xff] ^
			lmdb_crc32_tables[5][(lo >> 16) & 0xff] ^
			lmdb_crc32_tables[4][lo >> 24] ^
			lmdb_crc32_tables[3][hi & 0xff] ^
			lmdb_crc32_tables[2][(hi >> 8) & 0xff] ^
			lmdb_crc32_tables[1][(hi >> 16) & 0xff] ^
			lmdb_crc32_tables[0][hi >> 24];
	}
	for (; size > 0; size--, p++)
		crc = (crc >> 8) ^ lmdb_crc32_tables[0][(crc ^ *p) & 0xff];
	return crc ^ 0xffffffffU;
}
