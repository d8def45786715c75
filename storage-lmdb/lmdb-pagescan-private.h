#ifndef LMDB_PAGESCAN_PRIVATE_H
#define LMDB_PAGESCAN_PRIVATE_H

/* Shared by lmdb-pagescan.c (meta pages, open, the run),
   lmdb-pagescan-page.c, lmdb-pagescan-tree.c and lmdb-pagescan-records.c:
   LMDB's on-disk layout, the scanner's state, and what each piece calls
   in another. */

#include "array.h"
#include "lmdb-pagescan.h"

/* LMDB 0.9's on-disk layout (mdb.c without MDB_DEVEL): page numbers,
   txnids and sizes are size_t in host byte order. Fields are read with
   memcpy(), so nothing depends on alignment. */
#define PS_W ((unsigned int)sizeof(size_t))
/* MDB_page: pgno, u16 pad, u16 flags, then u16 lower + u16 upper, or a
   u32 page count on the first page of an overflow run */
#define PS_PAGE_FLAGS_OFS (PS_W + 2)
#define PS_PAGE_LOWER_OFS (PS_W + 4)
#define PS_PAGE_UPPER_OFS (PS_W + 6)
#define PS_PAGE_PAGES_OFS (PS_W + 4)
#define PS_PAGEHDRSZ (PS_W + 8)
#define PS_P_BRANCH 0x01
#define PS_P_LEAF 0x02
#define PS_P_OVERFLOW 0x04
#define PS_P_META 0x08
#define PS_P_DIRTY 0x10
/* MDB_node: u16 lo, u16 hi (data size, or a branch's child pgno together
   with flags), u16 flags, u16 key size, key, data */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#  define PS_NODE_LO_OFS 2
#  define PS_NODE_HI_OFS 0
#else
#  define PS_NODE_LO_OFS 0
#  define PS_NODE_HI_OFS 2
#endif
#define PS_NODE_FLAGS_OFS 4
#define PS_NODE_KSIZE_OFS 6
#define PS_NODESIZE 8
#define PS_F_BIGDATA 0x01
#define PS_F_SUBDATA 0x02
#define PS_F_DUPDATA 0x04
#define PS_MAX_KEY_SIZE 511
/* MDB_db: u32 pad, u16 flags, u16 depth, branch, leaf and overflow page
   counts, entries, root */
#define PS_DB_FLAGS_OFS 4
#define PS_DB_DEPTH_OFS 6
#define PS_DB_ENTRIES_OFS (8 + 3 * PS_W)
#define PS_DB_ROOT_OFS (8 + 4 * PS_W)
#define PS_DB_SIZE (8 + 5 * PS_W)
#define PS_DB_REVERSEKEY 0x02
#define PS_DB_INTEGERKEY 0x08
/* the mdb_dbi_open() flags a DBI record may carry */
#define PS_DB_VALID_FLAGS 0x7e
/* MDB_meta, after the page header: u32 magic, u32 version, address,
   mapsize, MDB_db dbs[2] (free, main), last_pg, txnid */
#define PS_META_MAGIC 0xBEEFC0DEU
#define PS_META_VERSION 1
#define PS_META_DBS_OFS (8 + 2 * PS_W)
#define PS_META_LAST_PG_OFS (PS_META_DBS_OFS + 2 * PS_DB_SIZE)
#define PS_META_TXNID_OFS (PS_META_LAST_PG_OFS + PS_W)
#define PS_META_SIZE (PS_META_TXNID_OFS + PS_W)
#define PS_FREE_DBI 0
#define PS_MAIN_DBI 1
#define PS_NUM_METAS 2
#define PS_MIN_PAGE_SIZE 512
#define PS_MAX_PAGE_SIZE 0x8000
#define PS_P_INVALID ((uint64_t)(size_t)-1)
/* LMDB's cursor stack (CURSOR_STACK): no valid tree is deeper */
#define PS_MAX_DEPTH 32
/* named DBIs walked: LMDB's maxdbs is small, a damaged main DB is not */
#define PS_MAX_DBIS 1024
/* times a valid page rejected in one place is tried in another */
#define PS_MAX_REJECTS 4

enum ps_state {
	PS_UNSEEN = 0,
	PS_META,
	PS_TREE,
	PS_OVERFLOW,
	PS_FREE,
	/* not a valid page where one was expected (reported) */
	PS_BAD,
	/* unreached, found by the orphan scan */
	PS_ORPHAN_LEAF,
	PS_ORPHAN_BRANCH,
	PS_ORPHAN_RUN_HEAD,
	PS_ORPHAN_RUN_USED,
	PS_ORPHAN_RUN,
	/* a valid page in the wrong place, + the number of tries - 1 */
	PS_REJECTED,
};
#define PS_STATE_IS_USED(s) \
	((s) == PS_META || (s) == PS_TREE || (s) == PS_OVERFLOW || \
	 (s) == PS_FREE)
#define PS_STATE_IS_OPEN(s) ((s) == PS_UNSEEN || (s) >= PS_REJECTED)

struct ps_key {
	const unsigned char *data;
	size_t size;
};
typedef int ps_cmp_func_t(const struct ps_key *a, const struct ps_key *b);

struct ps_db {
	uint64_t root, entries;
	uint16_t flags, depth;
};

