/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "test-common.h"
#include "pop3-policy-map.h"

#define MB (1024ULL * 1024)
#define GB (1024ULL * MB)

static void test_map_limit(void)
{
	test_begin("pop3 policy map: limit from the address space");
	/* no RLIMIT_AS: no limit */
	test_assert(pop3_policy_map_limit(0, 100 * MB, 8 * MB, 32 * MB,
					  4096) == POP3_POLICY_MAP_UNLIMITED);
	/* 256M limit, 80M mapped of which 8M is ours, 32M margin:
	   256 - (80 - 8) - 32 = 152M */
	test_assert(pop3_policy_map_limit(256 * MB, 80 * MB, 8 * MB, 32 * MB,
					  4096) == 152 * MB);
	/* rounded down to whole pages */
	test_assert(pop3_policy_map_limit(256 * MB + 100, 80 * MB, 8 * MB,
					  32 * MB, 4096) == 152 * MB);
	/* the map is replaced, so the bigger it is now, the more room:
	   the same process with a 40M map has the same limit */
	test_assert(pop3_policy_map_limit(256 * MB, 112 * MB, 40 * MB,
					  32 * MB, 4096) == 152 * MB);
	/* nothing mapped yet (an open) */
	test_assert(pop3_policy_map_limit(64 * MB, 10 * MB, 0, 32 * MB,
					  4096) == 22 * MB);
	/* the rest of the process plus the margin already exceed it */
	test_assert(pop3_policy_map_limit(64 * MB, 50 * MB, 8 * MB, 32 * MB,
					  4096) == 0);
	test_assert(pop3_policy_map_limit(64 * MB, 200 * MB, 8 * MB, 0,
					  4096) == 0);
	/* a map bigger than the process's size (can't be, but must not
	   wrap) */
	test_assert(pop3_policy_map_limit(64 * MB, 4 * MB, 8 * MB, 32 * MB,
					  4096) == 32 * MB);
	/* huge values don't overflow */
	test_assert(pop3_policy_map_limit((uint64_t)-1 - 1, 10 * MB, 0,
					  (uint64_t)-1, 4096) == 0);
	test_end();
}

static void test_map_size(void)
{
	uint64_t size;

	test_begin("pop3 policy map: size within the limit");
	test_assert(pop3_policy_map_size(9 * MB, 16 * MB,
					 POP3_POLICY_MAP_UNLIMITED, &size));
	test_assert(size == 16 * MB);
	/* clamped to the limit, still above the minimum */
	test_assert(pop3_policy_map_size(9 * MB, 16 * MB, 12 * MB, &size));
	test_assert(size == 12 * MB);
	/* exactly the minimum fits */
	test_assert(pop3_policy_map_size(12 * MB, 16 * MB, 12 * MB, &size));
	test_assert(size == 12 * MB);
	/* below the minimum: refused, size untouched */
	size = 1;
	test_assert(!pop3_policy_map_size(12 * MB + 4096, 16 * MB, 12 * MB,
					  &size));
	test_assert(size == 1);
	test_assert(!pop3_policy_map_size(0, 16 * MB, 0, &size));
	test_end();
}

static void test_map_grow_follow(void)
{
	test_begin("pop3 policy map: growth and following");
	test_assert(pop3_policy_map_grow_want(8 * MB, 4 * GB) == 16 * MB);
	test_assert(pop3_policy_map_grow_want(3 * GB, 4 * GB) == 4 * GB);
	test_assert(pop3_policy_map_grow_want(4 * GB, 4 * GB) == 4 * GB);

	/* doubling from our size until it covers the data */
	test_assert(pop3_policy_map_follow_want(8 * MB, 20 * MB, 4 * GB) ==
		    32 * MB);
	test_assert(pop3_policy_map_follow_want(8 * MB, 8 * MB, 4 * GB) ==
		    8 * MB);
	/* capped at the maximum... */
	test_assert(pop3_policy_map_follow_want(3 * GB, 3 * GB + 1, 4 * GB) ==
		    4 * GB);
	/* ...but never below the data, which must be mapped to be read */
	test_assert(pop3_policy_map_follow_want(8 * MB, 5 * GB, 4 * GB) ==
		    5 * GB);
	test_assert(pop3_policy_map_follow_want(0, 1 * MB, 4 * GB) == 1 * MB);
	test_end();
}

int main(void)
{
	static void (*const tests[])(void) = {
		test_map_limit,
		test_map_size,
		test_map_grow_follow,
		NULL
	};
	return test_run(tests);
}
