/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "read-full.h"
#include "lmdb-pagescan-private.h"

/* One page at a time: LMDB's key orders, reading, a page's structure,
   the states pages end in, damage reports, overflow runs. */

/* Key orders of mdb.c: mdb_cmp_memn, mdb_cmp_memnr, mdb_cmp_cint (for
   equal sizes: bytes from the most significant end) */
int lmdb_ps_cmp_memn(const struct ps_key *a, const struct ps_key *b)
{
	int diff = memcmp(a->data, b->data, I_MIN(a->size, b->size));

	if (diff != 0)
		return diff;
	return a->size < b->size ? -1 : (a->size > b->size ? 1 : 0);
}

int lmdb_ps_cmp_memnr(const struct ps_key *a, const struct ps_key *b)
{
	size_t i, len = I_MIN(a->size, b->size);

	for (i = 1; i <= len; i++) {
		if (a->data[a->size - i] != b->data[b->size - i])
			return a->data[a->size - i] - b->data[b->size - i];
	}
	return a->size < b->size ? -1 : (a->size > b->size ? 1 : 0);
}

int lmdb_ps_cmp_int(const struct ps_key *a, const struct ps_key *b)
{
	if (a->size != b->size)
		return a->size < b->size ? -1 : 1;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return lmdb_ps_cmp_memn(a, b);
#else
	return lmdb_ps_cmp_memnr(a, b);
#endif
}

ps_cmp_func_t *lmdb_ps_db_cmp(uint16_t flags)
{
	return (flags & PS_DB_REVERSEKEY) != 0 ? lmdb_ps_cmp_memnr :
		(flags & PS_DB_INTEGERKEY) != 0 ? lmdb_ps_cmp_int :
		lmdb_ps_cmp_memn;
}

/* File access */

const char *
lmdb_ps_pread(int fd, void *buf, size_t size, uint64_t offset)
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

bool
lmdb_ps_page_check(unsigned int page_size, uint64_t pgno,
		   const unsigned char *buf, struct ps_page *page_r,
		   const char **reason_r)
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

bool lmdb_ps_page_sorted(const struct ps_page *page, ps_cmp_func_t *cmp)
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
bool
lmdb_ps_page_in_range(const struct ps_page *page, ps_cmp_func_t *cmp,
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

void lmdb_ps_set_state(struct lmdb_pagescan *scan, uint64_t pgno,
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
uint64_t lmdb_ps_used_before(struct lmdb_pagescan *scan, uint64_t end)
{
	uint64_t sum = 0;

	for (; end > 0; end &= end - 1)
		sum += scan->used[end];
	return sum;
}

void lmdb_ps_reject(struct lmdb_pagescan *scan, uint64_t pgno)
{
	uint8_t state = scan->state[pgno];

	scan->state[pgno] = state < PS_REJECTED ? PS_REJECTED :
		I_MIN(state + 1, PS_REJECTED + PS_MAX_REJECTS);
}

void
lmdb_ps_damage(struct lmdb_pagescan *scan, const struct ps_tree *tree,
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
bool
lmdb_ps_overflow_read(struct lmdb_pagescan *scan, uint64_t pgno, uint64_t size,
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
	if ((*reason_r = lmdb_ps_pread(scan->fd, hdr, sizeof(hdr),
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
	if (!orphan && lmdb_ps_used_before(scan, pgno + needed) !=
	    lmdb_ps_used_before(scan, pgno)) {
		*reason_r = "overflow run overlaps pages in use";
		goto bad;
	}
	ps_value_buf_alloc(scan, I_MAX(size, 1));
	*reason_r = lmdb_ps_pread(scan->fd, scan->value_buf, size,
				  pgno * scan->page_size + PS_PAGEHDRSZ);
	if (*reason_r != NULL)
		goto bad;
	if (orphan) {
		scan->state[pgno] = PS_ORPHAN_RUN_USED;
	} else {
		for (i = 0; i < npages; i++) {
			if (!PS_STATE_IS_USED(scan->state[pgno + i]))
				lmdb_ps_set_state(scan, pgno + i, PS_OVERFLOW);
		}
	}
	*value_r = scan->value_buf;
	return TRUE;
bad:
	scan->state[pgno] = orphan ? PS_ORPHAN_RUN_USED : PS_BAD;
	return FALSE;
}
