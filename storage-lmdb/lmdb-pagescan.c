/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "read-full.h"
#include "lmdb-pagescan.h"

#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>

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

/* Key orders of mdb.c: mdb_cmp_memn, mdb_cmp_memnr, mdb_cmp_cint (for
   equal sizes: bytes from the most significant end) */
static int ps_cmp_memn(const struct ps_key *a, const struct ps_key *b)
{
	int diff = memcmp(a->data, b->data, I_MIN(a->size, b->size));

	if (diff != 0)
		return diff;
	return a->size < b->size ? -1 : (a->size > b->size ? 1 : 0);
}

static int ps_cmp_memnr(const struct ps_key *a, const struct ps_key *b)
{
	size_t i, len = I_MIN(a->size, b->size);

	for (i = 1; i <= len; i++) {
		if (a->data[a->size - i] != b->data[b->size - i])
			return a->data[a->size - i] - b->data[b->size - i];
	}
	return a->size < b->size ? -1 : (a->size > b->size ? 1 : 0);
}

static int ps_cmp_int(const struct ps_key *a, const struct ps_key *b)
{
	if (a->size != b->size)
		return a->size < b->size ? -1 : 1;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return ps_cmp_memn(a, b);
#else
	return ps_cmp_memnr(a, b);
#endif
}

static ps_cmp_func_t *ps_db_cmp(uint16_t flags)
{
	return (flags & PS_DB_REVERSEKEY) != 0 ? ps_cmp_memnr :
		(flags & PS_DB_INTEGERKEY) != 0 ? ps_cmp_int : ps_cmp_memn;
}

/* File access */

static const char *
ps_pread(int fd, void *buf, size_t size, uint64_t offset)
{
	int ret;

	if (offset > (uint64_t)OFF_T_MAX - size)
		return "page beyond the end of the file";
	ret = pread_full(fd, buf, size, (off_t)offset);
	if (ret < 0)
		return "read error";
	if (ret == 0)
		return "page beyond the end of the file";
	return NULL;
}

/* Page structure, independent of where the page was found */

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

static bool
ps_page_check(unsigned int page_size, uint64_t pgno, const unsigned char *buf,
	      struct ps_page *page_r, const char **reason_r)
{
	unsigned int i, lower, upper, ofs, ksize, nflags;
	uint64_t end;
	bool branch;

	i_zero(page_r);
	page_r->data = buf;
	page_r->pgno = pgno;
	page_r->type = ps_u16(buf + PS_PAGE_FLAGS_OFS) & ~PS_P_DIRTY;
	if (ps_word(buf) != pgno) {
		*reason_r = "page number in the page header does not match";
		return FALSE;
	}
	if (page_r->type == PS_P_OVERFLOW) {
		if (ps_u32(buf + PS_PAGE_PAGES_OFS) == 0) {
			*reason_r = "overflow run of 0 pages";
			return FALSE;
		}
		return TRUE;
	}
	if (page_r->type != PS_P_BRANCH && page_r->type != PS_P_LEAF) {
		*reason_r = "invalid page flags";
		return FALSE;
	}
	branch = page_r->type == PS_P_BRANCH;
	lower = ps_u16(buf + PS_PAGE_LOWER_OFS);
	upper = ps_u16(buf + PS_PAGE_UPPER_OFS);
	if (lower < PS_PAGEHDRSZ || (lower - PS_PAGEHDRSZ) % 2 != 0 ||
	    lower > upper || upper > page_size) {
		*reason_r = "invalid free space bounds";
		return FALSE;
	}
	page_r->nkeys = (lower - PS_PAGEHDRSZ) / 2;
	if (page_r->nkeys == 0) {
		*reason_r = "page without nodes";
		return FALSE;
	}
	for (i = 0; i < page_r->nkeys; i++) {
		ofs = ps_u16(buf + PS_PAGEHDRSZ + i * 2);
		if (ofs < upper || ofs % 2 != 0 ||
		    ofs + PS_NODESIZE > page_size) {
			*reason_r = "node offset outside the node area";
			return FALSE;
		}
		ksize = ps_u16(buf + ofs + PS_NODE_KSIZE_OFS);
		nflags = ps_u16(buf + ofs + PS_NODE_FLAGS_OFS);
		end = ofs + PS_NODESIZE + ksize;
		if (!branch) {
			if ((nflags & ~(PS_F_BIGDATA | PS_F_SUBDATA |
					PS_F_DUPDATA)) != 0) {
				*reason_r = "invalid node flags";
				return FALSE;
			}
			end += (nflags & PS_F_BIGDATA) != 0 ? PS_W :
				ps_node_dsize(buf + ofs);
		}
		/* a branch's first key is unused (LMDB writes it empty) */
		if (ksize > PS_MAX_KEY_SIZE ||
		    (ksize == 0 && (!branch || i > 0))) {
			*reason_r = "invalid key size";
			return FALSE;
		}
		if (end > page_size) {
			*reason_r = "node beyond the end of the page";
			return FALSE;
		}
	}
	return TRUE;
}

static bool ps_page_sorted(const struct ps_page *page, ps_cmp_func_t *cmp)
{
	struct ps_key prev, key;
	unsigned int i = page->type == PS_P_BRANCH ? 1 : 0;

	if (i >= page->nkeys)
		return TRUE;
	prev = ps_node_key(ps_node(page, i));
	for (i++; i < page->nkeys; i++) {
		key = ps_node_key(ps_node(page, i));
		if (cmp(&prev, &key) >= 0)
			return FALSE;
		prev = key;
	}
	return TRUE;
}

