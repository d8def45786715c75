/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "lmdb-pagescan-private.h"

/* What the pages hold: records handed to the callback, the free page
   lists, and leaves no tree reached (orphans). */

/* Records */

int
lmdb_ps_yield(struct lmdb_pagescan *scan, struct ps_tree *tree,
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
		lmdb_ps_damage(scan, tree, page->pgno, LMDB_PAGESCAN_NO_PGNO,
			       "sub-database or duplicate data not supported");
		return 0;
	}
	rec.overflow_pgno = LMDB_PAGESCAN_NO_PGNO;
	rec.value_size = ps_node_dsize(node);
	if ((nflags & PS_F_BIGDATA) != 0) {
		rec.overflow_pgno = ps_word(key.data + key.size);
		if (!lmdb_ps_overflow_read(scan, rec.overflow_pgno,
					   rec.value_size, tree == NULL,
					   &rec.value, &reason)) {
			scan->stats.records_damaged++;
			lmdb_ps_damage(scan, tree, rec.overflow_pgno,
				       page->pgno, reason);
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
		lmdb_ps_damage(scan, tree, leaf_pgno, LMDB_PAGESCAN_NO_PGNO,
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
		lmdb_ps_damage(scan, tree, leaf_pgno, LMDB_PAGESCAN_NO_PGNO,
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
		lmdb_ps_damage(scan, tree, page->pgno, LMDB_PAGESCAN_NO_PGNO,
			       "invalid free list record");
		scan->stats.records_damaged++;
		return;
	}
	if ((nflags & PS_F_BIGDATA) == 0)
		value = key.data + key.size;
	else if (!lmdb_ps_overflow_read(scan, ps_word(key.data + key.size),
					size, FALSE, &value, &reason)) {
		lmdb_ps_damage(scan, tree, ps_word(key.data + key.size),
			       page->pgno, reason);
		scan->stats.records_damaged++;
		return;
	}
	ps_free_list_add(scan, tree, page->pgno, value, size, pending);
}

/* Re-read a leaf collected by the walk: the file may change under us. */
bool
lmdb_ps_leaf_reread(struct lmdb_pagescan *scan, struct ps_tree *tree,
		    uint64_t pgno, struct ps_page *page_r)
{
	const char *reason;

	if ((reason = lmdb_ps_pread(scan->fd, scan->bufs[0], scan->page_size,
				    pgno * scan->page_size)) == NULL &&
	    lmdb_ps_page_check(scan->page_size, pgno, scan->bufs[0],
			       page_r, &reason) &&
	    page_r->type == PS_P_LEAF)
		return TRUE;
	lmdb_ps_damage(scan, tree, pgno, LMDB_PAGESCAN_NO_PGNO,
		       "page changed during the scan");
	return FALSE;
}

void lmdb_ps_free_list(struct lmdb_pagescan *scan, struct ps_tree *tree)
{
	struct ps_page page;
	const uint64_t *pgnop;
	uint8_t *pending = i_malloc(scan->npages / 8 + 1);
	uint64_t pgno;
	unsigned int i;

	array_foreach(&tree->leaves, pgnop) {
		if (!lmdb_ps_leaf_reread(scan, tree, *pgnop, &page))
			continue;
		for (i = 0; i < page.nkeys; i++)
			ps_free_list_node(scan, tree, &page, i, pending);
	}
	/* a page both in a tree and listed free stays in the tree */
	for (pgno = 0; pgno < scan->npages; pgno++) {
		if ((pending[pgno / 8] & (1 << (pgno % 8))) == 0)
			continue;
		if (PS_STATE_IS_USED(scan->state[pgno])) {
			lmdb_ps_damage(scan, tree, pgno, LMDB_PAGESCAN_NO_PGNO,
				       "page in use is listed as free");
		} else {
			lmdb_ps_set_state(scan, pgno, PS_FREE);
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
		    lmdb_ps_pread(scan->fd, hdr, sizeof(hdr),
				  pgno * scan->page_size) != NULL ||
		    ps_word(hdr) != pgno ||
		    (ps_u16(hdr + PS_PAGE_FLAGS_OFS) & ~PS_P_DIRTY) !=
		    PS_P_OVERFLOW)
			continue;
		npages = ps_u32(hdr + PS_PAGE_PAGES_OFS);
		if (npages == 0 || npages > scan->npages - pgno ||
		    lmdb_ps_used_before(scan, pgno + npages) !=
		    lmdb_ps_used_before(scan, pgno))
			continue;
		scan->state[pgno] = PS_ORPHAN_RUN_HEAD;
		for (i = 1; i < npages; i++)
			scan->state[pgno + i] = PS_ORPHAN_RUN;
		pgno += npages - 1;
	}
}

int lmdb_ps_orphans(struct lmdb_pagescan *scan)
{
	static ps_cmp_func_t *const cmps[] = {
		lmdb_ps_cmp_memn, lmdb_ps_cmp_int, lmdb_ps_cmp_memnr
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
		if ((reason = lmdb_ps_pread(scan->fd, scan->bufs[0],
					    scan->page_size,
					    pgno * scan->page_size)) == NULL &&
		    lmdb_ps_page_check(scan->page_size, pgno, scan->bufs[0],
				       &page, &reason)) {
			for (i = 0; i < N_ELEMENTS(cmps); i++) {
				if (lmdb_ps_page_sorted(&page, cmps[i]))
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
				lmdb_ps_damage(scan, NULL, pgno,
					       LMDB_PAGESCAN_NO_PGNO, reason);
			}
			scan->state[pgno] = PS_BAD;
		} else if (page.type == PS_P_BRANCH) {
			scan->state[pgno] = PS_ORPHAN_BRANCH;
		} else {
			scan->state[pgno] = PS_ORPHAN_LEAF;
			for (i = 0; i < page.nkeys; i++) {
				if (lmdb_ps_yield(scan, NULL, &page, i) < 0)
					return -1;
			}
		}
	}
	return 0;
}
