#ifndef TEST_POP3_POLICY_V1_H
#define TEST_POP3_POLICY_V1_H

/* Version-1 record values of the pop3_policy environment (schemas 1 and
   2), written byte by byte as the module before schema 3 wrote them:
   u8 version 1, then the fields, no checksum (docs/pop3-policy.md,
   "Schema versions"). Kept here, not in pop3-policy-records.c, so the
   conversion is tested against that layout and not against the code
   under test. Nothing is checked: tests write malformed values with
   these too. */

#include "buffer.h"
#include "pop3-policy-records.h"

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

static inline void test_v1_str(buffer_t *buf, const char *str)
{
	test_v1_u16(buf, strlen(str));
	buffer_append(buf, str, strlen(str));
}

static inline void
test_v1_msg_encode(buffer_t *buf, const struct pop3_policy_msg_record *rec)
{
	buffer_append_c(buf, 1);
	buffer_append_c(buf, rec->flags);
	test_v1_u64(buf, rec->first_download);
	test_v1_str(buf, rec->uidl == NULL ? "" : rec->uidl);
	test_v1_str(buf, rec->guid);
}

static inline void test_v1_uidl_encode(buffer_t *buf, const char *guid)
{
	buffer_append_c(buf, 1);
	test_v1_str(buf, guid);
}

static inline void
test_v1_schema_encode(buffer_t *buf, uint32_t schema_version,
		      uint64_t created)
{
	buffer_append_c(buf, 1);
	test_v1_u32(buf, schema_version);
	test_v1_u64(buf, created);
}

static inline void test_v1_flag_encode(buffer_t *buf, const char *keyword)
{
	buffer_append_c(buf, 1);
	test_v1_str(buf, keyword);
}

static inline void test_v1_sweep_encode(buffer_t *buf, uint64_t last_sweep)
{
	buffer_append_c(buf, 1);
	test_v1_u64(buf, last_sweep);
}

static inline void test_v1_download_value_encode(buffer_t *buf)
{
	buffer_append_c(buf, 1);
}

#endif
