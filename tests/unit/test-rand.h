#ifndef TEST_RAND_H
#define TEST_RAND_H

/* Deterministic PRNG (xorshift64*) shared by the unit tests: data, piece
   sizes and fuzz inputs must be the same on every run, or a failure could
   never be reproduced. */
static uint64_t test_rand_state;

static inline void test_rand_seed(uint64_t seed)
{
	test_rand_state = seed == 0 ? 0x9e3779b97f4a7c15ULL : seed;
}

static inline uint64_t test_rand64(void)
{
	uint64_t x = test_rand_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	test_rand_state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

#endif