/* A child holds keys lo <= key < hi of its parent's separators. */
static bool
ps_page_in_range(const struct ps_page *page, ps_cmp_func_t *cmp,
		 const struct ps_key *lo, const struct ps_key *hi)
{
	unsigned int first = page->type == PS_P_BRANCH ? 1 : 0;
	struct ps_key key;

	if (first >= page->nkeys)
		return TRUE;
	key = ps_node_key(ps_node(page, first));
	if (lo != NULL && cmp(&key, lo) < 0)
		return FALSE;
	key = ps_node_key(ps_node(page, page->nkeys - 1));
	return hi == NULL || cmp(&key, hi) < 0;
}

/* Page states and damage */

static void ps_set_state(struct lmdb_pagescan *scan, uint64_t pgno,
			 enum ps_state state)
{
	uint64_t i;

	i_assert(!PS_STATE_IS_USED(scan->state[pgno]));
	scan->state[pgno] = state;
	if (PS_STATE_IS_USED(state)) {
		for (i = pgno + 1; i <= scan->npages; i += i & (~i + 1))
			scan->used[i]++;
	}
}

/* the number of used pages in [0, end) */
static uint64_t ps_used_before(struct lmdb_pagescan *scan, uint64_t end)
{
	uint64_t sum = 0;

	for (; end > 0; end &= end - 1)
		sum += scan->used[end];
	return sum;
}

static void ps_reject(struct lmdb_pagescan *scan, uint64_t pgno)
{
	uint8_t state = scan->state[pgno];

	scan->state[pgno] = state < PS_REJECTED ? PS_REJECTED :
		I_MIN(state + 1, PS_REJECTED + PS_MAX_REJECTS);
}

static void
ps_damage(struct lmdb_pagescan *scan, const struct ps_tree *tree,
	  uint64_t pgno, uint64_t parent_pgno, const char *reason)
{
	struct lmdb_pagescan_damage *damage;

	scan->stats.damage_count++;
	if (array_count(&scan->damages) >= LMDB_PAGESCAN_MAX_DAMAGES)
		return;
	damage = array_append_space(&scan->damages);
	damage->pgno = pgno;
	damage->parent_pgno = parent_pgno;
	damage->tree = tree == NULL ? LMDB_PAGESCAN_TREE_NONE : tree->kind;
	if (tree != NULL && tree->kind == LMDB_PAGESCAN_TREE_NAMED)
		damage->dbi_name = tree->name;
	damage->reason = reason;
}

/* Overflow runs */

static void ps_value_buf_alloc(struct lmdb_pagescan *scan, size_t size)
{
	if (size > scan->value_buf_size) {
		scan->value_buf = i_realloc(scan->value_buf,
					    scan->value_buf_size, size);
		scan->value_buf_size = size;
	}
}

/* Read the value of size bytes in the overflow run at pgno. A tree's run
   must be unused and overlap no used page, then becomes used; an orphan's
   run must have been claimed by ps_orphans_claim_runs(). */
static bool
ps_overflow_read(struct lmdb_pagescan *scan, uint64_t pgno, uint64_t size,
		 bool orphan, const unsigned char **value_r,
		 const char **reason_r)
{
	unsigned char hdr[PS_PAGEHDRSZ];
	uint64_t i, npages, needed;
	uint8_t state;

	if (pgno < PS_NUM_METAS || pgno > scan->meta.last_pg) {
		*reason_r = "overflow page number out of range";
		return FALSE;
	}
	if (pgno >= scan->npages) {
		*reason_r = "overflow page beyond the end of the file";
		return FALSE;
	}
	/* each run is read once: a run shared by records is damage */
	state = scan->state[pgno];
	if (orphan ? state != PS_ORPHAN_RUN_HEAD : !PS_STATE_IS_OPEN(state)) {
		*reason_r = state == PS_ORPHAN_RUN_USED ?
			"overflow run already used by another record" :
			orphan ? "overflow run not found" :
			"overflow page already used or damaged";
		return FALSE;
	}
	if ((*reason_r = ps_pread(scan->fd, hdr, sizeof(hdr),
				  pgno * scan->page_size)) != NULL)
		goto bad;
	npages = ps_u32(hdr + PS_PAGE_PAGES_OFS);
	if (ps_word(hdr) != pgno ||
	    (ps_u16(hdr + PS_PAGE_FLAGS_OFS) & ~PS_P_DIRTY) != PS_P_OVERFLOW ||
	    npages == 0) {
		*reason_r = "invalid overflow page header";
		goto bad;
	}
	if (npages > scan->npages - pgno) {
		*reason_r = "overflow run beyond the last page";
		goto bad;
	}
	if (size > LMDB_PAGESCAN_MAX_VALUE_SIZE) {
		*reason_r = "value too large for the scanner";
		goto bad;
	}
	/* LMDB's OVPAGES(); a run may be longer (reused for a smaller
	   value), and only the pages holding the value have to be free */
	needed = (PS_PAGEHDRSZ - 1 + size) / scan->page_size + 1;
	if (needed > npages) {
		*reason_r = "value larger than its overflow run";
		goto bad;
	}
	if (!orphan && ps_used_before(scan, pgno + needed) !=
	    ps_used_before(scan, pgno)) {
		*reason_r = "overflow run overlaps pages in use";
		goto bad;
	}
	ps_value_buf_alloc(scan, I_MAX(size, 1));
	*reason_r = ps_pread(scan->fd, scan->value_buf, size,
			     pgno * scan->page_size + PS_PAGEHDRSZ);
	if (*reason_r != NULL)
		goto bad;
	if (orphan) {
		scan->state[pgno] = PS_ORPHAN_RUN_USED;
	} else {
		for (i = 0; i < npages; i++) {
			if (!PS_STATE_IS_USED(scan->state[pgno + i]))
				ps_set_state(scan, pgno + i, PS_OVERFLOW);
		}
	}
	*value_r = scan->value_buf;
	return TRUE;
bad:
	scan->state[pgno] = orphan ? PS_ORPHAN_RUN_USED : PS_BAD;
	return FALSE;
}

