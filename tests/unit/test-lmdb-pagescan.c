/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "unlink-directory.h"
#include "test-common.h"
#include "test-rand.h"
#include "lmdb-pagescan.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <lmdb.h>

/* The test environments are made by liblmdb itself; the damage is put at
   places found with the on-disk layout of 64-bit little-endian hosts. */
#define PAGE_SIZE_EXPECTED 4096
#define PAGEHDRSZ 16
#define META_FREE_ROOT_OFS (PAGEHDRSZ + 24 + 40)
#define META_MAIN_ROOT_OFS (PAGEHDRSZ + 24 + 48 + 40)
#define META_LAST_PG_OFS (PAGEHDRSZ + 24 + 96)
#define META_TXNID_OFS (PAGEHDRSZ + 24 + 96 + 8)

#define DBI_COUNT 6
#define MAX_RECORDS 20001
enum { D_META, D_BODIES, D_CHUNKS, D_LINKS, D_MAILBOXES, D_GC };
static const char *const dbi_names[DBI_COUNT] = {
	"meta", "bodies", "chunks", "links", "mailboxes", "gc"
};
static const unsigned int key_sizes[DBI_COUNT] = { 8, 8, 12, 20, 16, 17 };

/* one environment's contents: records (d, i) for i < counts[d]; the last
   transaction adds the "final" meta record (d = D_META, i = counts[0]) */
struct test_env {
	unsigned int counts[DBI_COUNT];
	char dir[64];
	/* data.mdb as the last transaction left it */
	unsigned char *data;
	size_t size;
};

struct test_result {
	uint8_t tree[DBI_COUNT][MAX_RECORDS], orphan[DBI_COUNT][MAX_RECORDS];
	uint64_t leaf[DBI_COUNT][MAX_RECORDS], overflow[DBI_COUNT][MAX_RECORDS];
	/* records that are none of ours, or whose value is not the current
	   one (damaged or stale), or TREE records under the wrong DBI */
	unsigned int foreign, stale, wrong_dbi;
	unsigned int records, stop_after;
	uint64_t byte_sum;
	struct lmdb_pagescan_stats stats;
	/* stats.meta_fallback_reason, which lives as long as the scan */
	char fallback_reason[256];
	unsigned int damage_count;
	struct lmdb_pagescan_damage damages[64];
	int ret, open_ret;
};

static struct test_env big_env, small_env;
static struct test_result result;
static const struct test_env *result_env;
static char scan_path[128];

/* Records */

static bool record_deleted(unsigned int d, unsigned int i)
{
	return (d == D_LINKS && i % 5 == 2) || (d == D_CHUNKS && i % 7 == 3);
}

/* bodies rewritten by the third transaction */
static unsigned int record_gen(unsigned int d, unsigned int i)
{
	return d == D_BODIES && i % 3 == 0 ? 1 : 0;
}

static size_t value_size(unsigned int d, unsigned int i, unsigned int gen)
{
	switch (d) {
	case D_META:
		return 20 + i % 30;
	case D_BODIES:
		return 40 + gen * 3;
	case D_CHUNKS:
		/* overflow values of 1-3 pages, some filling one exactly */
		return i % 10 == 0 ? PAGE_SIZE_EXPECTED - PAGEHDRSZ :
			2100 + (i * 977) % 8000;
	case D_LINKS:
		return 30 + (i * 13) % 50;
	case D_MAILBOXES:
		return 200 + (i * 131) % 2500;
	default:
		return 0;
	}
}

static unsigned char value_byte(unsigned int d, unsigned int i,
				unsigned int gen, size_t j)
{
	uint32_t x = d * 1000003U + i * 7919U + gen * 104729U + j * 2654435761U;

	x ^= x >> 13;
	x *= 0x5bd1e995U;
	return (x ^ (x >> 15)) & 0xff;
}

static void record_key(unsigned int d, unsigned int i, unsigned char *key)
{
	unsigned int j;

	key[0] = d;
	key[1] = i >> 24; key[2] = i >> 16; key[3] = i >> 8; key[4] = i;
	for (j = 5; j < key_sizes[d]; j++)
		key[j] = (i * 31 + j * 7 + d) & 0xff;
}

static void record_value(unsigned int d, unsigned int i, unsigned int gen,
			 unsigned char *value)
{
	size_t j, size = value_size(d, i, gen);

	for (j = 0; j < size; j++)
		value[j] = value_byte(d, i, gen, j);
}

/* Environment creation with liblmdb */

static void test_lmdb_check(int ret, const char *func)
{
	if (ret != 0)
		i_fatal("%s failed: %s", func, mdb_strerror(ret));
}

static void
test_env_put(MDB_txn *txn, MDB_dbi *dbis, unsigned int d, unsigned int i,
	     unsigned int gen)
{
	unsigned char key_buf[32], value_buf[16384];
	MDB_val key, value;

	record_key(d, i, key_buf);
	record_value(d, i, gen, value_buf);
	key.mv_data = key_buf;
	key.mv_size = key_sizes[d];
	value.mv_data = value_buf;
	value.mv_size = value_size(d, i, gen);
	test_lmdb_check(mdb_put(txn, dbis[d], &key, &value, 0), "mdb_put()");
}

static void test_env_file_read(struct test_env *env)
{
	const char *path = t_strdup_printf("%s/data.mdb", env->dir);
	struct stat st;
	int fd;

	if ((fd = open(path, O_RDONLY)) < 0 || fstat(fd, &st) < 0)
		i_fatal("open(%s) failed: %m", path);
	env->size = st.st_size;
	env->data = i_malloc(env->size);
	if (pread(fd, env->data, env->size, 0) != (ssize_t)env->size)
		i_fatal("read(%s) failed: %m", path);
	i_close_fd(&fd);
}

/* Four transactions: insert everything, delete some links and chunks
   (free pages with old contents), rewrite a third of the bodies, add the
   "final" record (only in the newest meta page's snapshot). */
