/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "lmdb-pagescan-private.h"

#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>

/* The scanner's entry points: the meta page to trust, open and close, and
   a run's four passes (trees, free pages, records, unreached pages). */

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
	if (lmdb_ps_pread(fd, buf, sizeof(buf), offset) != NULL ||
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
	if ((reason = lmdb_ps_pread(fd, buf, meta->page_size,
				    root * meta->page_size)) != NULL ||
	    !lmdb_ps_page_check(meta->page_size, root, buf, &page, &reason) ||
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
		lmdb_ps_set_state(scan, i, PS_META);
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
	(void)lmdb_ps_tree_add(scan, LMDB_PAGESCAN_TREE_FREE, NULL,
			       scan->meta.dbs[PS_FREE_DBI].root, 0,
			       scan->meta.pgno);
	(void)lmdb_ps_tree_add(scan, LMDB_PAGESCAN_TREE_MAIN, "",
			       scan->meta.dbs[PS_MAIN_DBI].root,
			       scan->meta.dbs[PS_MAIN_DBI].flags,
			       scan->meta.pgno);
	for (idx = 0; idx < array_count(&scan->trees); idx++) {
		tree = array_idx_elem(&scan->trees, idx);
		if (tree->root != PS_P_INVALID) {
			lmdb_ps_walk(scan, tree, tree->root,
				     tree->parent_pgno, 0, NULL, NULL);
		}
	}
	/* 2: free pages, now that every page a tree uses is known */
	lmdb_ps_free_list(scan, array_idx_elem(&scan->trees, 0));
	/* 3: the trees' records, their overflow runs checked against all
	   the pages in use */
	array_foreach(&scan->trees, treep) {
		tree = *treep;
		if (tree->kind == LMDB_PAGESCAN_TREE_FREE)
			continue;
		array_foreach(&tree->leaves, pgnop) {
			if (!lmdb_ps_leaf_reread(scan, tree, *pgnop, &page))
				continue;
			for (i = 0; i < page.nkeys && ret == 0; i++)
				ret = lmdb_ps_yield(scan, tree, &page, i);
			if (ret < 0)
				break;
		}
		if (ret < 0)
			break;
	}
	/* 4: leaves no tree reached */
	if (ret == 0)
		ret = lmdb_ps_orphans(scan);
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
