#ifndef TEST_LMDB_V1_H
#define TEST_LMDB_V1_H

/* Schema-1 record values written byte by byte from docs/schema.md
   (version byte 1, no checksum), without lmdb-records.c: the _v1
   decoders and the upgrade are tested against the documented layout,
   not against the code under test. Nothing is checked here, so tests
   write malformed records with these too (a keyword longer than 255
   bytes is cut at 255, its length byte can't say more). */

#include "buffer.h"
#include "crc32.h"
#include "lmdb-records.h"

static inline void test_v1_u16(buffer_t *buf, uint16_t v)
{
	buffer_append_c(buf, v >> 8);
	buffer_append_c(buf, v & 0xff);
}

static inline void test_v1_u32(buffer_t *buf, uint32_t v)
{
	test_v1_u16(buf, v >> 16);
	test_v1_u16(buf, v & 0xffff);
}

static inline void test_v1_u64(buffer_t *buf, uint64_t v)
{
	test_v1_u32(buf, v >> 32);
	test_v1_u32(buf, v & 0xffffffff);
}

static inline void test_v1_str16(buffer_t *buf, const char *str)
{
	size_t len = str == NULL ? 0 : strlen(str);

	test_v1_u16(buf, len);
	buffer_append(buf, str, len);
}

static inline void
test_v1_env(buffer_t *buf, const struct lmdb_env_record *rec)
{
	buffer_append_c(buf, 1);
	test_v1_u32(buf, rec->schema_version);
	test_v1_u64(buf, rec->generation);
	test_v1_u64(buf, rec->next_body_id);
	test_v1_u64(buf, rec->created);
	test_v1_u64(buf, rec->links);
	test_v1_u64(buf, rec->link_vsize_bytes);
	test_v1_u64(buf, rec->bodies);
	test_v1_u64(buf, rec->body_bytes);
	test_v1_u64(buf, rec->last_purge);
}

static inline void
test_v1_body(buffer_t *buf, const struct lmdb_body_record *rec)
{
	buffer_append_c(buf, 1);
	buffer_append_c(buf, rec->state);
	test_v1_u16(buf, 0);
	test_v1_u32(buf, rec->refcount);
	test_v1_u64(buf, rec->physical_size);
	test_v1_u64(buf, rec->message_size);
	test_v1_u64(buf, rec->virtual_size);
	test_v1_u64(buf, (uint64_t)rec->received_date);
	test_v1_u64(buf, (uint64_t)rec->save_date);
	test_v1_u64(buf, (uint64_t)rec->state_since);
	test_v1_u32(buf, rec->chunk_count);
	test_v1_u32(buf, rec->chunk_size);
	buffer_append(buf, rec->sha256, LMDB_SHA256_SIZE);
	buffer_append(buf, rec->orig_mailbox_guid, GUID_128_SIZE);
	test_v1_str16(buf, rec->guid);
}

static inline void
test_v1_link(buffer_t *buf, const struct lmdb_link_record *rec)
{
	unsigned int i;

	buffer_append_c(buf, 1);
	buffer_append_c(buf, rec->flags);
	test_v1_u16(buf, 0);
	test_v1_u64(buf, rec->body_id);
	test_v1_u64(buf, (uint64_t)rec->save_date);
	test_v1_u32(buf, rec->pop3_order);
	test_v1_u64(buf, rec->modseq);
	test_v1_str16(buf, rec->pop3_uidl);
	test_v1_u16(buf, rec->keywords_count);
	for (i = 0; i < rec->keywords_count; i++) {
		size_t len = I_MIN(strlen(rec->keywords[i]), 255);

		buffer_append_c(buf, len);
		buffer_append(buf, rec->keywords[i], len);
	}
}

static inline void
test_v1_mailbox(buffer_t *buf, const struct lmdb_mailbox_record *rec)
{
	buffer_append_c(buf, 1);
	buffer_append_c(buf, rec->state);
	buffer_append_c(buf, (uint8_t)rec->hierarchy_sep);
	buffer_append_c(buf, 0);
	test_v1_u32(buf, rec->uid_validity);
	test_v1_u32(buf, rec->highest_uid);
	test_v1_u64(buf, rec->highest_modseq);
	test_v1_u64(buf, (uint64_t)rec->created);
	test_v1_str16(buf, rec->name);
}

/* version 1, flags 0, reserved 0, CRC-32 of the data alone */
static inline void test_v1_chunk(buffer_t *buf, const void *data, size_t size)
{
	buffer_append_c(buf, 1);
	buffer_append_c(buf, 0);
	test_v1_u16(buf, 0);
	test_v1_u32(buf, crc32_data(data, size));
	buffer_append(buf, data, size);
}

#endif