/* Tree walk: checks and marks branch and leaf pages, collects leaves */

static void ps_tree_add_dbis(struct lmdb_pagescan *scan,
			     const struct ps_page *page);

static const char *
ps_ref_check(struct lmdb_pagescan *scan, uint64_t pgno)
{
	uint8_t state;

	if (pgno < PS_NUM_METAS || pgno > scan->meta.last_pg)
		return "page number out of range";
	if (pgno >= scan->npages)
		return "page beyond the end of the file";
	state = scan->state[pgno];
	if (state == PS_UNSEEN ||
	    (state >= PS_REJECTED && state < PS_REJECTED + PS_MAX_REJECTS))
		return NULL;
	/* damaged or given up on: already reported */
	return state == PS_BAD || state >= PS_REJECTED ? "" :
		"page reached twice";
}

static void
ps_walk(struct lmdb_pagescan *scan, struct ps_tree *tree, uint64_t pgno,
	uint64_t parent_pgno, unsigned int depth,
	const struct ps_key *lo, const struct ps_key *hi)
{
	struct ps_page page;
	struct ps_key key, next_key;
	const char *reason;
	unsigned int i;

	if ((reason = ps_ref_check(scan, pgno)) != NULL) {
		if (reason[0] != '\0')
			ps_damage(scan, tree, pgno, parent_pgno, reason);
		return;
	}
	if (depth >= PS_MAX_DEPTH) {
		ps_damage(scan, tree, pgno, parent_pgno,
			  "tree deeper than LMDB allows");
		return;
	}
	if ((reason = ps_pread(scan->fd, scan->bufs[depth], scan->page_size,
			       pgno * scan->page_size)) != NULL ||
	    !ps_page_check(scan->page_size, pgno, scan->bufs[depth],
			   &page, &reason)) {
		scan->state[pgno] = PS_BAD;
		ps_damage(scan, tree, pgno, parent_pgno, reason);
		return;
	}
	if (page.type == PS_P_OVERFLOW)
		reason = "overflow page in place of a branch or leaf page";
	else if (!ps_page_sorted(&page, tree->cmp))
		reason = "keys out of order";
	else if (!ps_page_in_range(&page, tree->cmp, lo, hi))
		reason = "keys outside the parent's range";
	if (reason != NULL) {
		/* valid in itself: another tree or the orphan scan may
		   still use it */
		ps_reject(scan, pgno);
		ps_damage(scan, tree, pgno, parent_pgno, reason);
		return;
	}
	ps_set_state(scan, pgno, PS_TREE);
	if (page.type == PS_P_LEAF) {
		array_push_back(&tree->leaves, &pgno);
		if (tree->kind == LMDB_PAGESCAN_TREE_MAIN)
			ps_tree_add_dbis(scan, &page);
		return;
	}
	/* the children read deeper buffers: keys of this page stay valid */
	for (i = 0; i < page.nkeys; i++) {
		if (i > 0)
			key = ps_node_key(ps_node(&page, i));
		if (i + 1 < page.nkeys)
			next_key = ps_node_key(ps_node(&page, i + 1));
		ps_walk(scan, tree, ps_node_child(ps_node(&page, i)), pgno,
			depth + 1, i == 0 ? lo : &key,
			i + 1 < page.nkeys ? &next_key : hi);
	}
}

static struct ps_tree *
ps_tree_add(struct lmdb_pagescan *scan, enum lmdb_pagescan_tree kind,
	    const char *name, uint64_t root, uint16_t flags,
	    uint64_t parent_pgno)
{
	struct ps_tree *tree = p_new(scan->pool, struct ps_tree, 1);

	tree->kind = kind;
	tree->name = name;
	tree->root = root;
	tree->parent_pgno = parent_pgno;
	tree->cmp = kind == LMDB_PAGESCAN_TREE_FREE ? ps_cmp_int :
		ps_db_cmp(flags);
	p_array_init(&tree->leaves, scan->pool, 16);
	array_push_back(&scan->trees, &tree);
	return tree;
}

static bool ps_dbi_find(struct lmdb_pagescan *scan, const char *name)
{
	const struct lmdb_pagescan_dbi *dbi;

	array_foreach(&scan->dbis, dbi) {
		if (strcmp(dbi->name, name) == 0)
			return TRUE;
	}
	return FALSE;
}

