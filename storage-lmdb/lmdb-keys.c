/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "lmdb-records.h"

/* Keys are big-endian so that they sort numerically under LMDB's
   memcmp() order: a mailbox's links by UID, a body's chunks by index,
   gc entries by kind and then time. */

void lmdb_body_id_encode(uint64_t body_id,
			 unsigned char key_r[LMDB_BODY_ID_SIZE])
{
	cpu64_to_be_unaligned(body_id, key_r);
}

bool lmdb_body_id_decode(const void *data, size_t size, uint64_t *body_id_r)
{
	if (size != LMDB_BODY_ID_SIZE)
		return FALSE;
	*body_id_r = be64_to_cpu_unaligned(data);
	/* ids start at 1 (next_body_id 0 is refused): 0 is damage, and
	   callers use it as "none" and as a hash table key */
	return *body_id_r != 0;
}

void lmdb_link_key_encode(const guid_128_t mailbox_guid, uint32_t uid,
			  unsigned char key_r[LMDB_LINK_KEY_SIZE])
{
	memcpy(key_r, mailbox_guid, GUID_128_SIZE);
	cpu32_to_be_unaligned(uid, key_r + GUID_128_SIZE);
}

bool lmdb_link_key_decode(const void *data, size_t size,
			  guid_128_t mailbox_guid_r, uint32_t *uid_r)
{
	const unsigned char *p = data;

	if (size != LMDB_LINK_KEY_SIZE)
		return FALSE;
	memcpy(mailbox_guid_r, p, GUID_128_SIZE);
	*uid_r = be32_to_cpu_unaligned(p + GUID_128_SIZE);
	return TRUE;
}

void lmdb_chunk_key_encode(uint64_t body_id, uint32_t chunk_idx,
			   unsigned char key_r[LMDB_CHUNK_KEY_SIZE])
{
	cpu64_to_be_unaligned(body_id, key_r);
	cpu32_to_be_unaligned(chunk_idx, key_r + LMDB_BODY_ID_SIZE);
}

bool lmdb_chunk_key_decode(const void *data, size_t size,
			   uint64_t *body_id_r, uint32_t *chunk_idx_r)
{
	const unsigned char *p = data;

	if (size != LMDB_CHUNK_KEY_SIZE)
		return FALSE;
	*body_id_r = be64_to_cpu_unaligned(p);
	*chunk_idx_r = be32_to_cpu_unaligned(p + LMDB_BODY_ID_SIZE);
	return TRUE;
}

void lmdb_gc_key_encode(enum lmdb_gc_kind kind, int64_t since,
			uint64_t body_id, unsigned char key_r[LMDB_GC_KEY_SIZE])
{
	key_r[0] = kind;
	cpu64_to_be_unaligned(since < 0 ? 0 : (uint64_t)since, key_r + 1);
	cpu64_to_be_unaligned(body_id, key_r + 9);
}

bool lmdb_gc_key_decode(const void *data, size_t size,
			enum lmdb_gc_kind *kind_r, int64_t *since_r,
			uint64_t *body_id_r)
{
	const unsigned char *p = data;
	uint64_t since;

	if (size != LMDB_GC_KEY_SIZE ||
	    (p[0] != LMDB_GC_KIND_PENDING && p[0] != LMDB_GC_KIND_DEAD))
		return FALSE;
	since = be64_to_cpu_unaligned(p + 1);
	if (since > INT64_MAX)
		return FALSE;
	*kind_r = p[0];
	*since_r = (int64_t)since;
	*body_id_r = be64_to_cpu_unaligned(p + 9);
	return TRUE;
}

