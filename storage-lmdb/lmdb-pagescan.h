#ifndef LMDB_PAGESCAN_H
#define LMDB_PAGESCAN_H

/* A reader of LMDB 0.9's data.mdb that trusts nothing in the file, for
   salvaging a damaged environment. LMDB's own code follows page numbers and
   sizes from the file and may crash or loop on damage, and its pages carry
   no checksums; this scanner bounds every offset, size and page number,
   reads with pread() (a file truncated under it cannot SIGBUS), accepts
   each page once (no cycles) and limits tree depth to LMDB's own 32, so
   any bytes give a finite scan (about linear in the file's size) and no
   invalid memory access. Memory: about 5 bytes per page of the file.

   Meta page: the one with the highest txnid, unless it is invalid (magic,
   version, page size, txnid parity: transaction N writes page N % 2), its
   last page number is below the other's (pages are only ever added) or
   its main DB's root is not a valid page; then the other one.

   The scan, in order:
   1. walks the main DB, every named DBI found in it and the free list DB
      from their roots, checking each page (its own page number, type,
      offsets, node sizes, key order, keys within the parent's range);
   2. reads the free list (a page both in a tree and listed free stays in
      the tree, and is reported);
   3. yields every record of the trees (source TREE), reading each
      F_BIGDATA value whole from its overflow run, which must not overlap
      pages in use;
   4. parses every page up to the meta's last page that no tree reached,
      that is not free and not in an overflow run: valid leaf pages yield
      their records as source ORPHAN (typically the leaves under a damaged
      branch page). Unreached overflow runs are claimed first by their
      header pages, so a value's raw bytes (mail content) are never parsed
      as pages, unless that header page is damaged too.

   What it cannot tell:
   - whether a record's bytes are intact: LMDB has no checksums, so a
     damaged value in a valid page is yielded as it is. Our records carry
     their own checksums for this reason; the caller's decoder decides.
   - whether an ORPHAN page is current: a page freed by an older
     transaction looks like an orphan when the free list itself is damaged,
     and then yields old (possibly deleted) records. When the same key
     comes from TREE and ORPHAN, the TREE one is the current one.
   - which DBI an ORPHAN record belongs to: the caller classifies it by its
     key and record format (dbi_name is NULL). Named DBI records in
     orphaned main DB leaves are skipped: their trees' leaves are orphans.
   - anything newer than the chosen meta page: if the newest meta is
     damaged, the scan uses the previous transaction's trees, and the pages
     the newest transaction wrote are free or beyond last_pg there.
   - a damaged pointer to a valid page whose keys happen to fit the
     parent's range: that page is attributed to the wrong parent (possibly
     another DBI) and its real parent reports "page reached twice".

   Supported: the LMDB 0.9 format of the host (pgno_t = size_t, host byte
   order, PAGEBASE 0), named DBIs with the default, REVERSEKEY or
   INTEGERKEY key order; DUPSORT data is reported as damage, not read. */

#define LMDB_PAGESCAN_NO_PGNO ((uint64_t)-1)
/* Damage entries kept in the list; damage_count counts them all */
#define LMDB_PAGESCAN_MAX_DAMAGES 10000
/* Larger values are reported as damage instead of being read */
#define LMDB_PAGESCAN_MAX_VALUE_SIZE (1024 * 1024 * 1024)

enum lmdb_pagescan_source {
	/* reached from the meta page's trees */
	LMDB_PAGESCAN_SOURCE_TREE,
	/* from a valid leaf page that no tree reached */
	LMDB_PAGESCAN_SOURCE_ORPHAN,
};

struct lmdb_pagescan_record {
	enum lmdb_pagescan_source source;
	/* TREE: the named DBI, or "" for a plain record of the main DB (LMDB
	   refuses empty keys, so no DBI has that name); ORPHAN: NULL */
	const char *dbi_name;
	/* valid only during the callback */
	const unsigned char *key, *value;
	size_t key_size, value_size;
	/* the leaf page and the node's index in it */
	uint64_t pgno;
	unsigned int node_idx;
	/* first page of the value's overflow run, or LMDB_PAGESCAN_NO_PGNO
	   for a value stored in the leaf */
	uint64_t overflow_pgno;
};