/* Named DBIs are F_SUBDATA records of the main DB holding an MDB_db. */
static void
ps_tree_add_dbis(struct lmdb_pagescan *scan, const struct ps_page *page)
{
	struct lmdb_pagescan_dbi *dbi;
	struct ps_tree *main_tree = array_idx_elem(&scan->trees, 1);
	struct ps_tree *tree;
	const unsigned char *node, *db;
	struct ps_key key;
	const char *name;
	unsigned int i;
	uint16_t nflags, flags;
	uint64_t root;

	for (i = 0; i < page->nkeys; i++) {
		node = ps_node(page, i);
		nflags = ps_u16(node + PS_NODE_FLAGS_OFS);
		if ((nflags & (PS_F_SUBDATA | PS_F_DUPDATA)) != PS_F_SUBDATA)
			continue;
		key = ps_node_key(node);
		db = key.data + key.size;
		/* the node's data is within the page: only its size is known */
		if ((nflags & PS_F_BIGDATA) != 0 ||
		    ps_node_dsize(node) != PS_DB_SIZE ||
		    memchr(key.data, '\0', key.size) != NULL ||
		    (ps_u16(db + PS_DB_FLAGS_OFS) & ~PS_DB_VALID_FLAGS) != 0) {
			ps_damage(scan, main_tree, page->pgno,
				  LMDB_PAGESCAN_NO_PGNO,
				  "invalid named DBI record");
			continue;
		}
		if (array_count(&scan->dbis) >= PS_MAX_DBIS) {
			ps_damage(scan, main_tree, page->pgno,
				  LMDB_PAGESCAN_NO_PGNO,
				  "too many named DBIs");
			return;
		}
		/* keys are sorted within a page, but a damaged tree can hold
		   a name twice: keep the first */
		name = p_strndup(scan->pool, key.data, key.size);
		if (ps_dbi_find(scan, name)) {
			ps_damage(scan, main_tree, page->pgno,
				  LMDB_PAGESCAN_NO_PGNO,
				  "named DBI found twice");
			continue;
		}
		flags = ps_u16(db + PS_DB_FLAGS_OFS);
		root = ps_word(db + PS_DB_ROOT_OFS);
		tree = ps_tree_add(scan, LMDB_PAGESCAN_TREE_NAMED, name, root,
				   flags, page->pgno);
		tree->dbi_idx = array_count(&scan->dbis);
		dbi = array_append_space(&scan->dbis);
		dbi->name = name;
		dbi->root_pgno = root == PS_P_INVALID ?
			LMDB_PAGESCAN_NO_PGNO : root;
		dbi->entries = ps_word(db + PS_DB_ENTRIES_OFS);
		dbi->depth = ps_u16(db + PS_DB_DEPTH_OFS);
		dbi->flags = flags;
	}
}

/* Records */

static int
ps_yield(struct lmdb_pagescan *scan, struct ps_tree *tree,
	 const struct ps_page *page, unsigned int idx)
{
	struct lmdb_pagescan_record rec;
	struct lmdb_pagescan_dbi *dbi;
	const unsigned char *node = ps_node(page, idx);
	uint16_t nflags = ps_u16(node + PS_NODE_FLAGS_OFS);
	struct ps_key key = ps_node_key(node);
	const char *reason;

	i_zero(&rec);
	if ((nflags & PS_F_SUBDATA) != 0 && (nflags & PS_F_DUPDATA) == 0 &&
	    (tree == NULL || tree->kind == LMDB_PAGESCAN_TREE_MAIN)) {
		/* a named DBI's record: structure, not data */
		return 0;
	}
	if ((nflags & (PS_F_SUBDATA | PS_F_DUPDATA)) != 0) {
		scan->stats.records_damaged++;
		ps_damage(scan, tree, page->pgno, LMDB_PAGESCAN_NO_PGNO,
			  "sub-database or duplicate data not supported");
		return 0;
	}
	rec.overflow_pgno = LMDB_PAGESCAN_NO_PGNO;
	rec.value_size = ps_node_dsize(node);
	if ((nflags & PS_F_BIGDATA) != 0) {
		rec.overflow_pgno = ps_word(key.data + key.size);
		if (!ps_overflow_read(scan, rec.overflow_pgno, rec.value_size,
				      tree == NULL, &rec.value, &reason)) {
			scan->stats.records_damaged++;
			ps_damage(scan, tree, rec.overflow_pgno, page->pgno,
				  reason);
			return 0;
		}
	} else {
		rec.value = key.data + key.size;
	}
	rec.key = key.data;
	rec.key_size = key.size;
	rec.pgno = page->pgno;
	rec.node_idx = idx;
	if (tree == NULL) {
		rec.source = LMDB_PAGESCAN_SOURCE_ORPHAN;
		scan->stats.records_orphan++;
	} else {
		rec.source = LMDB_PAGESCAN_SOURCE_TREE;
		rec.dbi_name = tree->name;
		scan->stats.records_tree++;
		if (tree->kind == LMDB_PAGESCAN_TREE_NAMED) {
			dbi = array_idx_modifiable(&scan->dbis, tree->dbi_idx);
			dbi->records++;
		}
	}
	return scan->callback(&rec, scan->context);
}

/* The free DB: txnid -> list of the page numbers it freed (first word =
   count = the rest of the value, sorted descending). Entries are taken one
   by one: a damaged list loses only its damaged entries, and a wrong entry
   can't free a page a tree uses (the tree keeps it). */
