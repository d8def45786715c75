#ifndef POP3_POLICY_MAP_H
#define POP3_POLICY_MAP_H

/* How big the policy environment's map may be. Dovecot limits every
   service's address space (vsz_limit, RLIMIT_AS) and a map counts
   whole against it. LMDB unmaps the old map before it makes the new
   one, so a resize that doesn't fit leaves nothing mapped: the sizes
   are checked here first. Pure arithmetic, unit-tested alone. */

#define POP3_POLICY_MAP_UNLIMITED ((uint64_t)-1)

/* The largest map this process can hold: the address space limit
   (as_limit, 0 = none) minus everything else mapped (vsz, the process's
   whole address space, less cur_map, this map's current size) minus a
   margin for heap growth and streams, rounded down to page_size.
   POP3_POLICY_MAP_UNLIMITED without a limit, 0 if nothing fits. */
uint64_t pop3_policy_map_limit(uint64_t as_limit, uint64_t vsz,
			       uint64_t cur_map, uint64_t margin,
			       uint64_t page_size);

/* The size to map: want_size, or as much of it as limit leaves, but at
   least min_size. FALSE if min_size doesn't fit. */
bool pop3_policy_map_size(uint64_t min_size, uint64_t want_size,
			  uint64_t limit, uint64_t *size_r);

/* What a full map of cur bytes wants to grow to: double, capped at max. */
uint64_t pop3_policy_map_grow_want(uint64_t cur, uint64_t max);

/* What to map to follow data another process grew to needed bytes:
   doubling from cur until it covers needed, capped at max, but never
   less than needed (the data must be mapped to be read at all). */
uint64_t pop3_policy_map_follow_want(uint64_t cur, uint64_t needed,
				     uint64_t max);

#endif
