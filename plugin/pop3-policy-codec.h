#ifndef POP3_POLICY_CODEC_H
#define POP3_POLICY_CODEC_H

/* The byte level of the policy records, for pop3-policy-records.c.

   Version 2 (schema 3): u8 version 2, u32 CRC-32 over the record type
   byte, the key and every value byte after the CRC, then the fields.
   Version 1 (schemas 1 and 2): u8 version 1, then the same fields. Only
   the schema conversion reads version 1 (pop3_policy_record_upgrade_v1()):
   every decoder refuses it. Integers are big-endian; strings are a u16
   length plus bytes without NULs. */

#include "pop3-policy-records.h"

#define POP3_POLICY_RECORD_HEADER_SIZE (1 + 4)

/* A bounds-checked read of one value: the first failure is kept in
   error, and every later read fails too. */
struct pop3_policy_reader {
	const unsigned char *data;
	size_t size, pos;
	const char *error;
};

void pop3_policy_reader_init(struct pop3_policy_reader *r, const void *data,
			     size_t size);
/* Returns FALSE, so that a check can end with it. */
bool pop3_policy_reader_fail(struct pop3_policy_reader *r, const char *error);
bool pop3_policy_read_u8(struct pop3_policy_reader *r, uint8_t *v_r);
bool pop3_policy_read_u16(struct pop3_policy_reader *r, uint16_t *v_r);
bool pop3_policy_read_u32(struct pop3_policy_reader *r, uint32_t *v_r);
bool pop3_policy_read_u64(struct pop3_policy_reader *r, uint64_t *v_r);
/* The string is on the data stack. */
bool pop3_policy_read_str(struct pop3_policy_reader *r, size_t max_len,
			  const char **str_r);
/* The version (2) and the CRC of what follows under type and key. */
bool pop3_policy_read_header(struct pop3_policy_reader *r,
			     enum pop3_policy_record_type type,
			     const void *key, size_t key_size);
bool pop3_policy_read_header_v1(struct pop3_policy_reader *r);
/* FALSE with *error_r on any failure or trailing bytes. */
bool pop3_policy_reader_finish(struct pop3_policy_reader *r,
			       const char **error_r);

uint32_t pop3_policy_record_crc(enum pop3_policy_record_type type,
				const void *key, size_t key_size,
				const void *fields, size_t fields_size);

void pop3_policy_write_u16(buffer_t *buf, uint16_t v);
void pop3_policy_write_u32(buffer_t *buf, uint32_t v);
void pop3_policy_write_u64(buffer_t *buf, uint64_t v);
void pop3_policy_write_str(buffer_t *buf, const char *str);
/* Start a version-2 value: the header with a CRC to fill in; *start_r
   is where the value starts in buf. */
void pop3_policy_write_header(buffer_t *buf, size_t *start_r);
/* Fill in the CRC of the value started at start, its fields written. */
void pop3_policy_write_crc(buffer_t *buf, size_t start,
			   enum pop3_policy_record_type type,
			   const void *key, size_t key_size);

#endif
