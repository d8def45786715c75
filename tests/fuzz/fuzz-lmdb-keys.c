/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The key codecs of lmdb-keys.c (body ids, link, chunk and gc keys) and
   the uidls key encoder and matcher, over arbitrary bytes. Checked:
   - a decoder accepts exactly the keys of its size (gc: a known kind and
     a time that fits int64_t), and what it accepts encodes back to the
     same bytes;
   - keys sort as their fields do (LMDB compares keys with memcmp(): a
     mailbox's links by UID, a body's chunks by index, gc entries by kind,
     time, body id): two keys of each kind from the input compare as
     their decoded fields.

   Input: the key bytes; for the order checks, two keys of the kind's
   size from its start. */

#include "lib.h"
#include "buffer.h"
#include "byteorder.h"
#include "lmdb-records.h"
#include "fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sign(int v)
{
	return v < 0 ? -1 : (v > 0 ? 1 : 0);
}

#define CMP(a, b) ((a) < (b) ? -1 : ((a) > (b) ? 1 : 0))

static void check_body_id(const unsigned char *key, size_t size)
{
	unsigned char out[LMDB_BODY_ID_SIZE];
	uint64_t id;

	if (!lmdb_body_id_decode(key, size, &id)) {
		/* id 0 is never allocated: its key is refused too */
		fuzz_assert(size != LMDB_BODY_ID_SIZE ||
			    be64_to_cpu_unaligned(key) == 0);
		return;
	}
	fuzz_assert(size == LMDB_BODY_ID_SIZE);
	lmdb_body_id_encode(id, out);
	fuzz_assert_bytes("body id", key, size, out, sizeof(out));
}

static void check_link_key(const unsigned char *key, size_t size)
{
	unsigned char out[LMDB_LINK_KEY_SIZE];
	guid_128_t guid;
	uint32_t uid;

	if (!lmdb_link_key_decode(key, size, guid, &uid)) {
		fuzz_assert(size != LMDB_LINK_KEY_SIZE);
		return;
	}
	fuzz_assert(size == LMDB_LINK_KEY_SIZE);
	lmdb_link_key_encode(guid, uid, out);
	fuzz_assert_bytes("link key", key, size, out, sizeof(out));
}

static void check_chunk_key(const unsigned char *key, size_t size)
{
	unsigned char out[LMDB_CHUNK_KEY_SIZE];
	uint64_t body_id;
	uint32_t idx;

	if (!lmdb_chunk_key_decode(key, size, &body_id, &idx)) {
		fuzz_assert(size != LMDB_CHUNK_KEY_SIZE);
		return;
	}
	fuzz_assert(size == LMDB_CHUNK_KEY_SIZE);
	lmdb_chunk_key_encode(body_id, idx, out);
	fuzz_assert_bytes("chunk key", key, size, out, sizeof(out));
}

static void check_gc_key(const unsigned char *key, size_t size)
{
	unsigned char out[LMDB_GC_KEY_SIZE];
	enum lmdb_gc_kind kind;
	int64_t since;
	uint64_t body_id;
	bool valid;

	valid = size == LMDB_GC_KEY_SIZE &&
		(key[0] == LMDB_GC_KIND_PENDING || key[0] == LMDB_GC_KIND_DEAD) &&
		(key[1] & 0x80) == 0;
	if (!lmdb_gc_key_decode(key, size, &kind, &since, &body_id)) {
		fuzz_assert(!valid);
		return;
	}
	fuzz_assert(valid);
	fuzz_assert(since >= 0);
	lmdb_gc_key_encode(kind, since, body_id, out);
	fuzz_assert_bytes("gc key", key, size, out, sizeof(out));
}

