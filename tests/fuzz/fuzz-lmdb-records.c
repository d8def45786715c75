/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The record decoders of lmdb-records.h, one record type per binary
   (FUZZ_RECORD_* picks it at compile time), each over arbitrary key and
   value bytes. Checked besides "no crash, no out-of-bounds read":

   - a decoder that fails says why;
   - what a decoder accepts, its encoder accepts, and encoding it again
     gives the same bytes: exactly the input when the input is canonical
     (reserved bytes zero, no trailing bytes), else the same fields;
     decoding the new bytes gives the same record;
   - a record read under its key is not read under a key one bit away
     (the checksum covers the key);
   - schema 1 (the _v1 decoders): what the upgrade reads, schema 2 can
     store and read back unchanged (lmdb-schema.c converts this way).

   Input: u8 mode (bit 0: seal the value with a correct checksum before
   decoding; bit 1: the schema-1 decoder; chunks: bit 1 seals with the
   schema-1 checksum), the key (fixed size, or u16 length + bytes for the
   variable-size keys), then the value: the rest of the input. */

#include "lib.h"
#include "buffer.h"
#include "byteorder.h"
#include "crc32.h"
#include "lmdb-crc32.h"
#include "lmdb-records.h"
#include "lmdb-values.h"
#include "fuzz-common.h"

#define MODE_SEAL 0x01
#define MODE_V1 0x02

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_failed(bool ok, const char *error)
{
	if (!ok)
		fuzz_assert(error != NULL && error[0] != '\0');
}

static bool ATTR_UNUSED str_eq(const char *a, const char *b)
{
	return strcmp(a == NULL ? "" : a, b == NULL ? "" : b) == 0;
}

/* out is what the encoder wrote for the record decoded from in. The
   fields must be the input's, but for the reserved bytes (written as
   zero, ignored on read) and trailing bytes (allowed for fields a later
   revision appends); the checksum then differs. A canonical input must
   come back byte for byte. */
static void ATTR_UNUSED
check_reencoded(const unsigned char *in, size_t in_size, const buffer_t *out,
		const unsigned int *reserved, unsigned int reserved_count)
{
	const unsigned char *o = out->data;
	unsigned char *copy;
	bool canonical = in_size == out->used;
	unsigned int i;

	fuzz_assert(out->used >= LMDB_RECORD_HDR_SIZE);
	fuzz_assert(out->used <= in_size);
	copy = t_malloc_no0(out->used);
	memcpy(copy, in, out->used);
	for (i = 0; i < reserved_count; i++) {
		fuzz_assert(reserved[i] < out->used);
		if (copy[reserved[i]] != 0)
			canonical = FALSE;
		copy[reserved[i]] = 0;
	}
	fuzz_assert(o[0] == in[0]);
	fuzz_assert_bytes("re-encoded fields", copy + LMDB_RECORD_HDR_SIZE,
			  out->used - LMDB_RECORD_HDR_SIZE,
			  o + LMDB_RECORD_HDR_SIZE,
			  out->used - LMDB_RECORD_HDR_SIZE);
	if (canonical)
		fuzz_assert_bytes("re-encoded record", in, in_size, o, out->used);
}

#ifdef FUZZ_RECORD_ENV
#define KEY_SIZE 0
static bool env_eq(const struct lmdb_env_record *a,
		   const struct lmdb_env_record *b)
{
	return a->schema_version == b->schema_version &&
		a->generation == b->generation &&
		a->next_body_id == b->next_body_id &&
		a->created == b->created && a->links == b->links &&
		a->link_vsize_bytes == b->link_vsize_bytes &&
		a->bodies == b->bodies && a->body_bytes == b->body_bytes &&
		a->last_purge == b->last_purge;
}

