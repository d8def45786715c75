/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The raw page scanner (lmdb-pagescan.c) over any bytes as a data.mdb
   file: the input is the whole file, so a seed is a real data.mdb and a
   crashing input can be handed to the scanner's users as it is. It is
   written to a file in a private directory (tmpfs when there is one):
   the scanner reads with pread(). Checked besides "no crash, no
   out-of-bounds read, no hang" (libFuzzer's -timeout):

   - every page is counted in exactly one state;
   - the records yielded are those counted, TREE ones name their DBI and
     ORPHAN ones don't, page numbers are within the scanned pages, keys
     within LMDB's 511 bytes, each named DBI's count adds up;
   - the damage list is capped and counted;
   - a second scan of the same file yields the same records and stats;
   - a callback that stops the scan stops it, and a scan after that is
     whole again.

   Most bytes of a data.mdb are record contents, where a mutation only
   changes what a record says: a custom mutator spends two thirds of its
   mutations on the structure instead (page headers, node headers, branch
   pointers, meta page fields, whole pages copied over others), with the
   values that matter there (page numbers in and just out of range,
   offsets at the page's ends, off by one), and leaves the rest to
   libFuzzer's own mutations. */

#include "lib.h"
#include "unlink-directory.h"
#include "write-full.h"
#include "lmdb-pagescan.h"
#include "fuzz-common.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
			       unsigned int seed);

struct scan_result {
	uint64_t tree, orphan, main_records;
	/* FNV-1a over every record's fields and bytes */
	uint64_t hash;
	/* stop the scan at this record (0 = never) */
	uint64_t stop_at, seen;
	uint64_t pages_total;
};

static char *fuzz_dir, *fuzz_path;

static void fuzz_cleanup(void)
{
	const char *error;

	if (fuzz_dir != NULL &&
	    unlink_directory(fuzz_dir, UNLINK_DIRECTORY_FLAG_RMDIR,
			     &error) < 0)
		i_error("unlink_directory(%s) failed: %s", fuzz_dir, error);
}

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	fuzz_init();
	fuzz_dir = i_strdup_printf("%s/fuzz-lmdb-pagescan.XXXXXX", base);
	if (mkdtemp(fuzz_dir) == NULL)
		i_fatal("mkdtemp(%s) failed: %m", fuzz_dir);
	fuzz_path = i_strdup_printf("%s/data.mdb", fuzz_dir);
	atexit(fuzz_cleanup);
	return 0;
}

/* --- the structure-aware mutator (LMDB 0.9, 64-bit little-endian) --- */

#define M_PAGEHDRSZ 16
#define M_META_PSIZE_OFS 40
/* offsets in a meta page of the fields worth changing, and their sizes */
static const struct {
	unsigned int ofs, size;
} meta_fields[] = {
	{ 40, 4 },	/* free DB pad: the page size */
	{ 44, 2 }, { 46, 2 },	/* free DB flags, depth */
	{ 72, 8 }, { 80, 8 },	/* free DB entries, root */
	{ 92, 2 }, { 94, 2 },	/* main DB flags, depth */
	{ 120, 8 }, { 128, 8 },	/* main DB entries, root */
	{ 136, 8 },	/* last page */
	{ 144, 8 },	/* txnid */
	{ 16, 4 }, { 20, 4 },	/* magic, version */
};

static uint32_t mut_rand(uint32_t *state)
{
	/* xorshift32: a mutation must depend only on libFuzzer's seed */
	*state ^= *state << 13;
	*state ^= *state >> 17;
	*state ^= *state << 5;
	return *state;
}

static void put_le(uint8_t *p, unsigned int size, uint64_t v)
{
	unsigned int i;

	for (i = 0; i < size; i++)
		p[i] = v >> (8 * i);
}