static void
ps_free_list_add(struct lmdb_pagescan *scan, struct ps_tree *tree,
		 uint64_t leaf_pgno, const unsigned char *value, uint64_t size,
		 uint8_t *pending)
{
	uint64_t i, count, pgno, prev = PS_P_INVALID;
	bool damaged = FALSE;

	if (size < PS_W || size % PS_W != 0) {
		ps_damage(scan, tree, leaf_pgno, LMDB_PAGESCAN_NO_PGNO,
			  "invalid free page list");
		scan->stats.records_damaged++;
		return;
	}
	count = size / PS_W - 1;
	if (ps_word(value) != count)
		damaged = TRUE;
	for (i = 1; i <= count; i++) {
		pgno = ps_word(value + i * PS_W);
		if (pgno >= prev)
			damaged = TRUE;
		prev = pgno;
		if (pgno < PS_NUM_METAS || pgno > scan->meta.last_pg)
			damaged = TRUE;
		else if (pgno < scan->npages)
			pending[pgno / 8] |= 1 << (pgno % 8);
	}
	if (damaged) {
		ps_damage(scan, tree, leaf_pgno, LMDB_PAGESCAN_NO_PGNO,
			  "damaged free page list");
	}
}

static void
ps_free_list_node(struct lmdb_pagescan *scan, struct ps_tree *tree,
		  const struct ps_page *page, unsigned int idx,
		  uint8_t *pending)
{
	const unsigned char *node = ps_node(page, idx), *value;
	uint16_t nflags = ps_u16(node + PS_NODE_FLAGS_OFS);
	struct ps_key key = ps_node_key(node);
	uint64_t size = ps_node_dsize(node);
	const char *reason;

	if ((nflags & (PS_F_SUBDATA | PS_F_DUPDATA)) != 0) {
		ps_damage(scan, tree, page->pgno, LMDB_PAGESCAN_NO_PGNO,
			  "invalid free list record");
		scan->stats.records_damaged++;
		return;
	}
	if ((nflags & PS_F_BIGDATA) == 0)
		value = key.data + key.size;
	else if (!ps_overflow_read(scan, ps_word(key.data + key.size), size,
				   FALSE, &value, &reason)) {
		ps_damage(scan, tree, ps_word(key.data + key.size),
			  page->pgno, reason);
		scan->stats.records_damaged++;
		return;
	}
	ps_free_list_add(scan, tree, page->pgno, value, size, pending);
}

/* Re-read a leaf collected by the walk: the file may change under us. */
static bool
ps_leaf_reread(struct lmdb_pagescan *scan, struct ps_tree *tree,
	       uint64_t pgno, struct ps_page *page_r)
{
	const char *reason;

	if ((reason = ps_pread(scan->fd, scan->bufs[0], scan->page_size,
			       pgno * scan->page_size)) == NULL &&
	    ps_page_check(scan->page_size, pgno, scan->bufs[0],
			  page_r, &reason) &&
	    page_r->type == PS_P_LEAF)
		return TRUE;
	ps_damage(scan, tree, pgno, LMDB_PAGESCAN_NO_PGNO,
		  "page changed during the scan");
	return FALSE;
}

static void ps_free_list(struct lmdb_pagescan *scan, struct ps_tree *tree)
{
	struct ps_page page;
	const uint64_t *pgnop;
	uint8_t *pending = i_malloc(scan->npages / 8 + 1);
	uint64_t pgno;
	unsigned int i;

	array_foreach(&tree->leaves, pgnop) {
		if (!ps_leaf_reread(scan, tree, *pgnop, &page))
			continue;
		for (i = 0; i < page.nkeys; i++)
			ps_free_list_node(scan, tree, &page, i, pending);
	}
	/* a page both in a tree and listed free stays in the tree */
	for (pgno = 0; pgno < scan->npages; pgno++) {
		if ((pending[pgno / 8] & (1 << (pgno % 8))) == 0)
			continue;
		if (PS_STATE_IS_USED(scan->state[pgno])) {
			ps_damage(scan, tree, pgno, LMDB_PAGESCAN_NO_PGNO,
				  "page in use is listed as free");
		} else {
			ps_set_state(scan, pgno, PS_FREE);
		}
	}
	i_free(pending);
}

/* Unreached pages */

/* Claim each unreached overflow run by its header page, in page order and
   skipping the claimed pages: the raw value bytes inside a run (mail
   content) are never parsed as pages. */
static void ps_orphans_claim_runs(struct lmdb_pagescan *scan)
{
	unsigned char hdr[PS_PAGEHDRSZ];
	uint64_t pgno, i, npages;

	for (pgno = PS_NUM_METAS; pgno < scan->npages; pgno++) {
		if (!PS_STATE_IS_OPEN(scan->state[pgno]) ||
		    ps_pread(scan->fd, hdr, sizeof(hdr),
			     pgno * scan->page_size) != NULL ||
		    ps_word(hdr) != pgno ||
		    (ps_u16(hdr + PS_PAGE_FLAGS_OFS) & ~PS_P_DIRTY) !=
		    PS_P_OVERFLOW)
			continue;
		npages = ps_u32(hdr + PS_PAGE_PAGES_OFS);
		if (npages == 0 || npages > scan->npages - pgno ||
		    ps_used_before(scan, pgno + npages) !=
		    ps_used_before(scan, pgno))
			continue;
		scan->state[pgno] = PS_ORPHAN_RUN_HEAD;
		for (i = 1; i < npages; i++)
			scan->state[pgno + i] = PS_ORPHAN_RUN;
		pgno += npages - 1;
	}
}