static void fuzz_record(uint8_t mode, const unsigned char *key ATTR_UNUSED,
			size_t key_size ATTR_UNUSED, unsigned char *value,
			size_t size)
{
	struct lmdb_env_record rec, rec2;
	buffer_t *out = t_buffer_create(128);
	const char *error = NULL;
	bool ok;

	/* the key is always "env": nothing else to vary */
	if ((mode & MODE_SEAL) != 0) {
		fuzz_seal(value, size, LMDB_RECORD_TYPE_ENV,
			  LMDB_ENV_RECORD_KEY, LMDB_ENV_RECORD_KEY_SIZE);
	}
	if ((mode & MODE_V1) != 0) {
		ok = lmdb_env_record_decode_v1(value, size, &rec, &error);
		check_failed(ok, error);
		if (!ok)
			return;
		/* the upgrade rebuilds or rewrites it as schema 2 */
		fuzz_assert(lmdb_env_record_encode(out, &rec, &error));
		fuzz_assert(lmdb_env_record_decode(out->data, out->used, &rec2,
						   &error));
		fuzz_assert(env_eq(&rec, &rec2));
		return;
	}
	ok = lmdb_env_record_decode(value, size, &rec, &error);
	check_failed(ok, error);
	if (!ok)
		return;
	fuzz_assert(lmdb_env_record_encode(out, &rec, &error));
	check_reencoded(value, size, out, NULL, 0);
	fuzz_assert(lmdb_env_record_decode(out->data, out->used, &rec2, &error));
	fuzz_assert(env_eq(&rec, &rec2));
}
#endif

#ifdef FUZZ_RECORD_BODY
#define KEY_SIZE LMDB_BODY_ID_SIZE
static bool body_eq(const struct lmdb_body_record *a,
		    const struct lmdb_body_record *b)
{
	return a->state == b->state && a->refcount == b->refcount &&
		a->physical_size == b->physical_size &&
		a->message_size == b->message_size &&
		a->virtual_size == b->virtual_size &&
		a->received_date == b->received_date &&
		a->save_date == b->save_date &&
		a->state_since == b->state_since &&
		a->chunk_count == b->chunk_count &&
		a->chunk_size == b->chunk_size &&
		memcmp(a->sha256, b->sha256, sizeof(a->sha256)) == 0 &&
		memcmp(a->orig_mailbox_guid, b->orig_mailbox_guid,
		       sizeof(a->orig_mailbox_guid)) == 0 &&
		str_eq(a->guid, b->guid);
}

static void fuzz_record(uint8_t mode, const unsigned char *key,
			size_t key_size, unsigned char *value, size_t size)
{
	/* state u8, reserved u16 */
	static const unsigned int reserved[] = { 6, 7 };
	struct lmdb_body_record rec, rec2;
	buffer_t *out;
	pool_t pool;
	const char *error = NULL;
	uint64_t body_id;
	bool ok;

	if (!lmdb_body_id_decode(key, key_size, &body_id)) {
		/* every 8-byte key decodes but id 0, never allocated */
		fuzz_assert(key_size == LMDB_BODY_ID_SIZE &&
			    be64_to_cpu_unaligned(key) == 0);
		return;
	}
	out = t_buffer_create(128);
	pool = fuzz_pool_create();
	if ((mode & MODE_SEAL) != 0)
		fuzz_seal(value, size, LMDB_RECORD_TYPE_BODY, key, key_size);
	if ((mode & MODE_V1) != 0) {
		ok = lmdb_body_record_decode_v1(value, size, pool, &rec, &error);
		check_failed(ok, error);
		if (ok) {
			fuzz_assert(lmdb_body_record_encode(out, body_id, &rec,
							    &error));
			fuzz_assert(lmdb_body_record_decode(body_id, out->data,
							    out->used, pool,
							    &rec2, &error));
			fuzz_assert(body_eq(&rec, &rec2));
		}
		pool_unref(&pool);
		return;
	}
	ok = lmdb_body_record_decode(body_id, value, size, pool, &rec, &error);
	check_failed(ok, error);
	if (ok) {
		fuzz_assert(lmdb_body_record_encode(out, body_id, &rec, &error));
		check_reencoded(value, size, out, reserved,
				N_ELEMENTS(reserved));
		fuzz_assert(lmdb_body_record_decode(body_id, out->data,
						    out->used, pool, &rec2,
						    &error));
		fuzz_assert(body_eq(&rec, &rec2));
		/* bound to its key */
		fuzz_assert(!lmdb_body_record_decode(body_id ^ 1, value, size,
						     pool, &rec2, &error));
	}
	pool_unref(&pool);
}
#endif

#ifdef FUZZ_RECORD_LINK
#define KEY_SIZE LMDB_LINK_KEY_SIZE
static bool link_eq(const struct lmdb_link_record *a,
		    const struct lmdb_link_record *b)
{
	unsigned int i;

	if (a->body_id != b->body_id || a->save_date != b->save_date ||
	    a->flags != b->flags || a->pop3_order != b->pop3_order ||
	    a->modseq != b->modseq || !str_eq(a->pop3_uidl, b->pop3_uidl) ||
	    a->keywords_count != b->keywords_count)
		return FALSE;
	for (i = 0; i < a->keywords_count; i++) {
		if (!str_eq(a->keywords[i], b->keywords[i]))
			return FALSE;
	}
	return TRUE;
}