static void test_env_create(struct test_env *env)
{
	MDB_env *menv;
	MDB_txn *txn;
	MDB_dbi dbis[DBI_COUNT];
	MDB_val key;
	unsigned char key_buf[32];
	unsigned int d, i;

	i_strocpy(env->dir, "/tmp/test-lmdb-pagescan.XXXXXX", sizeof(env->dir));
	if (mkdtemp(env->dir) == NULL)
		i_fatal("mkdtemp() failed: %m");
	test_lmdb_check(mdb_env_create(&menv), "mdb_env_create()");
	test_lmdb_check(mdb_env_set_maxdbs(menv, 8), "mdb_env_set_maxdbs()");
	test_lmdb_check(mdb_env_set_mapsize(menv, 256 * 1024 * 1024),
			"mdb_env_set_mapsize()");
	test_lmdb_check(mdb_env_open(menv, env->dir, MDB_NOSYNC, 0600),
			"mdb_env_open()");

	test_lmdb_check(mdb_txn_begin(menv, NULL, 0, &txn), "mdb_txn_begin()");
	for (d = 0; d < DBI_COUNT; d++) {
		test_lmdb_check(mdb_dbi_open(txn, dbi_names[d], MDB_CREATE,
					     &dbis[d]), "mdb_dbi_open()");
		for (i = 0; i < env->counts[d]; i++)
			test_env_put(txn, dbis, d, i, 0);
	}
	test_lmdb_check(mdb_txn_commit(txn), "mdb_txn_commit()");

	test_lmdb_check(mdb_txn_begin(menv, NULL, 0, &txn), "mdb_txn_begin()");
	for (d = 0; d < DBI_COUNT; d++) {
		for (i = 0; i < env->counts[d]; i++) {
			if (!record_deleted(d, i))
				continue;
			record_key(d, i, key_buf);
			key.mv_data = key_buf;
			key.mv_size = key_sizes[d];
			test_lmdb_check(mdb_del(txn, dbis[d], &key, NULL),
					"mdb_del()");
		}
	}
	test_lmdb_check(mdb_txn_commit(txn), "mdb_txn_commit()");

	test_lmdb_check(mdb_txn_begin(menv, NULL, 0, &txn), "mdb_txn_begin()");
	for (i = 0; i < env->counts[D_BODIES]; i++) {
		if (record_gen(D_BODIES, i) != 0)
			test_env_put(txn, dbis, D_BODIES, i, 1);
	}
	test_lmdb_check(mdb_txn_commit(txn), "mdb_txn_commit()");

	test_lmdb_check(mdb_txn_begin(menv, NULL, 0, &txn), "mdb_txn_begin()");
	test_env_put(txn, dbis, D_META, env->counts[D_META], 0);
	test_lmdb_check(mdb_txn_commit(txn), "mdb_txn_commit()");
	mdb_env_close(menv);
	test_env_file_read(env);
}

