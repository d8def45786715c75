/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The validity rules of lmdb-values.c and lmdb_value_digest(), over any
   string (the input up to its first NUL, in an allocation of its own
   size). Each rule is checked against its definition in lmdb-values.h,
   written out again here:
   - UIDL: 1..255 bytes of 0x21..0x7e;
   - keyword: 1..255 atom characters, none of (){%*"\] or a backslash;
   - GUID: 1..255 bytes, none below 0x20 nor 0x7f;
   - mailbox name: 1..4096 bytes, no control characters, valid UTF-8;
   and the digest is 32 lowercase hex digits, the last 16 bytes of the
   value's SHA-1 (computed here with OpenSSL), and itself a valid UIDL,
   GUID and keyword (it replaces values that are not). */

#include "lib.h"
#include "hex-binary.h"
#include "unichar.h"
#include "lmdb-values.h"
#include "fuzz-common.h"

#include <openssl/sha.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool spec_uidl(const unsigned char *s, size_t len)
{
	size_t i;

	if (len < 1 || len > LMDB_UIDL_MAX_LEN)
		return FALSE;
	for (i = 0; i < len; i++) {
		if (s[i] < 0x21 || s[i] > 0x7e)
			return FALSE;
	}
	return TRUE;
}

static bool spec_keyword(const unsigned char *s, size_t len)
{
	size_t i;

	if (len < 1 || len > LMDB_KEYWORD_MAX_LEN)
		return FALSE;
	for (i = 0; i < len; i++) {
		if (s[i] <= 0x20 || s[i] >= 0x7f)
			return FALSE;
		switch (s[i]) {
		case '(': case ')': case '{': case '%': case '*':
		case '"': case '\\': case ']':
			return FALSE;
		}
	}
	return TRUE;
}

static bool spec_no_controls(const unsigned char *s, size_t len, size_t max)
{
	size_t i;

	if (len < 1 || len > max)
		return FALSE;
	for (i = 0; i < len; i++) {
		if (s[i] < 0x20 || s[i] == 0x7f)
			return FALSE;
	}
	return TRUE;
}

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	fuzz_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const unsigned char *nul = memchr(data, '\0', size);
	size_t len = nul == NULL ? size : (size_t)(nul - data);
	unsigned char sha[SHA_DIGEST_LENGTH];
	char *str = malloc(len + 1);
	const char *digest;

	i_assert(str != NULL);
	memcpy(str, data, len);
	str[len] = '\0';
	T_BEGIN {
		const unsigned char *s = (const unsigned char *)str;

		fuzz_assert(lmdb_uidl_is_valid(str) == spec_uidl(s, len));
		fuzz_assert(lmdb_keyword_is_valid(str) == spec_keyword(s, len));
		fuzz_assert(lmdb_guid_is_valid(str) ==
			    spec_no_controls(s, len, LMDB_GUID_MAX_LEN));
		fuzz_assert(lmdb_mailbox_name_is_valid(str) ==
			    (spec_no_controls(s, len, LMDB_NAME_MAX_LEN) &&
			     uni_utf8_str_is_valid(str)));

		digest = lmdb_value_digest(str);
		SHA1(s, len, sha);
		fuzz_assert(strcmp(digest, binary_to_hex(sha + sizeof(sha) -
			GUID_128_SIZE, GUID_128_SIZE)) == 0);
		fuzz_assert(strlen(digest) == 32);
		fuzz_assert(strspn(digest, "0123456789abcdef") == 32);
		fuzz_assert(lmdb_uidl_is_valid(digest));
		fuzz_assert(lmdb_guid_is_valid(digest));
		fuzz_assert(lmdb_keyword_is_valid(digest));
	} T_END;
	free(str);
	return 0;
}