static uint64_t get_le(const uint8_t *p, unsigned int size)
{
	uint64_t v = 0;
	unsigned int i;

	for (i = 0; i < size; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* A value for a field: page numbers in and out of range, the page's
   ends, small changes of the old value. */
static uint64_t mut_value(uint32_t *st, uint64_t old, uint64_t npages,
			  unsigned int page_size)
{
	switch (mut_rand(st) % 10) {
	case 0: return mut_rand(st) % (npages + 2);
	case 1: return npages - 1 + mut_rand(st) % 3;
	case 2: return old + 1;
	case 3: return old - 1;
	case 4: return old + (int32_t)(mut_rand(st) % 64) - 32;
	case 5: return page_size - mut_rand(st) % 24;
	case 6: return mut_rand(st) % 32;
	case 7: return old ^ (1ULL << (mut_rand(st) % 16));
	case 8: return (uint64_t)-1 - mut_rand(st) % 2;
	default: return mut_rand(st);
	}
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
			       unsigned int seed)
{
	uint32_t st = seed | 1;
	unsigned int page_size, nkeys, lower, idx, ofs, i, n;
	uint64_t npages, pgno, other;
	uint8_t *page, *node;

	if (size < 3 * 512 || mut_rand(&st) % 3 == 0)
		return LLVMFuzzerMutate(data, size, max_size);
	page_size = get_le(data + M_META_PSIZE_OFS, 4);
	if (page_size < 512 || page_size > 32768 ||
	    (page_size & (page_size - 1)) != 0)
		page_size = 4096;
	npages = size / page_size;
	if (npages < 3)
		return LLVMFuzzerMutate(data, size, max_size);

	n = 1 + mut_rand(&st) % 3;
	for (i = 0; i < n; i++) {
		pgno = mut_rand(&st) % npages;
		page = data + pgno * page_size;
		switch (mut_rand(&st) % 6) {
		case 0: {
			/* a meta page field */
			unsigned int f = mut_rand(&st) % N_ELEMENTS(meta_fields);
			uint8_t *p = data + (mut_rand(&st) % 2) * page_size +
				meta_fields[f].ofs;

			put_le(p, meta_fields[f].size,
			       mut_value(&st, get_le(p, meta_fields[f].size),
					 npages, page_size));
			break;
		}
		case 1:
			/* a page header field: pgno, flags, lower, upper (or
			   an overflow run's page count) */
			ofs = (const unsigned int[]){ 0, 10, 12, 14 }
				[mut_rand(&st) % 4];
			put_le(page + ofs, ofs == 0 ? 8 : 2,
			       mut_value(&st, get_le(page + ofs, ofs == 0 ? 8 : 2),
					 npages, page_size));
			break;
		case 2:
		case 3:
			/* a node header field, or a branch node's child */
			lower = get_le(page + 12, 2);
			if (lower < M_PAGEHDRSZ + 2 || lower > page_size)
				break;
			nkeys = (lower - M_PAGEHDRSZ) / 2;
			idx = mut_rand(&st) % nkeys;
			ofs = get_le(page + M_PAGEHDRSZ + 2 * idx, 2);
			if (ofs + 8 > page_size)
				break;
			node = page + ofs;
			if ((get_le(page + 10, 2) & 0x01) != 0 &&
			    mut_rand(&st) % 2 == 0) {
				/* child pgno: lo, hi, flags */
				other = mut_value(&st, get_le(node, 2) |
						  get_le(node + 2, 2) << 16,
						  npages, page_size);
				put_le(node, 2, other);
				put_le(node + 2, 2, other >> 16);
				put_le(node + 4, 2, other >> 32);
			} else if (mut_rand(&st) % 3 == 0) {
				/* move the key/data boundary (the node keeps
				   its end), or stretch the key to the page's
				   end: sizes that agree with each other but
				   not with what the data is */
				unsigned int ksize = get_le(node + 6, 2);
				unsigned int dsize = get_le(node, 2);
				int d = (int)(mut_rand(&st) % 97) - 48;

				if (mut_rand(&st) % 2 == 0 &&
				    ofs + 8 + ksize + dsize <= page_size) {
					ksize = page_size - ofs - 8 - dsize;
				} else if ((int)ksize + d >= 0 &&
					   (int)dsize - d >= 0) {
					ksize += d;
					dsize -= d;
				}
				put_le(node + 6, 2, ksize);
				put_le(node, 2, dsize);
			} else {
				ofs = 2 * (mut_rand(&st) % 4);
				put_le(node + ofs, 2,
				       mut_value(&st, get_le(node + ofs, 2),
						 npages, page_size));
			}
			break;
		case 4:
			/* a page copied over another: a pointer to the wrong
			   page, a page reachable twice */
			other = mut_rand(&st) % npages;
			memmove(page, data + other * page_size, page_size);
			break;
		default:
			/* cut the file short, or at an odd size */
			if (mut_rand(&st) % 4 == 0) {
				size -= mut_rand(&st) % page_size + 1;
				return size;
			}
			return LLVMFuzzerMutate(data, size, max_size);
		}
	}
	return size;
}

static uint64_t hash_bytes(uint64_t h, const void *data, size_t size)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < size; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

static int scan_callback(const struct lmdb_pagescan_record *rec,
			 struct scan_result *res)
{
	uint64_t h = res->hash;

	/* reading every byte is what lets AddressSanitizer check them */
	h = hash_bytes(h, rec->key, rec->key_size);
	h = hash_bytes(h, rec->value, rec->value_size);
	h = hash_bytes(h, &rec->pgno, sizeof(rec->pgno));
	h = hash_bytes(h, &rec->node_idx, sizeof(rec->node_idx));
	h = hash_bytes(h, &rec->overflow_pgno, sizeof(rec->overflow_pgno));
	res->hash = h;

	fuzz_assert(rec->key_size <= 511);
	fuzz_assert(rec->value_size <= LMDB_PAGESCAN_MAX_VALUE_SIZE);
	fuzz_assert(rec->pgno < res->pages_total);
	fuzz_assert(rec->overflow_pgno == LMDB_PAGESCAN_NO_PGNO ||
		    rec->overflow_pgno < res->pages_total);
	if (rec->source == LMDB_PAGESCAN_SOURCE_TREE) {
		/* every TREE record comes before the ORPHAN ones */
		fuzz_assert(res->orphan == 0);
		fuzz_assert(rec->dbi_name != NULL);
		res->hash = hash_bytes(res->hash, rec->dbi_name,
				       strlen(rec->dbi_name) + 1);
		res->tree++;
		if (rec->dbi_name[0] == '\0')
			res->main_records++;
	} else {
		fuzz_assert(rec->source == LMDB_PAGESCAN_SOURCE_ORPHAN);
		fuzz_assert(rec->dbi_name == NULL);
		res->orphan++;
	}
	if (++res->seen == res->stop_at)
		return -1;
	return 0;
}

static void check_stats(struct lmdb_pagescan *scan,
			const struct scan_result *res)
{
	const struct lmdb_pagescan_stats *stats = lmdb_pagescan_get_stats(scan);
	const struct lmdb_pagescan_damage *damages;
	const struct lmdb_pagescan_dbi *dbis;
	unsigned int i, count;
	uint64_t dbi_records = 0;

	fuzz_assert(stats->pages_meta + stats->pages_tree +
		    stats->pages_overflow + stats->pages_free +
		    stats->orphan_leaves + stats->orphan_branches +
		    stats->orphan_overflow_pages + stats->pages_unreadable ==
		    stats->pages_total);
	fuzz_assert(stats->pages_total <= stats->file_pages);
	fuzz_assert(stats->pages_total <= stats->last_pgno + 1);
	fuzz_assert(stats->records_tree == res->tree);
	fuzz_assert(stats->records_orphan == res->orphan);
	fuzz_assert(stats->meta_pgno <= 1);
	fuzz_assert(stats->page_size >= 512 && stats->page_size <= 32768);

	damages = lmdb_pagescan_get_damages(scan, &count);
	fuzz_assert(count <= LMDB_PAGESCAN_MAX_DAMAGES);
	fuzz_assert(stats->damage_count >= count);
	fuzz_assert(count == LMDB_PAGESCAN_MAX_DAMAGES ||
		    stats->damage_count == count);
	for (i = 0; i < count; i++) {
		fuzz_assert(damages[i].reason != NULL &&
			    damages[i].reason[0] != '\0');
		fuzz_assert((damages[i].tree == LMDB_PAGESCAN_TREE_NAMED) ==
			    (damages[i].dbi_name != NULL));
	}
	dbis = lmdb_pagescan_get_dbis(scan, &count);
	for (i = 0; i < count; i++) {
		fuzz_assert(dbis[i].name != NULL);
		(void)strlen(dbis[i].name);
		dbi_records += dbis[i].records;
	}
	fuzz_assert(dbi_records + res->main_records == res->tree);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmdb_pagescan *scan;
	struct lmdb_pagescan_stats stats1;
	struct scan_result res1, res2, res3;
	const char *error = NULL;
	int fd, ret;

	fd = open(fuzz_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd == -1)
		i_fatal("open(%s) failed: %m", fuzz_path);
	if (write_full(fd, data, size) < 0)
		i_fatal("write(%s) failed: %m", fuzz_path);
	i_close_fd(&fd);

	T_BEGIN {
		ret = lmdb_pagescan_open(fuzz_path, &scan, &error);
		if (ret < 0)
			fuzz_assert(error != NULL && error[0] != '\0');
		else {
			i_zero(&res1);
			res1.pages_total =
				lmdb_pagescan_get_stats(scan)->pages_total;
			res1.hash = 0xcbf29ce484222325ULL;
			res2 = res3 = res1;

			fuzz_assert(lmdb_pagescan_run(scan, scan_callback,
						      &res1, &error) == 0);
			check_stats(scan, &res1);
			stats1 = *lmdb_pagescan_get_stats(scan);

			/* stopped by the callback halfway */
			res3.stop_at = res1.seen / 2 + 1;
			ret = lmdb_pagescan_run(scan, scan_callback, &res3,
						&error);
			fuzz_assert(ret == (res1.seen > 0 ? -1 : 0));
			fuzz_assert(res3.seen == I_MIN(res3.stop_at, res1.seen));

			/* the same file, the same scan */
			fuzz_assert(lmdb_pagescan_run(scan, scan_callback,
						      &res2, &error) == 0);
			check_stats(scan, &res2);
			fuzz_assert(res1.hash == res2.hash);
			fuzz_assert(res1.seen == res2.seen);
			fuzz_assert(memcmp(&stats1, lmdb_pagescan_get_stats(scan),
					   sizeof(stats1)) == 0);
			lmdb_pagescan_close(&scan);
		}
	} T_END;
	return 0;
}
