/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "lmdb-pagescan-private.h"

/* Walking the B-trees from the meta page: the free DB, the main DB and
   the named DBIs it holds, each page checked against its parent. */

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

void
lmdb_ps_walk(struct lmdb_pagescan *scan, struct ps_tree *tree, uint64_t pgno,
	     uint64_t parent_pgno, unsigned int depth,
	     const struct ps_key *lo, const struct ps_key *hi)
{
	struct ps_page page;
	struct ps_key key, next_key;
	const char *reason;
	unsigned int i;

	if ((reason = ps_ref_check(scan, pgno)) != NULL) {
		if (reason[0] != '\0')
			lmdb_ps_damage(scan, tree, pgno, parent_pgno, reason);
		return;
	}
	if (depth >= PS_MAX_DEPTH) {
		lmdb_ps_damage(scan, tree, pgno, parent_pgno,
			       "tree deeper than LMDB allows");
		return;
	}
	if ((reason = lmdb_ps_pread(scan->fd, scan->bufs[depth],
				    scan->page_size,
				    pgno * scan->page_size)) != NULL ||
	    !lmdb_ps_page_check(scan->page_size, pgno, scan->bufs[depth],
				&page, &reason)) {
		scan->state[pgno] = PS_BAD;
		lmdb_ps_damage(scan, tree, pgno, parent_pgno, reason);
		return;
	}
	if (page.type == PS_P_OVERFLOW)
		reason = "overflow page in place of a branch or leaf page";
	else if (!lmdb_ps_page_sorted(&page, tree->cmp))
		reason = "keys out of order";
	else if (!lmdb_ps_page_in_range(&page, tree->cmp, lo, hi))
		reason = "keys outside the parent's range";
	if (reason != NULL) {
		/* valid in itself: another tree or the orphan scan may
		   still use it */
		lmdb_ps_reject(scan, pgno);
		lmdb_ps_damage(scan, tree, pgno, parent_pgno, reason);
		return;
	}
	lmdb_ps_set_state(scan, pgno, PS_TREE);
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
		lmdb_ps_walk(scan, tree, ps_node_child(ps_node(&page, i)), pgno,
			     depth + 1, i == 0 ? lo : &key,
			     i + 1 < page.nkeys ? &next_key : hi);
	}
}

struct ps_tree *
lmdb_ps_tree_add(struct lmdb_pagescan *scan, enum lmdb_pagescan_tree kind,
		 const char *name, uint64_t root, uint16_t flags,
		 uint64_t parent_pgno)
{
	struct ps_tree *tree = p_new(scan->pool, struct ps_tree, 1);

	tree->kind = kind;
	tree->name = name;
	tree->root = root;
	tree->parent_pgno = parent_pgno;
	tree->cmp = kind == LMDB_PAGESCAN_TREE_FREE ? lmdb_ps_cmp_int :
		lmdb_ps_db_cmp(flags);
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
			lmdb_ps_damage(scan, main_tree, page->pgno,
				       LMDB_PAGESCAN_NO_PGNO,
				       "invalid named DBI record");
			continue;
		}
		if (array_count(&scan->dbis) >= PS_MAX_DBIS) {
			lmdb_ps_damage(scan, main_tree, page->pgno,
				       LMDB_PAGESCAN_NO_PGNO,
				       "too many named DBIs");
			return;
		}
		/* keys are sorted within a page, but a damaged tree can hold
		   a name twice: keep the first */
		name = p_strndup(scan->pool, key.data, key.size);
		if (ps_dbi_find(scan, name)) {
			lmdb_ps_damage(scan, main_tree, page->pgno,
				       LMDB_PAGESCAN_NO_PGNO,
				       "named DBI found twice");
			continue;
		}
		flags = ps_u16(db + PS_DB_FLAGS_OFS);
		root = ps_word(db + PS_DB_ROOT_OFS);
		tree = lmdb_ps_tree_add(scan, LMDB_PAGESCAN_TREE_NAMED, name,
					root, flags, page->pgno);
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