static void fuzz_record(uint8_t mode, const unsigned char *key,
			size_t key_size, unsigned char *value, size_t size)
{
	/* flags u8, reserved u16 */
	static const unsigned int reserved[] = { 6, 7 };
	struct lmdb_link_record rec, rec2;
	buffer_t *out = t_buffer_create(128);
	pool_t pool = fuzz_pool_create();
	const char *error = NULL;
	guid_128_t guid;
	uint32_t uid;
	bool ok;

	fuzz_assert(lmdb_link_key_decode(key, key_size, guid, &uid));
	if ((mode & MODE_SEAL) != 0)
		fuzz_seal(value, size, LMDB_RECORD_TYPE_LINK, key, key_size);
	if ((mode & MODE_V1) != 0) {
		ok = lmdb_link_record_decode_v1(value, size, pool, &rec, &error);
		check_failed(ok, error);
		if (ok) {
			/* the upgrade keeps every link schema 1 could read */
			fuzz_assert(lmdb_link_record_encode(out, guid, uid, &rec,
							    &error));
			fuzz_assert(lmdb_link_record_decode(guid, uid, out->data,
							    out->used, pool,
							    &rec2, &error));
			fuzz_assert(link_eq(&rec, &rec2));
		}
		pool_unref(&pool);
		return;
	}
	ok = lmdb_link_record_decode(guid, uid, value, size, pool, &rec, &error);
	check_failed(ok, error);
	if (ok) {
		fuzz_assert(lmdb_link_record_encode(out, guid, uid, &rec,
						    &error));
		check_reencoded(value, size, out, reserved,
				N_ELEMENTS(reserved));
		fuzz_assert(lmdb_link_record_decode(guid, uid, out->data,
						    out->used, pool, &rec2,
						    &error));
		fuzz_assert(link_eq(&rec, &rec2));
		fuzz_assert(!lmdb_link_record_decode(guid, uid ^ 1, value, size,
						     pool, &rec2, &error));
	}
	pool_unref(&pool);
}
#endif

#ifdef FUZZ_RECORD_MAILBOX
#define KEY_SIZE GUID_128_SIZE
static bool mailbox_eq(const struct lmdb_mailbox_record *a,
		       const struct lmdb_mailbox_record *b)
{
	return a->state == b->state && a->uid_validity == b->uid_validity &&
		a->highest_uid == b->highest_uid &&
		a->highest_modseq == b->highest_modseq &&
		a->created == b->created &&
		a->hierarchy_sep == b->hierarchy_sep &&
		str_eq(a->name, b->name);
}

static void fuzz_record(uint8_t mode, const unsigned char *key,
			size_t key_size, unsigned char *value, size_t size)
{
	/* state u8, hierarchy_sep u8, reserved u8 */
	static const unsigned int reserved[] = { 7 };
	struct lmdb_mailbox_record rec, rec2;
	buffer_t *out = t_buffer_create(128);
	pool_t pool = fuzz_pool_create();
	const char *error = NULL;
	guid_128_t guid, guid2;
	bool ok;

	memcpy(guid, key, key_size);
	if ((mode & MODE_SEAL) != 0)
		fuzz_seal(value, size, LMDB_RECORD_TYPE_MAILBOX, key, key_size);
	if ((mode & MODE_V1) != 0) {
		ok = lmdb_mailbox_record_decode_v1(value, size, pool, &rec,
						   &error);
		check_failed(ok, error);
		if (ok) {
			fuzz_assert(lmdb_mailbox_record_encode(out, guid, &rec,
							       &error));
			fuzz_assert(lmdb_mailbox_record_decode(guid, out->data,
				out->used, pool, &rec2, &error));
			fuzz_assert(mailbox_eq(&rec, &rec2));
		}
		pool_unref(&pool);
		return;
	}
	ok = lmdb_mailbox_record_decode(guid, value, size, pool, &rec, &error);
	check_failed(ok, error);
	if (ok) {
		fuzz_assert(lmdb_mailbox_record_encode(out, guid, &rec, &error));
		check_reencoded(value, size, out, reserved,
				N_ELEMENTS(reserved));
		fuzz_assert(lmdb_mailbox_record_decode(guid, out->data,
						       out->used, pool, &rec2,
						       &error));
		fuzz_assert(mailbox_eq(&rec, &rec2));
		memcpy(guid2, guid, sizeof(guid2));
		guid2[GUID_128_SIZE - 1] ^= 1;
		fuzz_assert(!lmdb_mailbox_record_decode(guid2, value, size, pool,
							&rec2, &error));
	}
	pool_unref(&pool);
}
#endif

