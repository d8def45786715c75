/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "str.h"
#include "hex-binary.h"
#include "md5.h"
#include "sha1.h"
#include "pop3-policy-records.h"

/* The pure rules built on the records: message keys, UIDL validity and
   alternatives, keep_days, the quota arithmetic. */

const char *pop3_policy_msg_key(const char *guid)
{
	unsigned char digest[MD5_RESULTLEN];

	if (strlen(guid) <= POP3_POLICY_GUID_KEY_MAX_LEN)
		return guid;
	/* a GUID never starts with a NUL, so digests can't collide with
	   GUIDs used as keys directly */
	md5_get_digest(guid, strlen(guid), digest);
	return t_strconcat("\x01md5:", binary_to_hex(digest, sizeof(digest)),
			   NULL);
}

bool pop3_policy_uidl_is_valid(const char *str)
{
	size_t i;

	for (i = 0; str[i] != '\0'; i++) {
		if (i >= POP3_POLICY_UIDL_MAX_LEN ||
		    (unsigned char)str[i] < 0x21 ||
		    (unsigned char)str[i] > 0x7e)
			return FALSE;
	}
	return i > 0;
}

const char *pop3_policy_uidl_candidate(const char *base, unsigned int n)
{
	const char *suffix;
	size_t base_len;

	if (n == 0)
		return base;
	suffix = t_strdup_printf("-%u", n);
	base_len = strlen(base);
	if (base_len + strlen(suffix) > POP3_POLICY_UIDL_MAX_LEN) {
		base_len = POP3_POLICY_UIDL_MAX_LEN - strlen(suffix);
		/* a base of the full length that already ends in the
		   suffix would come back unchanged: one shorter differs
		   from it and from every other candidate (all of the full
		   length) */
		if (strcmp(base + base_len, suffix) == 0)
			base_len--;
	}
	return t_strconcat(t_strndup(base, base_len), suffix, NULL);
}

const char *pop3_policy_uidl_sanitize(const char *uidl)
{
	unsigned char digest[MD5_RESULTLEN];

	if (pop3_policy_uidl_is_valid(uidl))
		return uidl;
	md5_get_digest(uidl, strlen(uidl), digest);
	return binary_to_hex(digest, sizeof(digest));
}

const char *pop3_policy_uidl_fallback(const char *guid)
{
	unsigned char digest[SHA1_RESULTLEN];

	sha1_get_digest(guid, strlen(guid), digest);
	return t_strconcat(POP3_POLICY_UIDL_FALLBACK_PREFIX,
			   binary_to_hex(digest, sizeof(digest)), NULL);
}

bool pop3_policy_uidl_is_fallback(const char *uidl)
{
	return strncmp(uidl, POP3_POLICY_UIDL_FALLBACK_PREFIX,
		       strlen(POP3_POLICY_UIDL_FALLBACK_PREFIX)) == 0;
}

bool pop3_policy_keep_days_due(uint64_t first_download,
			       unsigned int keep_days, time_t now)
{
	uint64_t keep_secs;

	if (keep_days == 0 || first_download == 0 || now < 0)
		return FALSE;
	keep_secs = (uint64_t)keep_days * POP3_POLICY_SECS_PER_DAY;
	if (first_download > (uint64_t)-1 - keep_secs)
		return FALSE;
	return first_download + keep_secs <= (uint64_t)now;
}

static uint64_t
pop3_policy_quota_need_one(int64_t used, uint64_t ceil, uint64_t over,
			   uint64_t add)
{
	/* need = over + used + add - ceil, in signed arithmetic that can't
	   overflow for realistic quota sizes; an unlimited ceiling never
	   needs anything unless we're already over */
	int64_t need;

	if (ceil == (uint64_t)-1)
		return over;
	if (ceil > INT64_MAX / 2)
		ceil = INT64_MAX / 2;
	if (over > INT64_MAX / 4)
		over = INT64_MAX / 4;
	if (add > INT64_MAX / 4)
		add = INT64_MAX / 4;
	need = (int64_t)over + used + (int64_t)add - (int64_t)ceil;
	return need <= 0 ? 0 : (uint64_t)need;
}

void pop3_policy_quota_needed(const struct pop3_policy_quota_state *state,
			      uint64_t size, uint64_t *bytes_needed_r,
			      uint64_t *count_needed_r)
{
	*bytes_needed_r = pop3_policy_quota_need_one(state->bytes_used,
		state->bytes_ceil, state->bytes_over, size);
	*count_needed_r = pop3_policy_quota_need_one(state->count_used,
		state->count_ceil, state->count_over, 1);
}

static void
pop3_policy_quota_credit_one(uint64_t *ceil, uint64_t *over, uint64_t freed)
{
	if (freed == 0)
		return;
	if (*over >= freed) {
		*over -= freed;
		return;
	}
	freed -= *over;
	*over = 0;
	if (*ceil != (uint64_t)-1)
		*ceil = *ceil > (uint64_t)-1 - 1 - freed ? (uint64_t)-2 :
			*ceil + freed;
}

void pop3_policy_quota_credit(struct pop3_policy_quota_state *state,
			      uint64_t bytes_freed, uint64_t count_freed)
{
	pop3_policy_quota_credit_one(&state->bytes_ceil, &state->bytes_over,
				     bytes_freed);
	pop3_policy_quota_credit_one(&state->count_ceil, &state->count_over,
				     count_freed);
}