static int ps_orphans(struct lmdb_pagescan *scan)
{
	static ps_cmp_func_t *const cmps[] = {
		ps_cmp_memn, ps_cmp_int, ps_cmp_memnr
	};
	struct ps_page page;
	const char *reason;
	uint64_t pgno;
	unsigned int i;
	uint8_t state;

	ps_orphans_claim_runs(scan);
	for (pgno = PS_NUM_METAS; pgno < scan->npages; pgno++) {
		state = scan->state[pgno];
		if (!PS_STATE_IS_OPEN(state))
			continue;
		if ((reason = ps_pread(scan->fd, scan->bufs[0], scan->page_size,
				       pgno * scan->page_size)) == NULL &&
		    ps_page_check(scan->page_size, pgno, scan->bufs[0],
				  &page, &reason)) {
			for (i = 0; i < N_ELEMENTS(cmps); i++) {
				if (ps_page_sorted(&page, cmps[i]))
					break;
			}
			/* a run not claimed */
			if (page.type == PS_P_OVERFLOW)
				reason = "unusable overflow run";
			else if (i == N_ELEMENTS(cmps))
				reason = "keys out of order";
		}
		if (reason != NULL) {
			/* a rejected page was reported where it was found */
			if (state == PS_UNSEEN) {
				ps_damage(scan, NULL, pgno,
					  LMDB_PAGESCAN_NO_PGNO, reason);
			}
			scan->state[pgno] = PS_BAD;
		} else if (page.type == PS_P_BRANCH) {
			scan->state[pgno] = PS_ORPHAN_BRANCH;
		} else {
			scan->state[pgno] = PS_ORPHAN_LEAF;
			for (i = 0; i < page.nkeys; i++) {
				if (ps_yield(scan, NULL, &page, i) < 0)
					return -1;
			}
		}
	}
	return 0;
}

static void ps_stats_init(struct lmdb_pagescan *scan);

/* Meta pages */

static bool
ps_meta_parse(int fd, unsigned int pgno, unsigned int offset,
	      struct ps_meta *meta_r)
{
	unsigned char buf[PS_PAGEHDRSZ + PS_META_SIZE];
	const unsigned char *m = buf + PS_PAGEHDRSZ, *db;
	unsigned int i;

	i_zero(meta_r);
	if (ps_pread(fd, buf, sizeof(buf), offset) != NULL ||
	    ps_word(buf) != pgno ||
	    (ps_u16(buf + PS_PAGE_FLAGS_OFS) & ~PS_P_DIRTY) != PS_P_META ||
	    ps_u32(m) != PS_META_MAGIC || ps_u32(m + 4) != PS_META_VERSION)
		return FALSE;
	for (i = 0; i < PS_NUM_METAS; i++) {
		db = m + PS_META_DBS_OFS + i * PS_DB_SIZE;
		meta_r->dbs[i].flags = ps_u16(db + PS_DB_FLAGS_OFS);
		meta_r->dbs[i].depth = ps_u16(db + PS_DB_DEPTH_OFS);
		meta_r->dbs[i].entries = ps_word(db + PS_DB_ENTRIES_OFS);
		meta_r->dbs[i].root = ps_word(db + PS_DB_ROOT_OFS);
	}
	meta_r->pgno = pgno;
	/* mm_psize is the free DB's md_pad */
	meta_r->page_size = ps_u32(m + PS_META_DBS_OFS);
	meta_r->last_pg = ps_word(m + PS_META_LAST_PG_OFS);
	meta_r->txnid = ps_word(m + PS_META_TXNID_OFS);
	/* transaction N writes meta page N % 2; both start at 0 */
	return (meta_r->txnid % 2 == pgno || meta_r->txnid == 0) &&
		meta_r->page_size >= PS_MIN_PAGE_SIZE &&
		meta_r->page_size <= PS_MAX_PAGE_SIZE &&
		(meta_r->page_size & (meta_r->page_size - 1)) == 0 &&
		(pgno == 0 || meta_r->page_size == offset) &&
		meta_r->last_pg >= PS_NUM_METAS - 1 &&
		meta_r->last_pg != PS_P_INVALID;
}

/* NULL if the meta's main DB root is a valid page. Only the main DB
   decides: with the older meta the last transaction is lost, while a
   damaged free list only makes its pages go through the orphan scan. */
static const char *
ps_meta_check_root(int fd, uint64_t file_size, const struct ps_meta *meta)
{
	uint64_t root = meta->dbs[PS_MAIN_DBI].root;
	unsigned char *buf;
	struct ps_page page;
	const char *reason;

	if ((meta->dbs[PS_MAIN_DBI].flags & ~PS_DB_VALID_FLAGS) != 0)
		return "invalid main DB flags";
	if (root == PS_P_INVALID)
		return NULL;
	if (root < PS_NUM_METAS || root > meta->last_pg) {
		return t_strdup_printf("main DB root page number %"PRIu64
				       " out of range", root);
	}
	if (root >= file_size / meta->page_size) {
		return t_strdup_printf("main DB root page %"PRIu64
				       " beyond the end of the file", root);
	}
	buf = t_malloc_no0(meta->page_size);
	if ((reason = ps_pread(fd, buf, meta->page_size,
			       root * meta->page_size)) != NULL ||
	    !ps_page_check(meta->page_size, root, buf, &page, &reason) ||
	    page.type == PS_P_OVERFLOW) {
		if (reason == NULL)
			reason = "overflow page";
		return t_strdup_printf("main DB root page %"PRIu64": %s",
				       root, reason);
	}
	return NULL;
}