#ifdef FUZZ_RECORD_GC
#define KEY_SIZE LMDB_GC_KEY_SIZE
static void fuzz_record(uint8_t mode, const unsigned char *key,
			size_t key_size, unsigned char *value, size_t size)
{
	buffer_t *out = t_buffer_create(16);
	unsigned char key2[LMDB_GC_KEY_SIZE];
	const char *error = NULL;
	bool ok;

	if ((mode & MODE_SEAL) != 0)
		fuzz_seal(value, size, LMDB_RECORD_TYPE_GC, key, key_size);
	ok = lmdb_gc_value_check(key, value, size, &error);
	check_failed(ok, error);
	if (!ok)
		return;
	lmdb_gc_value_encode(out, key);
	fuzz_assert(out->used == LMDB_RECORD_HDR_SIZE);
	if (size == out->used)
		fuzz_assert_bytes("re-encoded gc value", value, size,
				  out->data, out->used);
	else
		fuzz_assert(((const unsigned char *)out->data)[0] == value[0]);
	memcpy(key2, key, sizeof(key2));
	key2[LMDB_GC_KEY_SIZE - 1] ^= 1;
	fuzz_assert(!lmdb_gc_value_check(key2, value, size, &error));
}
#endif

#ifdef FUZZ_RECORD_CHUNK
#define KEY_SIZE LMDB_CHUNK_KEY_SIZE
#define MODE_SEAL_V1 0x02
static void fuzz_record(uint8_t mode, const unsigned char *key,
			size_t key_size, unsigned char *value, size_t size)
{
	unsigned char hdr[LMDB_CHUNK_HDR_SIZE];
	const void *data;
	const char *error = NULL;
	uint64_t body_id;
	uint32_t idx, split;
	size_t data_size;
	bool ok;

	fuzz_assert(lmdb_chunk_key_decode(key, key_size, &body_id, &idx));
	/* our CRC-32 is zlib's (Dovecot's), also when continued */
	fuzz_assert(lmdb_crc32(value, size) == crc32_data(value, size));
	split = size == 0 ? 0 : key[0] % (size + 1);
	fuzz_assert(lmdb_crc32_update(lmdb_crc32(value, split), value + split,
				      size - split) ==
		    crc32_data(value, size));

	if (size >= LMDB_CHUNK_HDR_SIZE && (mode & MODE_SEAL) != 0) {
		cpu32_to_be_unaligned(fuzz_record_crc(LMDB_RECORD_TYPE_CHUNK,
			key, key_size, value + LMDB_CHUNK_HDR_SIZE,
			size - LMDB_CHUNK_HDR_SIZE), value + 4);
	} else if (size >= LMDB_CHUNK_HDR_SIZE &&
		   (mode & MODE_SEAL_V1) != 0) {
		cpu32_to_be_unaligned(crc32_data(value + LMDB_CHUNK_HDR_SIZE,
			size - LMDB_CHUNK_HDR_SIZE), value + 4);
	}
	ok = lmdb_chunk_decode(body_id, idx, value, size, &data, &data_size,
			       &error);
	check_failed(ok, error);
	if (!ok)
		return;
	fuzz_assert(data == value + LMDB_CHUNK_HDR_SIZE);
	fuzz_assert(data_size == size - LMDB_CHUNK_HDR_SIZE);
	fuzz_assert(value[1] == 0 && value[2] == 0 && value[3] == 0);
	if (value[0] == LMDB_RECORD_VERSION) {
		lmdb_chunk_header_encode(hdr, body_id, idx, data, data_size);
		fuzz_assert_bytes("re-encoded chunk header", value,
				  LMDB_CHUNK_HDR_SIZE, hdr, sizeof(hdr));
		/* bound to its key */
		fuzz_assert(!lmdb_chunk_decode(body_id, idx ^ 1, value, size,
					       &data, &data_size, &error));
	} else {
		fuzz_assert(value[0] == LMDB_RECORD_VERSION_1);
		fuzz_assert(be32_to_cpu_unaligned(value + 4) ==
			    crc32_data(data, data_size));
	}
}
#endif