enum lmdb_pagescan_tree {
	/* found by the scan of unreached pages */
	LMDB_PAGESCAN_TREE_NONE,
	LMDB_PAGESCAN_TREE_FREE,
	LMDB_PAGESCAN_TREE_MAIN,
	LMDB_PAGESCAN_TREE_NAMED,
};

struct lmdb_pagescan_damage {
	/* the page at fault (or referenced) */
	uint64_t pgno;
	/* the page that referenced it (the meta page for a root), or
	   LMDB_PAGESCAN_NO_PGNO */
	uint64_t parent_pgno;
	enum lmdb_pagescan_tree tree;
	/* TREE_NAMED: the DBI, else NULL */
	const char *dbi_name;
	/* a static string */
	const char *reason;
};

struct lmdb_pagescan_dbi {
	const char *name;
	/* from the DBI's record in the main DB */
	uint64_t root_pgno, entries;
	unsigned int depth, flags;
	/* records yielded from its tree */
	uint64_t records;
};

struct lmdb_pagescan_stats {
	unsigned int page_size;
	/* the meta page used (0 or 1) and its transaction */
	unsigned int meta_pgno;
	uint64_t txnid;
	/* NULL, or why the newest meta page was not used */
	const char *meta_fallback_reason;
	/* the meta's last page number, and whole pages in the file */
	uint64_t last_pgno, file_pages;
	/* pages scanned: min(last_pgno + 1, file_pages) */
	uint64_t pages_total;
	/* last_pgno + 1 - file_pages when the file is shorter */
	uint64_t pages_missing;

	/* of pages_total: */
	uint64_t pages_meta, pages_tree, pages_overflow, pages_free;
	uint64_t orphan_leaves, orphan_branches, orphan_overflow_pages;
	/* damaged: invalid where a tree reached them, or unreached and no
	   valid page */
	uint64_t pages_unreadable;

	uint64_t records_tree, records_orphan;
	/* records and free list entries left out because they were damaged */
	uint64_t records_damaged;
	uint64_t damage_count;
};

struct lmdb_pagescan;

/* Return 0 to go on, -1 to stop the scan. It must not use the scan. */
typedef int lmdb_pagescan_callback_t(const struct lmdb_pagescan_record *record,
				     void *context);

/* Open a data.mdb file and choose its meta page. Fails (-1, *error_r) only
   when the file can't be read or neither meta page is valid. */
int lmdb_pagescan_open(const char *path, struct lmdb_pagescan **scan_r,
		       const char **error_r);
void lmdb_pagescan_close(struct lmdb_pagescan **scan);

/* Scan from the start: yields every TREE record (DBI by DBI, in key
   order), then every ORPHAN record (by page number). Damage is counted and
   listed, never a failure: returns -1 only when the callback stopped the
   scan. */
int lmdb_pagescan_run(struct lmdb_pagescan *scan,
		      lmdb_pagescan_callback_t *callback, void *context,
		      const char **error_r);
/* The type check without Dovecot's usual "(char *)context - check": that
   is arithmetic on NULL when a caller has no context (undefined, UBSan
   reports it); both branches are the same pointer. */
#define lmdb_pagescan_run(scan, callback, context, error_r) \
	lmdb_pagescan_run(scan, (lmdb_pagescan_callback_t *)(callback), \
		(CALLBACK_TYPECHECK(callback, \
			int (*)(const struct lmdb_pagescan_record *, \
				typeof(context))) ? \
		 (void *)(context) : (void *)(context)), error_r)

/* These are valid until the next run or close. Before a run, only the
   stats' fields up to pages_missing are set. */
const struct lmdb_pagescan_stats *
lmdb_pagescan_get_stats(struct lmdb_pagescan *scan);
/* Damage found (the first LMDB_PAGESCAN_MAX_DAMAGES), in scan order */
const struct lmdb_pagescan_damage *
lmdb_pagescan_get_damages(struct lmdb_pagescan *scan, unsigned int *count_r);
/* Named DBIs found in the main DB, in walk (key) order */
const struct lmdb_pagescan_dbi *
lmdb_pagescan_get_dbis(struct lmdb_pagescan *scan, unsigned int *count_r);

#endif