static void test_env_destroy(struct test_env *env)
{
	const char *error;

	if (unlink_directory(env->dir, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0)
		i_error("unlink_directory(%s) failed: %s", env->dir, error);
	i_free(env->data);
}

/* Scanning */

static int test_scan_callback(const struct lmdb_pagescan_record *rec,
			      struct test_result *res)
{
	static unsigned char expected[16384];
	const struct test_env *env = result_env;
	unsigned int d, i, gen;

	size_t j;

	if (res->stop_after != 0 && res->records == res->stop_after)
		return -1;
	res->records++;
	/* every byte, so that valgrind checks the whole ranges */
	for (j = 0; j < rec->key_size; j++)
		res->byte_sum += rec->key[j];
	for (j = 0; j < rec->value_size; j++)
		res->byte_sum += rec->value[j];
	if (rec->key_size < 5 || rec->key[0] >= DBI_COUNT) {
		res->foreign++;
		return 0;
	}
	d = rec->key[0];
	i = ((unsigned int)rec->key[1] << 24) | (rec->key[2] << 16) |
		(rec->key[3] << 8) | rec->key[4];
	if (i > env->counts[d] || (i == env->counts[d] && d != D_META) ||
	    rec->key_size != key_sizes[d]) {
		res->foreign++;
		return 0;
	}
	record_key(d, i, expected);
	if (memcmp(expected, rec->key, rec->key_size) != 0) {
		res->foreign++;
		return 0;
	}
	gen = record_gen(d, i);
	record_value(d, i, gen, expected);
	if (record_deleted(d, i) || rec->value_size != value_size(d, i, gen) ||
	    memcmp(expected, rec->value, rec->value_size) != 0)
		res->stale++;
	if (rec->source == LMDB_PAGESCAN_SOURCE_TREE) {
		if (strcmp(rec->dbi_name, dbi_names[d]) != 0)
			res->wrong_dbi++;
		res->tree[d][i]++;
	} else {
		if (rec->dbi_name != NULL)
			res->wrong_dbi++;
		res->orphan[d][i]++;
	}
	res->leaf[d][i] = rec->pgno;
	res->overflow[d][i] = rec->overflow_pgno;
	return 0;
}

/* Rewritten in place: ext4 flushes a file truncated to 0 at close() */
static void test_file_write(const unsigned char *data, size_t size)
{
	int fd = open(scan_path, O_WRONLY | O_CREAT, 0600);

	if (fd < 0 ||
	    (size > 0 && pwrite(fd, data, size, 0) != (ssize_t)size) ||
	    ftruncate(fd, size) < 0)
		i_fatal("write(%s) failed: %m", scan_path);
	i_close_fd(&fd);
}

static void test_scan_file(const struct test_env *env)
{
	struct lmdb_pagescan *scan;
	const struct lmdb_pagescan_damage *damages;
	const char *error;

	memset(&result, 0, sizeof(result));
	result_env = env;
	/* a scan that loops is killed (a scan takes well under a second,
	   under valgrind a few) */
	alarm(120);
	result.open_ret = lmdb_pagescan_open(scan_path, &scan, &error);
	if (result.open_ret < 0) {
		alarm(0);
		return;
	}
	result.ret = lmdb_pagescan_run(scan, test_scan_callback, &result,
				       &error);
	alarm(0);
	result.stats = *lmdb_pagescan_get_stats(scan);
	if (result.stats.meta_fallback_reason != NULL) {
		i_strocpy(result.fallback_reason,
			  result.stats.meta_fallback_reason,
			  sizeof(result.fallback_reason));
		result.stats.meta_fallback_reason = result.fallback_reason;
	}
	damages = lmdb_pagescan_get_damages(scan, &result.damage_count);
	memcpy(result.damages, damages, sizeof(*damages) *
	       I_MIN(result.damage_count, N_ELEMENTS(result.damages)));
	lmdb_pagescan_close(&scan);
}

/* Scan env's data with len bytes at ofs replaced (garbage when data is
   NULL). */
static void
test_scan_damaged(const struct test_env *env, size_t ofs,
		  const void *data, size_t len)
{
	unsigned char *copy = i_malloc(env->size);
	size_t i;

	memcpy(copy, env->data, env->size);
	i_assert(ofs + len <= env->size);
	test_rand_seed(ofs + 1);
	for (i = 0; i < len; i++) {
		copy[ofs + i] = data != NULL ? ((const uint8_t *)data)[i] :
			test_rand64() >> 56;
	}
	test_file_write(copy, env->size);
	i_free(copy);
	test_scan_file(env);
}

static bool test_damage_found(uint64_t pgno)
{
	unsigned int i, count;

	count = I_MIN(result.damage_count, N_ELEMENTS(result.damages));
	for (i = 0; i < count; i++) {
		if (result.damages[i].pgno == pgno)
			return TRUE;
	}
	return FALSE;
}

static bool test_damage_reason_found(const char *reason)
{
	unsigned int i, count;

	count = I_MIN(result.damage_count, N_ELEMENTS(result.damages));
	for (i = 0; i < count; i++) {
		if (strcmp(result.damages[i].reason, reason) == 0)
			return TRUE;
	}
	return FALSE;
}

static bool test_in_newest(const struct test_env *env, unsigned int d,
			   unsigned int i)
{
	return !record_deleted(d, i) &&
		(i < env->counts[d] || d == D_META);
}

/* Every current record exactly once (as TREE, or as ORPHAN where
   orphan_ok says so), except those missing() says are lost; no foreign or
   stale ones. Returns the number of ORPHAN records. */
static unsigned int
test_check_records(const struct test_env *env, bool with_final,
		   bool (*orphan_ok)(unsigned int d, unsigned int i),
		   bool (*missing)(unsigned int d, unsigned int i))
{
	unsigned int d, i, orphans = 0, errors = 0;

	test_assert(result.open_ret == 0 && result.ret == 0);
	test_assert(result.foreign == 0);
	test_assert(result.stale == 0);
	test_assert(result.wrong_dbi == 0);
	for (d = 0; d < DBI_COUNT; d++) {
		for (i = 0; i <= env->counts[d]; i++) {
			unsigned int tree = result.tree[d][i];
			unsigned int orphan = result.orphan[d][i];
			bool present = test_in_newest(env, d, i) &&
				(i < env->counts[d] || with_final);

			orphans += orphan;
			if (!present || (missing != NULL && missing(d, i))) {
				if (tree + orphan != 0)
					errors++;
			} else if (orphan_ok != NULL && orphan_ok(d, i)) {
				if (tree + orphan != 1)
					errors++;
			} else if (tree != 1 || orphan != 0) {
				errors++;
			}
		}
	}
	test_assert_ucmp(errors, ==, 0);
	return orphans;
}

/* the same, all of them TREE */
static void
test_check_tree_records(const struct test_env *env, bool with_final,
			bool (*missing)(unsigned int d, unsigned int i))
{
	unsigned int orphans;

	orphans = test_check_records(env, with_final, NULL, missing);
	test_assert_ucmp(orphans, ==, 0);
}

/* Page accounting: every page in exactly one class */
static void test_check_page_stats(void)
{
	const struct lmdb_pagescan_stats *st = &result.stats;

	test_assert_ucmp(st->pages_meta + st->pages_tree + st->pages_overflow +
			 st->pages_free + st->orphan_leaves +
			 st->orphan_branches + st->orphan_overflow_pages +
			 st->pages_unreadable, ==,
			 st->pages_total);
	test_assert_ucmp(st->records_tree + st->records_orphan, ==,
			 result.records);
}

static uint64_t test_page_word(const struct test_env *env, uint64_t pgno,
			       size_t ofs)
{
	uint64_t value;

	memcpy(&value, env->data + pgno * PAGE_SIZE_EXPECTED + ofs,
	       sizeof(value));
	return value;
}

/* child idx of a branch page */
static uint64_t test_branch_child(const struct test_env *env, uint64_t pgno,
				  unsigned int idx)
{
	const unsigned char *page = env->data + pgno * PAGE_SIZE_EXPECTED;
	uint16_t ofs, lo, hi, top;

	memcpy(&ofs, page + PAGEHDRSZ + idx * 2, 2);
	memcpy(&lo, page + ofs, 2);
	memcpy(&hi, page + ofs + 2, 2);
	memcpy(&top, page + ofs + 4, 2);
	return lo | ((uint64_t)hi << 16) | ((uint64_t)top << 32);
}

static const struct lmdb_pagescan_dbi *
test_dbi(const struct test_env *env, const char *name)
{
	static struct lmdb_pagescan_dbi dbi;
	const struct lmdb_pagescan_dbi *dbis;
	struct lmdb_pagescan *scan;
	const char *error;
	unsigned int i, count;

	i_zero(&dbi);
	test_file_write(env->data, env->size);
	if (lmdb_pagescan_open(scan_path, &scan, &error) < 0)
		i_fatal("%s", error);
	result_env = env;
	memset(&result, 0, sizeof(result));
	(void)lmdb_pagescan_run(scan, test_scan_callback, &result, &error);
	dbis = lmdb_pagescan_get_dbis(scan, &count);
	for (i = 0; i < count; i++) {
		if (strcmp(dbis[i].name, name) == 0)
			dbi = dbis[i];
	}
	lmdb_pagescan_close(&scan);
	i_assert(dbi.name != NULL);
	return &dbi;
}

static unsigned int clean_meta_pgno;
static uint64_t clean_txnid, clean_pages_free;
static uint64_t clean_leaf[DBI_COUNT][MAX_RECORDS];
static uint64_t clean_overflow[DBI_COUNT][MAX_RECORDS];

static void test_pagescan_clean(void)
{
	const struct lmdb_pagescan_dbi *dbis;
	struct lmdb_pagescan *scan;
	const char *error;
	unsigned int d, count, i;

	test_begin("pagescan: undamaged environment");
	test_file_write(big_env.data, big_env.size);
	test_scan_file(&big_env);
	test_check_tree_records(&big_env, TRUE, NULL);
	test_assert(result.stats.page_size == PAGE_SIZE_EXPECTED);
	test_assert(result.stats.meta_fallback_reason == NULL);
	test_assert_ucmp(result.damage_count, ==, 0);
	test_assert_ucmp(result.stats.damage_count, ==, 0);
	/* every page is in a tree, an overflow run or the free list */
	test_assert_ucmp(result.stats.pages_meta, ==, 2);
	test_assert_ucmp(result.stats.pages_tree + result.stats.pages_overflow +
			 result.stats.pages_free + 2, ==,
			 result.stats.pages_total);
	test_assert(result.stats.pages_free > 0);
	test_assert(result.stats.pages_overflow > 0);
	test_assert_ucmp(result.stats.pages_total, ==,
			 big_env.size / PAGE_SIZE_EXPECTED);
	test_check_page_stats();
	clean_meta_pgno = result.stats.meta_pgno;
	clean_txnid = result.stats.txnid;
	clean_pages_free = result.stats.pages_free;
	memcpy(clean_leaf, result.leaf, sizeof(clean_leaf));
	memcpy(clean_overflow, result.overflow, sizeof(clean_overflow));

	/* the named DBIs with their record counts; multi-level trees */
	if (lmdb_pagescan_open(scan_path, &scan, &error) < 0)
		i_fatal("%s", error);
	/* a second run gives the same */
	memset(&result, 0, sizeof(result));
	test_assert(lmdb_pagescan_run(scan, test_scan_callback, &result,
				      &error) == 0);
	test_assert_ucmp(lmdb_pagescan_get_stats(scan)->records_tree, ==,
			 result.records);
	dbis = lmdb_pagescan_get_dbis(scan, &count);
	test_assert_ucmp(count, ==, DBI_COUNT);
	for (i = 0; i < count && i < DBI_COUNT; i++) {
		for (d = 0; d < DBI_COUNT; d++) {
			if (strcmp(dbis[i].name, dbi_names[d]) == 0)
				break;
		}
		test_assert_idx(d < DBI_COUNT, i);
		if (d < DBI_COUNT)
			test_assert_idx(dbis[i].records == dbis[i].entries, i);
		if (d == D_LINKS)
			test_assert(dbis[i].depth >= 3);
		if (d == D_CHUNKS)
			test_assert(dbis[i].depth >= 2);
	}
	lmdb_pagescan_close(&scan);
	test_end();
}

static bool test_orphan_links(unsigned int d, unsigned int i)
{
	return d == D_LINKS;
}

static bool test_orphan_chunks(unsigned int d, unsigned int i)
{
	return d == D_CHUNKS;
}

static void test_pagescan_branch_damage(void)
{
	const struct lmdb_pagescan_dbi *dbi;
	uint64_t branch;
	unsigned int d, i, orphans, links_orphans = 0;

	test_begin("pagescan: damaged branch page");
	/* a mid-level branch of links: its leaves come back as ORPHAN */
	dbi = test_dbi(&big_env, "links");
	branch = test_branch_child(&big_env, dbi->root_pgno, 1);
	test_scan_damaged(&big_env, branch * PAGE_SIZE_EXPECTED, NULL,
			  PAGE_SIZE_EXPECTED);
	orphans = test_check_records(&big_env, TRUE, test_orphan_links, NULL);
	test_assert(orphans > 0);
	for (d = 0; d < DBI_COUNT; d++) {
		for (i = 0; i < big_env.counts[d]; i++) {
			if (d == D_LINKS)
				links_orphans += result.orphan[d][i];
		}
	}
	test_assert_ucmp(links_orphans, ==, orphans);
	/* not all of them: only the subtree below the damaged page */
	test_assert(result.stats.records_tree > 0 &&
		    orphans < big_env.counts[D_LINKS] / 2);
	test_assert(test_damage_found(branch));
	test_assert(result.stats.orphan_leaves > 0);
	test_check_page_stats();

	/* the root of chunks: all its values come back whole from their
	   overflow runs */
	dbi = test_dbi(&big_env, "chunks");
	test_scan_damaged(&big_env, dbi->root_pgno * PAGE_SIZE_EXPECTED, NULL,
			  PAGE_SIZE_EXPECTED);
	orphans = test_check_records(&big_env, TRUE, test_orphan_chunks, NULL);
	test_assert_ucmp(orphans, ==, result.stats.records_orphan);
	for (i = 0; i < big_env.counts[D_CHUNKS]; i++) {
		if (!record_deleted(D_CHUNKS, i))
			test_assert_idx(result.orphan[D_CHUNKS][i] == 1, i);
	}
	test_assert(result.stats.orphan_overflow_pages > 0);
	test_check_page_stats();
	test_end();
}

static uint64_t damaged_leaf;

static bool test_missing_leaf(unsigned int d, unsigned int i)
{
	return clean_leaf[d][i] == damaged_leaf;
}

static bool test_orphan_under_leaf(unsigned int d, unsigned int i)
{
	return clean_leaf[d][i] == damaged_leaf;
}

static uint64_t damaged_overflow;

static bool test_missing_overflow(unsigned int d, unsigned int i)
{
	return clean_overflow[d][i] == damaged_overflow;
}

static void test_pagescan_leaf_damage(void)
{
	unsigned int d, i, lost = 0;

	test_begin("pagescan: damaged leaf page");
	damaged_leaf = clean_leaf[D_LINKS][big_env.counts[D_LINKS] / 2];
	test_scan_damaged(&big_env, damaged_leaf * PAGE_SIZE_EXPECTED, NULL,
			  PAGE_SIZE_EXPECTED);
	test_check_tree_records(&big_env, TRUE, test_missing_leaf);
	for (d = 0; d < DBI_COUNT; d++) {
		for (i = 0; i < big_env.counts[d]; i++)
			lost += test_in_newest(&big_env, d, i) &&
				test_missing_leaf(d, i) ? 1 : 0;
	}
	test_assert(lost > 10);
	test_assert(test_damage_found(damaged_leaf));
	test_check_page_stats();
	test_end();
}

static void test_pagescan_overflow_damage(void)
{
	unsigned int i;

	test_begin("pagescan: damaged overflow page header");
	for (i = 1; i < big_env.counts[D_CHUNKS]; i++) {
		if (!record_deleted(D_CHUNKS, i) &&
		    value_size(D_CHUNKS, i, 0) > 2 * PAGE_SIZE_EXPECTED)
			break;
	}
	damaged_overflow = clean_overflow[D_CHUNKS][i];
	test_assert(damaged_overflow != LMDB_PAGESCAN_NO_PGNO);
	test_scan_damaged(&big_env, damaged_overflow * PAGE_SIZE_EXPECTED,
			  NULL, PAGEHDRSZ);
	test_check_tree_records(&big_env, TRUE, test_missing_overflow);
	test_assert(result.tree[D_CHUNKS][i] == 0);
	test_assert_ucmp(result.stats.records_damaged, ==, 1);
	test_assert(test_damage_found(damaged_overflow));
	/* the rest of the run is raw data: unreadable, never records */
	test_assert(result.stats.pages_unreadable >= 2);
	test_check_page_stats();
	test_end();
}

static void test_pagescan_meta_damage(void)
{
	uint64_t main_root;

	test_begin("pagescan: damaged meta page");
	/* the newest meta: the previous transaction is used, which lacks
	   only the final record */
	test_scan_damaged(&big_env, clean_meta_pgno * PAGE_SIZE_EXPECTED +
			  PAGEHDRSZ, NULL, 8);
	test_check_tree_records(&big_env, FALSE, NULL);
	test_assert_ucmp(result.stats.meta_pgno, ==, 1 - clean_meta_pgno);
	test_assert_ucmp(result.stats.txnid, ==, clean_txnid - 1);
	test_assert(result.stats.meta_fallback_reason != NULL);

	/* the newest meta's main DB root is damaged: the same */
	main_root = test_page_word(&big_env, clean_meta_pgno,
				   META_MAIN_ROOT_OFS);
	test_scan_damaged(&big_env, main_root * PAGE_SIZE_EXPECTED, NULL,
			  PAGE_SIZE_EXPECTED);
	test_check_tree_records(&big_env, FALSE, NULL);
	test_assert_ucmp(result.stats.meta_pgno, ==, 1 - clean_meta_pgno);
	test_assert(strstr(result.fallback_reason, "main DB") != NULL);

	/* the older meta: nothing changes */
	test_scan_damaged(&big_env, (1 - clean_meta_pgno) * PAGE_SIZE_EXPECTED +
			  PAGEHDRSZ, NULL, 8);
	test_check_tree_records(&big_env, TRUE, NULL);
	test_assert(result.stats.meta_fallback_reason != NULL);
	test_assert_ucmp(result.stats.meta_pgno, ==, clean_meta_pgno);

	/* the older meta's txnid is the highest, but of the wrong parity
	   (transaction N writes meta page N % 2): invalid */
	{
		uint64_t txnid = 1000 + clean_meta_pgno;
		test_scan_damaged(&big_env, (1 - clean_meta_pgno) *
				  PAGE_SIZE_EXPECTED + META_TXNID_OFS,
				  &txnid, sizeof(txnid));
		test_check_tree_records(&big_env, TRUE, NULL);
		test_assert_ucmp(result.stats.meta_pgno, ==, clean_meta_pgno);
	}
	/* the newest meta's last page is below the older one's: it is not
	   used (pages are only added at the end of the file) */
	{
		uint64_t last_pg = 10;
		test_scan_damaged(&big_env, clean_meta_pgno *
				  PAGE_SIZE_EXPECTED + META_LAST_PG_OFS,
				  &last_pg, sizeof(last_pg));
		test_check_tree_records(&big_env, FALSE, NULL);
		test_assert_ucmp(result.stats.meta_pgno, ==,
				 1 - clean_meta_pgno);
	}

	/* both: no scan */
	{
		unsigned char *copy = i_malloc(big_env.size);
		memcpy(copy, big_env.data, big_env.size);
		memset(copy + PAGEHDRSZ, 0xff, 8);
		memset(copy + PAGE_SIZE_EXPECTED + PAGEHDRSZ, 0xff, 8);
		test_file_write(copy, big_env.size);
		i_free(copy);
		test_scan_file(&big_env);
		test_assert(result.open_ret < 0);
	}
	test_end();
}

static void test_pagescan_free_list_damage(void)
{
	uint64_t free_root;

	test_begin("pagescan: damaged free list");
	/* the freed pages are scanned: their stale records come back only
	   as ORPHAN, never as TREE */
	free_root = test_page_word(&big_env, clean_meta_pgno,
				   META_FREE_ROOT_OFS);
	test_scan_damaged(&big_env, free_root * PAGE_SIZE_EXPECTED, NULL,
			  PAGE_SIZE_EXPECTED);
	test_assert(result.open_ret == 0 && result.ret == 0);
	test_assert_ucmp(result.stats.pages_free, ==, 0);
	test_assert(result.stats.orphan_leaves > 0);
	test_assert(result.stale > 0);
	test_assert_ucmp(result.stats.records_tree, ==,
			 result.records - result.stats.records_orphan);
	{
		unsigned int d, i, errors = 0;
		for (d = 0; d < DBI_COUNT; d++) {
			for (i = 0; i <= big_env.counts[d]; i++) {
				if (result.tree[d][i] !=
				    (test_in_newest(&big_env, d, i) ? 1 : 0))
					errors++;
			}
		}
		test_assert_ucmp(errors, ==, 0);
	}
	test_check_page_stats();

	/* one entry of a list out of range: only that entry is lost */
	{
		const unsigned char *page =
			big_env.data + free_root * PAGE_SIZE_EXPECTED;
		uint16_t flags, ofs, ksize, nflags;
		uint64_t run;
		size_t entry_ofs;
		unsigned char ff = 0xff;

		memcpy(&flags, page + 10, 2);
		test_assert(flags == 2);
		memcpy(&ofs, page + PAGEHDRSZ, 2);
		memcpy(&nflags, page + ofs + 4, 2);
		memcpy(&ksize, page + ofs + 6, 2);
		if ((nflags & 1) != 0) {
			memcpy(&run, page + ofs + 8 + ksize, 8);
			entry_ofs = run * PAGE_SIZE_EXPECTED + PAGEHDRSZ + 8;
		} else {
			entry_ofs = free_root * PAGE_SIZE_EXPECTED +
				ofs + 8 + ksize + 8;
		}
		test_scan_damaged(&big_env, entry_ofs + 7, &ff, 1);
		test_assert_ucmp(result.stats.pages_free, ==,
				 clean_pages_free - 1);
		test_assert(test_damage_reason_found("damaged free page list"));
		test_check_page_stats();
	}
	test_end();
}

/* A branch pointer of bodies (walked first) redirected to a leaf of links:
   the keys are outside the pointer's range, so bodies rejects the page and
   links still reads it. The bodies leaf it pointed to becomes an orphan. */
static void test_pagescan_misdirected_pointer(void)
{
	const struct lmdb_pagescan_dbi *dbi;
	const unsigned char *root;
	uint64_t root_pgno, old_child, links_leaf;
	uint16_t ofs, pgno16[3];
	unsigned int i;

	test_begin("pagescan: branch pointer to another DBI's leaf");
	dbi = test_dbi(&big_env, "bodies");
	test_assert(dbi->depth == 2);
	root_pgno = dbi->root_pgno;
	old_child = test_branch_child(&big_env, root_pgno, 1);
	links_leaf = clean_leaf[D_LINKS][100];
	root = big_env.data + root_pgno * PAGE_SIZE_EXPECTED;
	memcpy(&ofs, root + PAGEHDRSZ + 2, 2);
	pgno16[0] = links_leaf & 0xffff;
	pgno16[1] = (links_leaf >> 16) & 0xffff;
	pgno16[2] = links_leaf >> 32;
	test_scan_damaged(&big_env, root_pgno * PAGE_SIZE_EXPECTED + ofs,
			  pgno16, sizeof(pgno16));
	damaged_leaf = old_child;
	(void)test_check_records(&big_env, TRUE, test_orphan_under_leaf, NULL);
	for (i = 0; i < big_env.counts[D_BODIES]; i++) {
		if (clean_leaf[D_BODIES][i] == old_child)
			test_assert_idx(result.orphan[D_BODIES][i] == 1, i);
	}
	test_assert(result.stats.records_orphan > 0);
	test_assert(test_damage_reason_found(
		"keys outside the parent's range"));
	test_check_page_stats();
	test_end();
}

/* A value's overflow page number pointing to the run of a deleted value:
   the run's pages are free, so the stale value is not returned. */
static void test_pagescan_stale_overflow(void)
{
	const unsigned char *page;
	uint64_t leaf, stale_run = LMDB_PAGESCAN_NO_PGNO;
	uint16_t ofs, ksize;
	unsigned int i, j;

	test_begin("pagescan: overflow pointer to a freed run");
	/* the free list is damaged: deleted values come back as orphans,
	   telling where their runs are */
	test_scan_damaged(&big_env, test_page_word(&big_env, clean_meta_pgno,
						   META_FREE_ROOT_OFS) *
			  PAGE_SIZE_EXPECTED, NULL, PAGE_SIZE_EXPECTED);
	for (i = 0; i < big_env.counts[D_CHUNKS]; i++) {
		if (record_deleted(D_CHUNKS, i) &&
		    result.orphan[D_CHUNKS][i] > 0) {
			stale_run = result.overflow[D_CHUNKS][i];
			break;
		}
	}
	test_assert(stale_run != LMDB_PAGESCAN_NO_PGNO);

	/* chunk 1's node gets that run */
	leaf = clean_leaf[D_CHUNKS][1];
	page = big_env.data + leaf * PAGE_SIZE_EXPECTED;
	for (j = 0; j < 400; j++) {
		memcpy(&ofs, page + PAGEHDRSZ + j * 2, 2);
		if (page[ofs + 8] == D_CHUNKS && page[ofs + 12] == 1)
			break;
	}
	memcpy(&ksize, page + ofs + 6, 2);
	test_scan_damaged(&big_env, leaf * PAGE_SIZE_EXPECTED + ofs + 8 + ksize,
			  &stale_run, sizeof(stale_run));
	damaged_overflow = clean_overflow[D_CHUNKS][1];
	test_check_tree_records(&big_env, TRUE, test_missing_overflow);
	test_assert(test_damage_found(stale_run));
	test_end();
}

static void test_pagescan_cycle(void)
{
	const struct lmdb_pagescan_dbi *dbi;
	const unsigned char *root;
	unsigned char *copy;
	uint64_t pgno;
	uint16_t ofs, lo, hi, lower = PAGEHDRSZ + 2;

	test_begin("pagescan: branch page pointing to itself");
	dbi = test_dbi(&big_env, "links");
	pgno = dbi->root_pgno;
	root = big_env.data + pgno * PAGE_SIZE_EXPECTED;
	memcpy(&ofs, root + PAGEHDRSZ, 2);
	lo = pgno & 0xffff;
	hi = pgno >> 16;
	copy = i_malloc(big_env.size);
	memcpy(copy, big_env.data, big_env.size);
	memcpy(copy + pgno * PAGE_SIZE_EXPECTED + ofs, &lo, 2);
	memcpy(copy + pgno * PAGE_SIZE_EXPECTED + ofs + 2, &hi, 2);

	/* links' root's first child is the root (its keys would also be
	   outside the child's range) */
	test_file_write(copy, big_env.size);
	test_scan_file(&big_env);
	(void)test_check_records(&big_env, TRUE, test_orphan_links, NULL);
	test_assert(result.stats.records_orphan > 0);
	test_assert(test_damage_reason_found("page reached twice"));
	test_check_page_stats();

	/* and its only child: a page without keys, which has no range to
	   fail (the depth limit would end the recursion) */
	memcpy(copy + pgno * PAGE_SIZE_EXPECTED + 12, &lower, 2);
	test_file_write(copy, big_env.size);
	test_scan_file(&big_env);
	(void)test_check_records(&big_env, TRUE, test_orphan_links, NULL);
	test_assert(result.stats.records_orphan > 0);
	test_assert(test_damage_reason_found("page reached twice"));
	test_check_page_stats();
	i_free(copy);
	test_end();
}

static bool test_orphan_bodies_meta(unsigned int d, unsigned int i)
{
	return d == D_BODIES || d == D_META;
}

static void test_pagescan_short_dbi_record(void)
{
	static const unsigned char node[] = {
		/* size 8, F_SUBDATA, key size 4, "abcd", 8 data bytes */
		8, 0, 0, 0, 2, 0, 4, 0, 'a', 'b', 'c', 'd',
		0, 0, 0, 0, 0, 0, 0, 0
	};
	uint16_t ptr = PAGE_SIZE_EXPECTED - sizeof(node);
	unsigned char *copy = i_malloc(big_env.size);
	uint64_t main_root;
	unsigned int orphans;

	test_begin("pagescan: named DBI record too short for an MDB_db");
	/* the main DB's first node ("bodies") replaced by a named DBI record
	   whose 8 data bytes end the page: its MDB_db would be read past
	   the page. It overwrites the end of the record stored last in the
	   page ("meta", inserted first). */
	main_root = test_page_word(&big_env, clean_meta_pgno,
				   META_MAIN_ROOT_OFS);
	memcpy(copy, big_env.data, big_env.size);
	memcpy(copy + (main_root + 1) * PAGE_SIZE_EXPECTED - sizeof(node),
	       node, sizeof(node));
	memcpy(copy + main_root * PAGE_SIZE_EXPECTED + PAGEHDRSZ, &ptr, 2);
	test_file_write(copy, big_env.size);
	i_free(copy);
	test_scan_file(&big_env);
	/* the two DBIs are lost: their leaves are orphans */
	test_assert(result.open_ret == 0 && result.ret == 0);
	test_assert(test_damage_reason_found("invalid named DBI record"));
	orphans = test_check_records(&big_env, TRUE, test_orphan_bodies_meta,
				     NULL);
	test_assert(orphans > 0);
	test_end();
}

static void test_pagescan_truncated(void)
{
	unsigned int d, i, errors = 0;
	size_t size = big_env.size * 6 / 10 + 100;

	test_begin("pagescan: truncated, empty and zero files, a directory");
	test_file_write(big_env.data, size);
	test_scan_file(&big_env);
	test_assert(result.open_ret == 0 && result.ret == 0);
	test_assert(result.foreign == 0 && result.stale == 0 &&
		    result.wrong_dbi == 0);
	test_assert_ucmp(result.stats.pages_total, ==,
			 size / PAGE_SIZE_EXPECTED);
	test_assert_ucmp(result.stats.pages_missing, >, 0);
	test_assert(result.stats.damage_count > 0);
	test_assert(result.records > 0 &&
		    result.records < big_env.counts[D_LINKS]);
	for (d = 0; d < DBI_COUNT; d++) {
		for (i = 0; i <= big_env.counts[d]; i++) {
			if (result.tree[d][i] + result.orphan[d][i] > 1)
				errors++;
		}
	}
	test_assert_ucmp(errors, ==, 0);
	test_check_page_stats();

	/* less than one page: meta 0 only, no pages to scan */
	test_file_write(big_env.data, 1000);
	test_scan_file(&big_env);
	test_assert(result.open_ret == 0 && result.ret == 0);
	test_assert_ucmp(result.records, ==, 0);
	test_assert_ucmp(result.stats.pages_total, ==, 0);

	test_file_write(big_env.data, 0);
	test_scan_file(&big_env);
	test_assert(result.open_ret < 0);

	{
		unsigned char *zeros = i_malloc(256 * 1024);
		test_file_write(zeros, 256 * 1024);
		i_free(zeros);
		test_scan_file(&big_env);
		test_assert(result.open_ret < 0);
	}

	/* not a file */
	{
		struct lmdb_pagescan *scan;
		const char *error;
		test_assert(lmdb_pagescan_open(big_env.dir, &scan, &error) < 0);
	}
	test_end();
}

static void test_pagescan_callback_stop(void)
{
	struct lmdb_pagescan *scan;
	const char *error;

	test_begin("pagescan: callback stops the scan");
	test_file_write(big_env.data, big_env.size);
	if (lmdb_pagescan_open(scan_path, &scan, &error) < 0)
		i_fatal("%s", error);
	memset(&result, 0, sizeof(result));
	result_env = &big_env;
	result.stop_after = 10;
	test_assert(lmdb_pagescan_run(scan, test_scan_callback, &result,
				      &error) < 0);
	test_assert_ucmp(result.records, ==, 10);
	lmdb_pagescan_close(&scan);
	test_end();
}

/* Fuzz: many copies of a small environment, each damaged at random
   places with random bytes or with values that look like page numbers,
   sizes and offsets. The scan must end, touch only valid memory
   (valgrind) and account for every page. */

static uint64_t test_fuzz_value(uint64_t npages)
{
	static const uint64_t values[] = {
		0, 1, 2, 3, 4, 7, 8, 16, 18, 48, 0xff, 0x7fff, 0x8000, 0xffff,
		0x10000, 0xffffffff, (uint64_t)-1, (uint64_t)-2,
		PAGE_SIZE_EXPECTED, PAGE_SIZE_EXPECTED - 1,
		PAGE_SIZE_EXPECTED - 8, PAGE_SIZE_EXPECTED - 10,
		PAGE_SIZE_EXPECTED - 16, PAGE_SIZE_EXPECTED + 1,
	};
	uint64_t r = test_rand64();

	switch (r % 3) {
	case 0:
		return values[(r >> 8) % N_ELEMENTS(values)];
	case 1:
		/* a page number in the file: misdirected pointers, cycles */
		return (r >> 8) % (npages + 2);
	default:
		return test_rand64();
	}
}

/* The offset of a field of a random node of a branch or leaf page: its
   pointer, sizes, flags, key size, or (BIGDATA) overflow pgno */
static size_t test_fuzz_node_field(const struct test_env *env, uint64_t pgno)
{
	const unsigned char *page = env->data + pgno * PAGE_SIZE_EXPECTED;
	uint16_t flags, lower, ptr, ksize;
	unsigned int nkeys, idx;
	size_t ofs = pgno * PAGE_SIZE_EXPECTED;

	memcpy(&flags, page + 10, 2);
	memcpy(&lower, page + 12, 2);
	if ((flags != 1 && flags != 2) || lower <= PAGEHDRSZ ||
	    lower >= PAGE_SIZE_EXPECTED)
		return ofs + test_rand64() % PAGE_SIZE_EXPECTED;
	nkeys = (lower - PAGEHDRSZ) / 2;
	idx = test_rand64() % nkeys;
	memcpy(&ptr, page + PAGEHDRSZ + idx * 2, 2);
	if (ptr > PAGE_SIZE_EXPECTED - 8)
		return ofs + PAGEHDRSZ + idx * 2;
	memcpy(&ksize, page + ptr + 6, 2);
	switch (test_rand64() % 6) {
	case 0:
		return ofs + PAGEHDRSZ + idx * 2;
	case 5:
		if (ptr + 8 + ksize < PAGE_SIZE_EXPECTED)
			return ofs + ptr + 8 + ksize;
		/* fall through */
	default:
		return ofs + ptr + (test_rand64() % 4) * 2;
	}
}

static void test_pagescan_fuzz(void)
{
	const struct test_env *env = &small_env;
	uint64_t npages = env->size / PAGE_SIZE_EXPECTED;
	unsigned int iterations = 2500, iter, n, k, len, j;
	const char *value;
	unsigned char bytes[16], page[PAGE_SIZE_EXPECTED];
	size_t ofs, min_ofs, max_end;
	uint64_t v, pgno, main_root;
	int fd;

	if ((value = getenv("TEST_LMDB_PAGESCAN_FUZZ")) != NULL)
		iterations = atoi(value);
	test_begin(t_strdup_printf("pagescan: %u randomly damaged copies",
				   iterations));
	/* meta 0 holds the last (fourth) transaction */
	main_root = test_page_word(env, 0, META_MAIN_ROOT_OFS);
	test_file_write(env->data, env->size);
	fd = open(scan_path, O_RDWR);
	if (fd < 0)
		i_fatal("open(%s) failed: %m", scan_path);
	test_rand_seed(20260101);
	for (iter = 0; iter < iterations && !test_has_failed(); iter++) {
		min_ofs = env->size;
		max_end = 0;
		n = 1 + test_rand64() % 8;
		for (k = 0; k < n; k++) {
			pgno = test_rand64() % npages;
			v = test_fuzz_value(npages);
			switch (test_rand64() % 6) {
			case 0:
				/* random bytes anywhere */
				ofs = test_rand64() % env->size;
				len = 1 + test_rand64() % 8;
				for (j = 0; j < len; j++)
					bytes[j] = test_rand64() >> 56;
				break;
			case 1:
			case 2:
				/* page header and node pointers */
				ofs = pgno * PAGE_SIZE_EXPECTED +
					test_rand64() % 64;
				len = 1 << (test_rand64() % 4);
				memcpy(bytes, &v, sizeof(v));
				break;
			case 3:
				/* a field of a node, often in the main DB */
				if (test_rand64() % 4 == 0)
					pgno = main_root;
				ofs = test_fuzz_node_field(env, pgno);
				len = 1 << (test_rand64() % 4);
				memcpy(bytes, &v, sizeof(v));
				break;
			case 4:
				/* meta page fields */
				ofs = (test_rand64() % 2) * PAGE_SIZE_EXPECTED +
					PAGEHDRSZ + (test_rand64() % 17) * 8;
				len = 1 << (test_rand64() % 4);
				memcpy(bytes, &v, sizeof(v));
				break;
			default:
				/* a whole page of garbage */
				ofs = pgno * PAGE_SIZE_EXPECTED;
				len = PAGE_SIZE_EXPECTED;
				for (j = 0; j < len; j++)
					page[j] = test_rand64() >> 56;
				break;
			}
			len = I_MIN(len, env->size - ofs);
			if (pwrite(fd, len > sizeof(bytes) ? page : bytes,
				   len, ofs) != (ssize_t)len)
				i_fatal("pwrite() failed: %m");
			min_ofs = I_MIN(min_ofs, ofs);
			max_end = I_MAX(max_end, ofs + len);
		}
		if (test_rand64() % 20 == 0) {
			ofs = test_rand64() % env->size;
			if (ftruncate(fd, ofs) < 0)
				i_fatal("ftruncate() failed: %m");
			min_ofs = I_MIN(min_ofs, ofs);
			max_end = env->size;
		}

		test_scan_file(env);
		if (result.open_ret == 0) {
			test_assert_idx(result.ret == 0, iter);
			test_check_page_stats();
			test_assert_idx(result.stats.pages_total <= npages,
					iter);
		}

		/* restore */
		if (max_end > min_ofs &&
		    pwrite(fd, env->data + min_ofs, max_end - min_ofs,
			   min_ofs) != (ssize_t)(max_end - min_ofs))
			i_fatal("pwrite() failed: %m");
	}
	i_close_fd(&fd);

	/* and the restored copy scans clean */
	test_scan_file(env);
	test_check_tree_records(env, TRUE, NULL);
	test_end();
}

static void test_pagescan_setup(void)
{
	static const unsigned int big_counts[DBI_COUNT] = {
		50, 3000, 700, 20000, 100, 500
	};
	static const unsigned int small_counts[DBI_COUNT] = {
		10, 300, 60, 1500, 20, 100
	};

	memcpy(big_env.counts, big_counts, sizeof(big_counts));
	memcpy(small_env.counts, small_counts, sizeof(small_counts));
	test_env_create(&big_env);
	test_env_create(&small_env);
	i_snprintf(scan_path, sizeof(scan_path), "%s/scan.mdb", big_env.dir);
}

static void test_pagescan_teardown(void)
{
	test_env_destroy(&big_env);
	test_env_destroy(&small_env);
}

int main(void)
{
	static void (*const tests[])(void) = {
		test_pagescan_setup,
		test_pagescan_clean,
		test_pagescan_branch_damage,
		test_pagescan_leaf_damage,
		test_pagescan_overflow_damage,
		test_pagescan_meta_damage,
		test_pagescan_free_list_damage,
		test_pagescan_misdirected_pointer,
		test_pagescan_stale_overflow,
		test_pagescan_cycle,
		test_pagescan_short_dbi_record,
		test_pagescan_truncated,
		test_pagescan_callback_stop,
		test_pagescan_fuzz,
		test_pagescan_teardown,
		NULL
	};

	if (sizeof(size_t) != 8 || getpagesize() != PAGE_SIZE_EXPECTED) {
		/* the damage is placed with this host's layout */
		printf("test-lmdb-pagescan: skipped "
		       "(needs 64-bit, 4 KiB pages)\n");
		return 0;
	}
	return test_run(tests);
}