struct ps_meta {
	unsigned int pgno, page_size;
	uint64_t last_pg, txnid;
	struct ps_db dbs[PS_NUM_METAS];
};

/* a branch, leaf or overflow page whose structure was checked */
struct ps_page {
	const unsigned char *data;
	uint64_t pgno;
	uint16_t type;
	unsigned int nkeys;
};

struct ps_tree {
	enum lmdb_pagescan_tree kind;
	/* the name for records ("" = main DB), NULL for the free DB */
	const char *name;
	unsigned int dbi_idx;
	uint64_t root, parent_pgno;
	ps_cmp_func_t *cmp;
	/* leaves reached, in key order */
	ARRAY(uint64_t) leaves;
};

struct lmdb_pagescan {
	int fd;
	char *fallback_reason;
	unsigned int page_size;
	uint64_t file_pages, npages;
	struct ps_meta meta;
	struct lmdb_pagescan_stats stats;

	/* per run */
	pool_t pool;
	uint8_t *state;
	/* Fenwick tree over pages in use, so that "does this overflow run
	   overlap a used page" costs log(pages), not the run's length */
	uint32_t *used;
	unsigned char *bufs[PS_MAX_DEPTH];
	unsigned char *value_buf;
	size_t value_buf_size;
	ARRAY(struct ps_tree *) trees;
	ARRAY(struct lmdb_pagescan_dbi) dbis;
	ARRAY(struct lmdb_pagescan_damage) damages;
	lmdb_pagescan_callback_t *callback;
	void *context;
};

static inline uint16_t ps_u16(const unsigned char *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint32_t ps_u32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint64_t ps_word(const unsigned char *p)
{
	size_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static inline const unsigned char *
ps_node(const struct ps_page *page, unsigned int idx)
{
	return page->data + ps_u16(page->data + PS_PAGEHDRSZ + idx * 2);
}

static inline uint32_t ps_node_dsize(const unsigned char *node)
{
	return ps_u16(node + PS_NODE_LO_OFS) |
		((uint32_t)ps_u16(node + PS_NODE_HI_OFS) << 16);
}

static inline uint64_t ps_node_child(const unsigned char *node)
{
	uint64_t pgno = ps_node_dsize(node);

	if (PS_W > 4)
		pgno |= (uint64_t)ps_u16(node + PS_NODE_FLAGS_OFS) << 32;
	return pgno;
}

static inline struct ps_key ps_node_key(const unsigned char *node)
{
	struct ps_key key = {
		.data = node + PS_NODESIZE,
		.size = ps_u16(node + PS_NODE_KSIZE_OFS),
	};
	return key;
}

/* lmdb-pagescan-page.c */
int lmdb_ps_cmp_memn(const struct ps_key *a, const struct ps_key *b);
int lmdb_ps_cmp_memnr(const struct ps_key *a, const struct ps_key *b);
int lmdb_ps_cmp_int(const struct ps_key *a, const struct ps_key *b);
ps_cmp_func_t *lmdb_ps_db_cmp(uint16_t flags);
const char *
lmdb_ps_pread(int fd, void *buf, size_t size, uint64_t offset);
bool
lmdb_ps_page_check(unsigned int page_size, uint64_t pgno,
		   const unsigned char *buf, struct ps_page *page_r,
		   const char **reason_r);
bool lmdb_ps_page_sorted(const struct ps_page *page, ps_cmp_func_t *cmp);
bool
lmdb_ps_page_in_range(const struct ps_page *page, ps_cmp_func_t *cmp,
		      const struct ps_key *lo, const struct ps_key *hi);
void lmdb_ps_set_state(struct lmdb_pagescan *scan, uint64_t pgno,
		       enum ps_state state);
uint64_t lmdb_ps_used_before(struct lmdb_pagescan *scan, uint64_t end);
void lmdb_ps_reject(struct lmdb_pagescan *scan, uint64_t pgno);
void
lmdb_ps_damage(struct lmdb_pagescan *scan, const struct ps_tree *tree,
	       uint64_t pgno, uint64_t parent_pgno, const char *reason);
bool
lmdb_ps_overflow_read(struct lmdb_pagescan *scan, uint64_t pgno, uint64_t size,
		      bool orphan, const unsigned char **value_r,
		      const char **reason_r);

/* lmdb-pagescan-tree.c */
void
lmdb_ps_walk(struct lmdb_pagescan *scan, struct ps_tree *tree, uint64_t pgno,
	     uint64_t parent_pgno, unsigned int depth,
	     const struct ps_key *lo, const struct ps_key *hi);
struct ps_tree *
lmdb_ps_tree_add(struct lmdb_pagescan *scan, enum lmdb_pagescan_tree kind,
		 const char *name, uint64_t root, uint16_t flags,
		 uint64_t parent_pgno);

/* lmdb-pagescan-records.c */
int
lmdb_ps_yield(struct lmdb_pagescan *scan, struct ps_tree *tree,
	      const struct ps_page *page, unsigned int idx);
void lmdb_ps_free_list(struct lmdb_pagescan *scan, struct ps_tree *tree);
bool
lmdb_ps_leaf_reread(struct lmdb_pagescan *scan, struct ps_tree *tree,
		    uint64_t pgno, struct ps_page *page_r);
int lmdb_ps_orphans(struct lmdb_pagescan *scan);

#endif
