/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "hex-binary.h"
#include "sha1.h"
#include "unichar.h"
#include "lmdb-values.h"

bool lmdb_uidl_is_valid(const char *uidl)
{
	const unsigned char *p;
	size_t len = 0;

	for (p = (const unsigned char *)uidl; *p != '\0'; p++, len++) {
		if (*p < 0x21 || *p > 0x7e || len >= LMDB_UIDL_MAX_LEN)
			return FALSE;
	}
	return len > 0;
}

/* RFC 3501 atom-specials and the "]" a flag may not hold; a backslash
   would make it a system flag. */
static bool lmdb_keyword_char_is_valid(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("(){%*\"\\]", c) == NULL;
}

bool lmdb_keyword_is_valid(const char *keyword)
{
	const unsigned char *p;
	size_t len = 0;

	for (p = (const unsigned char *)keyword; *p != '\0'; p++, len++) {
		if (!lmdb_keyword_char_is_valid(*p) ||
		    len >= LMDB_KEYWORD_MAX_LEN)
			return FALSE;
	}
	return len > 0;
}

static bool lmdb_str_has_control(const char *str, size_t max_len,
				 size_t *len_r)
{
	const unsigned char *p;
	size_t len = 0;

	for (p = (const unsigned char *)str; *p != '\0'; p++, len++) {
		if (*p < 0x20 || *p == 0x7f || len >= max_len)
			return TRUE;
	}
	*len_r = len;
	return FALSE;
}

bool lmdb_guid_is_valid(const char *guid)
{
	size_t len;

	return !lmdb_str_has_control(guid, LMDB_GUID_MAX_LEN, &len) && len > 0;
}

bool lmdb_mailbox_name_is_valid(const char *name)
{
	size_t len;

	return !lmdb_str_has_control(name, LMDB_NAME_MAX_LEN, &len) &&
		len > 0 && uni_utf8_str_is_valid(name);
}

const char *lmdb_value_digest(const char *value)
{
	unsigned char sha1[SHA1_RESULTLEN];

	sha1_get_digest(value, strlen(value), sha1);
	return binary_to_hex(sha1 + SHA1_RESULTLEN - GUID_128_SIZE,
			     GUID_128_SIZE);
}
