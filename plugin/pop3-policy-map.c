/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "pop3-policy-map.h"

uint64_t pop3_policy_map_limit(uint64_t as_limit, uint64_t vsz,
			       uint64_t cur_map, uint64_t margin,
			       uint64_t page_size)
{
	uint64_t others, room;

	if (as_limit == 0)
		return POP3_POLICY_MAP_UNLIMITED;
	/* the current map is replaced, not added to */
	others = vsz > cur_map ? vsz - cur_map : 0;
	if (others > as_limit || margin > as_limit - others)
		return 0;
	room = as_limit - others - margin;
	if (page_size > 1)
		room -= room % page_size;
	return room;
}

bool pop3_policy_map_size(uint64_t min_size, uint64_t want_size,
			  uint64_t limit, uint64_t *size_r)
{
	uint64_t size = I_MIN(want_size, limit);

	if (size < min_size || size == 0)
		return FALSE;
	*size_r = size;
	return TRUE;
}

uint64_t pop3_policy_map_grow_want(uint64_t cur, uint64_t max)
{
	if (cur >= max / 2)
		return max;
	return cur * 2;
}

uint64_t pop3_policy_map_follow_want(uint64_t cur, uint64_t needed,
				     uint64_t max)
{
	uint64_t want = cur == 0 ? 1 : cur;

	while (want < needed && want < max / 2)
		want *= 2;
	if (want < needed)
		want = I_MAX(max, needed);
	return I_MIN(want, I_MAX(max, needed));
}