#ifdef FUZZ_RECORD_QUARANTINE
#define KEY_SIZE_MAX 600
static void fuzz_record(uint8_t mode, const unsigned char *key,
			size_t key_size, unsigned char *value, size_t size)
{
	struct lmdb_quarantine_record rec, rec2;
	buffer_t *out = t_buffer_create(128);
	pool_t pool = fuzz_pool_create();
	const char *error = NULL;
	bool ok;

	if ((mode & MODE_SEAL) != 0) {
		fuzz_seal(value, size, LMDB_RECORD_TYPE_QUARANTINE, key,
			  key_size);
	}
	ok = lmdb_quarantine_record_decode(key, key_size, value, size, pool,
					   &rec, &error);
	check_failed(ok, error);
	if (ok) {
		fuzz_assert(rec.raw_size <= size);
		fuzz_assert(rec.raw_size == 0 ||
			    ((const unsigned char *)rec.raw >= value &&
			     (const unsigned char *)rec.raw + rec.raw_size ==
			     value + size));
		/* the raw bytes are the rest: the encoding is always
		   canonical */
		fuzz_assert(lmdb_quarantine_record_encode(out, key, key_size,
							  &rec, &error));
		fuzz_assert_bytes("re-encoded quarantine record", value, size,
				  out->data, out->used);
		fuzz_assert(lmdb_quarantine_record_decode(key, key_size,
			out->data, out->used, pool, &rec2, &error));
		fuzz_assert(rec.since == rec2.since &&
			    str_eq(rec.reason, rec2.reason) &&
			    rec.raw_size == rec2.raw_size);
		if (key_size > 0) {
			unsigned char *key2 = fuzz_dup(key, key_size);

			key2[0] ^= 1;
			fuzz_assert(!lmdb_quarantine_record_decode(key2,
				key_size, value, size, pool, &rec2, &error));
			free(key2);
		}
	}
	pool_unref(&pool);
}
#endif

#ifdef FUZZ_RECORD_UIDLS
#define KEY_SIZE_MAX (LMDB_UIDLS_KEY_MAX_SIZE + 8)
static void fuzz_record(uint8_t mode, const unsigned char *key,
			size_t key_size, unsigned char *value, size_t size)
{
	buffer_t *out = t_buffer_create(16);
	const char *error = NULL;
	bool ok;

	/* the value is only the key's checksum (the key's codec:
	   fuzz-lmdb-keys.c) */
	if ((mode & MODE_SEAL) != 0)
		fuzz_seal(value, size, LMDB_RECORD_TYPE_UIDL, key, key_size);
	ok = lmdb_uidls_value_check(key, key_size, value, size, &error);
	check_failed(ok, error);
	if (!ok)
		return;
	lmdb_uidls_value_encode(out, key, key_size);
	check_reencoded(value, size, out, NULL, 0);
	fuzz_assert(lmdb_uidls_value_check(key, key_size, out->data, out->used,
					   &error));
	if (key_size > 0) {
		unsigned char *key2 = fuzz_dup(key, key_size);

		key2[key_size - 1] ^= 1;
		fuzz_assert(!lmdb_uidls_value_check(key2, key_size, value, size,
						    &error));
		free(key2);
	}
}
#endif

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	fuzz_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in;
	const unsigned char *p;
	unsigned char *key, *value;
	size_t key_size, value_size;
	uint8_t mode;
#ifdef KEY_SIZE
	unsigned char key_buf[KEY_SIZE + 1];
#endif

	fuzz_input_init(&in, data, size);
	mode = fuzz_u8(&in);
#ifdef KEY_SIZE
	/* short inputs: the key's missing bytes are zeros */
	memset(key_buf, 0, sizeof(key_buf));
	key_size = fuzz_bytes(&in, KEY_SIZE, &p);
	memcpy(key_buf, p, key_size);
	key_size = KEY_SIZE;
	key = fuzz_dup(key_buf, key_size);
#else
	key_size = fuzz_slice(&in, KEY_SIZE_MAX, &p);
	key = fuzz_dup(p, key_size);
#endif
	value_size = fuzz_bytes(&in, SIZE_MAX, &p);
	/* a copy of its own size: an over-read past the value is caught */
	value = fuzz_dup(p, value_size);
	T_BEGIN {
		fuzz_record(mode, key, key_size, value, value_size);
	} T_END;
	free(value);
	free(key);
	return 0;
}