/* Both meta pages; meta 1 is one page after meta 0, and when meta 0 is
   damaged its page size is found by trying each possible one. */
static unsigned int
ps_metas_read(int fd, struct ps_meta metas_r[PS_NUM_METAS])
{
	unsigned int count = 0, size;
	bool valid0;

	if ((valid0 = ps_meta_parse(fd, 0, 0, &metas_r[0])))
		count++;
	if (valid0 && ps_meta_parse(fd, 1, metas_r[0].page_size, &metas_r[1])) {
		count++;
	} else {
		for (size = PS_MIN_PAGE_SIZE; size <= PS_MAX_PAGE_SIZE;
		     size *= 2) {
			if (ps_meta_parse(fd, 1, size, &metas_r[count])) {
				count++;
				break;
			}
		}
	}
	/* newest first */
	if (count == 2 && metas_r[1].txnid > metas_r[0].txnid) {
		struct ps_meta tmp = metas_r[0];
		metas_r[0] = metas_r[1];
		metas_r[1] = tmp;
	}
	return count;
}

int lmdb_pagescan_open(const char *path, struct lmdb_pagescan **scan_r,
		       const char **error_r)
{
	struct lmdb_pagescan *scan;
	struct ps_meta metas[PS_NUM_METAS];
	const char *error = NULL, *reason = NULL;
	unsigned int count, i;
	struct stat st;
	int fd;

	/* O_NONBLOCK: a FIFO in place of the file must not block us */
	fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
	if (fd == -1) {
		*error_r = t_strdup_printf("open(%s) failed: %m", path);
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		*error_r = t_strdup_printf("fstat(%s) failed: %m", path);
		i_close_fd(&fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		*error_r = t_strdup_printf("%s: not a regular file", path);
		i_close_fd(&fd);
		return -1;
	}
	if ((count = ps_metas_read(fd, metas)) == 0) {
		*error_r = t_strdup_printf("%s: no valid LMDB meta page", path);
		i_close_fd(&fd);
		return -1;
	}
	if (count == 1) {
		reason = t_strdup_printf("meta page %u is invalid",
					 1 - metas[0].pgno);
	}
	/* the newest whose main DB root is a valid page, else the newest */
	for (i = 0; i < count; i++) {
		/* pages are only added at the end: last_pg never shrinks */
		if (i == 0 && count > 1 && metas[0].last_pg < metas[1].last_pg)
			error = "last page number below the older meta page's";
		else
			error = ps_meta_check_root(fd, st.st_size, &metas[i]);
		if (error == NULL)
			break;
		if (i == 0 && count > 1) {
			reason = t_strdup_printf("meta page %u: %s",
						 metas[0].pgno, error);
		}
	}
	if (i == count) {
		/* neither is usable: the orphan scan still finds leaves */
		i = 0;
		if (count > 1)
			reason = NULL;
	}

	scan = i_new(struct lmdb_pagescan, 1);
	scan->fd = fd;
	scan->meta = metas[i];
	scan->fallback_reason = i_strdup(reason);
	scan->page_size = scan->meta.page_size;
	scan->file_pages = (uint64_t)st.st_size / scan->page_size;
	scan->npages = I_MIN(scan->meta.last_pg + 1, scan->file_pages);
	if (scan->npages > (uint32_t)-1) {
		*error_r = t_strdup_printf("%s: too many pages for the scanner",
					   path);
		lmdb_pagescan_close(&scan);
		return -1;
	}
	ps_stats_init(scan);
	*scan_r = scan;
	return 0;
}

static void ps_run_free(struct lmdb_pagescan *scan)
{
	unsigned int i;

	for (i = 0; i < PS_MAX_DEPTH; i++)
		i_free(scan->bufs[i]);
	i_free(scan->state);
	i_free(scan->used);
	i_free(scan->value_buf);
	scan->value_buf_size = 0;
}

void lmdb_pagescan_close(struct lmdb_pagescan **_scan)
{
	struct lmdb_pagescan *scan = *_scan;

	if (scan == NULL)
		return;
	*_scan = NULL;
	ps_run_free(scan);
	pool_unref(&scan->pool);
	if (array_is_created(&scan->dbis))
		array_free(&scan->dbis);
	if (array_is_created(&scan->damages))
		array_free(&scan->damages);
	i_close_fd(&scan->fd);
	i_free(scan->fallback_reason);
	i_free(scan);
}

static void ps_stats_init(struct lmdb_pagescan *scan)
{
	struct lmdb_pagescan_stats *stats = &scan->stats;

	i_zero(stats);
	stats->page_size = scan->page_size;
	stats->meta_pgno = scan->meta.pgno;
	stats->txnid = scan->meta.txnid;
	stats->meta_fallback_reason = scan->fallback_reason;
	stats->last_pgno = scan->meta.last_pg;
	stats->file_pages = scan->file_pages;
	stats->pages_total = scan->npages;
	if (scan->meta.last_pg >= scan->file_pages)
		stats->pages_missing =
			scan->meta.last_pg + 1 - scan->file_pages;
}

/* Every page ends in exactly one state: count them. */
static void ps_stats_count_pages(struct lmdb_pagescan *scan)
{
	struct lmdb_pagescan_stats *stats = &scan->stats;
	uint64_t pgno;

	for (pgno = 0; pgno < scan->npages; pgno++) {
		switch ((enum ps_state)scan->state[pgno]) {
		case PS_META:
			stats->pages_meta++;
			break;
		case PS_TREE:
			stats->pages_tree++;
			break;
		case PS_OVERFLOW:
			stats->pages_overflow++;
			break;
		case PS_FREE:
			stats->pages_free++;
			break;
		case PS_ORPHAN_LEAF:
			stats->orphan_leaves++;
			break;
		case PS_ORPHAN_BRANCH:
			stats->orphan_branches++;
			break;
		case PS_ORPHAN_RUN_HEAD:
		case PS_ORPHAN_RUN_USED:
		case PS_ORPHAN_RUN:
			stats->orphan_overflow_pages++;
			break;
		default:
			stats->pages_unreadable++;
			break;
		}
	}
}

static void ps_run_init(struct lmdb_pagescan *scan)
{
	unsigned int i;

	ps_run_free(scan);
	pool_unref(&scan->pool);
	scan->pool = pool_alloconly_create("lmdb pagescan", 4096);
	ps_stats_init(scan);
	scan->state = i_malloc(scan->npages + 1);
	scan->used = i_new(uint32_t, scan->npages + 1);
	for (i = 0; i < PS_MAX_DEPTH; i++)
		scan->bufs[i] = i_malloc(scan->page_size);
	p_array_init(&scan->trees, scan->pool, 8);
	if (array_is_created(&scan->dbis)) {
		array_clear(&scan->dbis);
		array_clear(&scan->damages);
	} else {
		i_array_init(&scan->dbis, 8);
		i_array_init(&scan->damages, 16);
	}
	for (i = 0; i < PS_NUM_METAS && i < scan->npages; i++)
		ps_set_state(scan, i, PS_META);
}

#undef lmdb_pagescan_run
int lmdb_pagescan_run(struct lmdb_pagescan *scan,
		      lmdb_pagescan_callback_t *callback, void *context,
		      const char **error_r)
{
	struct ps_tree *const *treep, *tree;
	struct ps_page page;
	const uint64_t *pgnop;
	unsigned int i, idx;
	int ret = 0;

	ps_run_init(scan);
	scan->callback = callback;
	scan->context = context;

	/* 1: walk every tree, marking its branch and leaf pages; the main
	   DB's leaves add the named DBIs' trees while it is walked */
	(void)ps_tree_add(scan, LMDB_PAGESCAN_TREE_FREE, NULL,
			  scan->meta.dbs[PS_FREE_DBI].root, 0, scan->meta.pgno);
	(void)ps_tree_add(scan, LMDB_PAGESCAN_TREE_MAIN, "",
			  scan->meta.dbs[PS_MAIN_DBI].root,
			  scan->meta.dbs[PS_MAIN_DBI].flags, scan->meta.pgno);
	for (idx = 0; idx < array_count(&scan->trees); idx++) {
		tree = array_idx_elem(&scan->trees, idx);
		if (tree->root != PS_P_INVALID) {
			ps_walk(scan, tree, tree->root, tree->parent_pgno, 0,
				NULL, NULL);
		}
	}
	/* 2: free pages, now that every page a tree uses is known */
	ps_free_list(scan, array_idx_elem(&scan->trees, 0));
	/* 3: the trees' records, their overflow runs checked against all
	   the pages in use */
	array_foreach(&scan->trees, treep) {
		tree = *treep;
		if (tree->kind == LMDB_PAGESCAN_TREE_FREE)
			continue;
		array_foreach(&tree->leaves, pgnop) {
			if (!ps_leaf_reread(scan, tree, *pgnop, &page))
				continue;
			for (i = 0; i < page.nkeys && ret == 0; i++)
				ret = ps_yield(scan, tree, &page, i);
			if (ret < 0)
				break;
		}
		if (ret < 0)
			break;
	}
	/* 4: leaves no tree reached */
	if (ret == 0)
		ret = ps_orphans(scan);
	ps_stats_count_pages(scan);
	if (ret < 0) {
		*error_r = "scan stopped by the callback";
		return -1;
	}
	return 0;
}

const struct lmdb_pagescan_stats *
lmdb_pagescan_get_stats(struct lmdb_pagescan *scan)
{
	return &scan->stats;
}

const struct lmdb_pagescan_damage *
lmdb_pagescan_get_damages(struct lmdb_pagescan *scan, unsigned int *count_r)
{
	if (!array_is_created(&scan->damages)) {
		*count_r = 0;
		return NULL;
	}
	return array_get(&scan->damages, count_r);
}

const struct lmdb_pagescan_dbi *
lmdb_pagescan_get_dbis(struct lmdb_pagescan *scan, unsigned int *count_r)
{
	if (!array_is_created(&scan->dbis)) {
		*count_r = 0;
		return NULL;
	}
	return array_get(&scan->dbis, count_r);
}