static void check_order(const unsigned char *data, size_t size)
{
	const unsigned char *a = data, *b;
	guid_128_t ga, gb;
	uint64_t ia, ib;
	uint32_t ua, ub;
	enum lmdb_gc_kind ka, kb;
	int64_t sa, sb;
	int cmp;

	if (size >= 2 * LMDB_LINK_KEY_SIZE) {
		b = data + LMDB_LINK_KEY_SIZE;
		fuzz_assert(lmdb_link_key_decode(a, LMDB_LINK_KEY_SIZE, ga, &ua));
		fuzz_assert(lmdb_link_key_decode(b, LMDB_LINK_KEY_SIZE, gb, &ub));
		cmp = sign(memcmp(ga, gb, GUID_128_SIZE));
		if (cmp == 0)
			cmp = CMP(ua, ub);
		fuzz_assert(sign(memcmp(a, b, LMDB_LINK_KEY_SIZE)) == cmp);
	}
	if (size >= 2 * LMDB_CHUNK_KEY_SIZE) {
		b = data + LMDB_CHUNK_KEY_SIZE;
		fuzz_assert(lmdb_chunk_key_decode(a, LMDB_CHUNK_KEY_SIZE, &ia, &ua));
		fuzz_assert(lmdb_chunk_key_decode(b, LMDB_CHUNK_KEY_SIZE, &ib, &ub));
		cmp = ia != ib ? CMP(ia, ib) : CMP(ua, ub);
		fuzz_assert(sign(memcmp(a, b, LMDB_CHUNK_KEY_SIZE)) == cmp);
	}
	if (size >= 2 * LMDB_BODY_ID_SIZE) {
		b = data + LMDB_BODY_ID_SIZE;
		/* id 0 is never allocated: its key is refused */
		fuzz_assert(lmdb_body_id_decode(a, LMDB_BODY_ID_SIZE, &ia) ==
			    (be64_to_cpu_unaligned(a) != 0));
		fuzz_assert(lmdb_body_id_decode(b, LMDB_BODY_ID_SIZE, &ib) ==
			    (be64_to_cpu_unaligned(b) != 0));
		ia = be64_to_cpu_unaligned(a);
		ib = be64_to_cpu_unaligned(b);
		fuzz_assert(sign(memcmp(a, b, LMDB_BODY_ID_SIZE)) == CMP(ia, ib));
	}
	if (size >= 2 * LMDB_GC_KEY_SIZE) {
		b = data + LMDB_GC_KEY_SIZE;
		if (lmdb_gc_key_decode(a, LMDB_GC_KEY_SIZE, &ka, &sa, &ia) &&
		    lmdb_gc_key_decode(b, LMDB_GC_KEY_SIZE, &kb, &sb, &ib)) {
			cmp = ka != kb ? CMP(ka, kb) :
				(sa != sb ? CMP(sa, sb) : CMP(ia, ib));
			fuzz_assert(sign(memcmp(a, b, LMDB_GC_KEY_SIZE)) == cmp);
		}
	}
}

/* GUID + UIDL + NUL + UID: the encoder makes a key of this form from the
   fields read from the input, exactly the input when the input has that
   form; a key matches a GUID and UIDL only when it holds exactly them
   and a UID. */
static void check_uidls_key(const unsigned char *data, size_t size)
{
	buffer_t *buf;
	const char *uidl;
	uint32_t uid, uid2;
	bool canonical;

	if (size < GUID_128_SIZE + 1 + 4)
		return;
	uidl = t_strndup(data + GUID_128_SIZE, size - GUID_128_SIZE - 5);
	uid = be32_to_cpu_unaligned(data + size - 4);
	canonical = data[size - 5] == '\0' &&
		strlen(uidl) == size - GUID_128_SIZE - 5;
	buf = t_buffer_create(size);
	lmdb_uidls_key_encode(buf, data, uidl, uid);
	fuzz_assert(buf->used == GUID_128_SIZE + strlen(uidl) + 5);
	fuzz_assert(memcmp(buf->data, data, GUID_128_SIZE + strlen(uidl)) == 0);
	if (canonical)
		fuzz_assert_bytes("uidls key", buf->data, buf->used, data, size);
	fuzz_assert(lmdb_uidls_key_match(data, size, data, uidl, &uid2) ==
		    (canonical && uid != 0));
	if (canonical && uid != 0)
		fuzz_assert(uid2 == uid);
	fuzz_assert(lmdb_uidls_key_match(buf->data, buf->used, data, uidl,
					 &uid2) == (uid != 0));
}

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	fuzz_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *key = fuzz_dup(data, size);

	T_BEGIN {
		check_body_id(key, size);
		check_link_key(key, size);
		check_chunk_key(key, size);
		check_gc_key(key, size);
		check_order(key, size);
		check_uidls_key(key, size);
	} T_END;
	free(key);
	return 0;
}
