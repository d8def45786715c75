#ifndef LMDB_SALVAGE_PRIVATE_H
#define LMDB_SALVAGE_PRIVATE_H

/* Shared by lmdb-salvage.c, lmdb-salvage-classify.c and
   lmdb-salvage-batch.c (the scan: classify, validate and copy what is
   readable) and lmdb-salvage-resolve.c, lmdb-salvage-match.c and
   lmdb-salvage-write.c (what the copied records make of each other:
   whole bodies, surviving links, reference counts, mailbox records,
   counters). */

#include "array.h"
#include "hash.h"
#include "lmdb-records.h"
#include "lmdb-salvage.h"

/* A body as the scan found it: its chunks and its record. */
struct lmdb_salvage_body {
	uint64_t id;
	/* chunks kept (each key once), the highest index, the largest
	   chunk and the sum of their sizes */
	uint32_t chunks, max_idx, max_chunk_size;
	uint64_t chunk_bytes;
	/* links kept that point here; then the ones that survive */
	uint32_t link_refs, links;
	/* from its record, if one was kept */
	uint8_t state;
	/* the links it had */
	uint32_t old_refcount;
	uint32_t chunk_count, chunk_size;
	uint64_t physical_size;
	bool have_record:1;
	/* the record came from an ORPHAN page */
	bool record_orphan:1;
	/* rebuilt from its chunks (its record was lost) */
	bool rebuilt:1;
	/* its chunks are damaged or missing: dropped with its links */
	bool lost:1;
	/* its first chunk's Message-ID was read (message_id, may be NULL) */
	bool message_id_read:1;
	const char *message_id;
	/* why it is lost */
	const char *lost_reason;
};

struct lmdb_salvage_link {
	guid_128_t guid;
	uint32_t uid;
	uint64_t body_id;
	bool lost;
};

struct lmdb_salvage_box {
	guid_128_t guid;
	/* its record was kept, and what it says */
	bool have_record;
	bool active;
	const char *name;
	/* what the index says, or NULL */
	const struct lmdb_salvage_mailbox_info *info;
	/* the highest UID of any link found (lost ones too: their UIDs are
	   never given again) */
	uint32_t highest_uid;
	/* links it keeps */
	unsigned int kept_links;
	/* the UIDs of every link found (resolution only) */
	ARRAY(uint32_t) link_uids;
};

struct lmdb_salvage {
	const struct lmdb_salvage_settings *set;
	struct lmdb_salvage_result *result;
	pool_t pool;
	struct lmdb_env *env;

	/* schema-1 records may be read (the file has no schema-2 DBIs) */
	bool allow_v1;
	/* ORPHAN pages are current: the free list was read whole, so a
	   freed (stale) page can't pass as an orphan */
	bool orphans_trusted;

	/* body id -> struct lmdb_salvage_body */
	HASH_TABLE(void *, struct lmdb_salvage_body *) bodies;
	/* mailbox GUID (hex) -> struct lmdb_salvage_box */
	HASH_TABLE(char *, struct lmdb_salvage_box *) boxes;
	ARRAY(struct lmdb_salvage_box *) box_list;
	ARRAY(struct lmdb_salvage_link) links;

	/* the damaged file's env record, if readable */
	struct lmdb_env_record old_env;
	bool have_old_env;
	/* the highest body id of a kept body record or chunk */
	uint64_t max_body_id;

	/* lmdb-salvage-resolve.c's state */
	struct lmdb_salvage_resolve *resolve;
};

struct lmdb_salvage_body *
lmdb_salvage_body_get(struct lmdb_salvage *sv, uint64_t body_id);
struct lmdb_salvage_box *
lmdb_salvage_box_get(struct lmdb_salvage *sv, const guid_128_t guid);

/* --- the scan: lmdb-salvage.c, lmdb-salvage-classify.c and
   lmdb-salvage-batch.c --- */

/* a batch is written when it holds this many records or bytes */
#define LMDB_SALVAGE_BATCH_RECORDS 2048
#define LMDB_SALVAGE_BATCH_BYTES (8 * 1024 * 1024)
/* the largest record value worth decoding */
#define LMDB_SALVAGE_VALUE_MAX (LMDB_CHUNK_SIZE_MAX + 65536)
/* the new environment's map during the build: the damaged file's size
   plus a quarter plus this */
#define LMDB_SALVAGE_MAP_SLACK (64 * 1024 * 1024ULL)

/* What the scan learned of a record, kept until its batch is written. */
struct lmdb_salvage_item {
	enum lmdb_record_type type;
	bool orphan;
	/* a schema-1 record: no checksum was there to check */
	bool unverified;
	const void *key, *value;
	size_t key_size, value_size;
	union {
		struct {
			uint64_t body_id;
			uint32_t idx, size;
		} chunk;
		struct lmdb_salvage_body body;
		struct {
			guid_128_t guid;
			uint32_t uid;
			uint64_t body_id;
		} link;
		struct {
			bool active;
			const char *name;
		} mailbox;
		struct lmdb_env_record env;
	} u;
	/* set by the write: the key was new */
	bool inserted;
};

struct lmdb_salvage_scan {
	struct lmdb_salvage *sv;
	pool_t batch_pool;
	ARRAY(struct lmdb_salvage_item) batch;
	size_t batch_bytes;
	/* mailbox GUID (hex) -> what the caller knows of it */
	HASH_TABLE(char *, const struct lmdb_salvage_mailbox_info *) infos;
	/* the first failure writing the new environment */
	const char *error;
};

/* lmdb-salvage-classify.c */
bool
lmdb_salvage_classify(struct lmdb_salvage *sv,
		      const struct lmdb_pagescan_record *rec,
		      struct lmdb_salvage_item *item);

/* lmdb-salvage-batch.c */
int lmdb_salvage_batch_flush(struct lmdb_salvage_scan *scan);
int lmdb_salvage_scan_record(const struct lmdb_pagescan_record *rec,
			     struct lmdb_salvage_scan *scan);

/* lmdb-salvage-resolve.c: everything after the scan. Returns 0, or -1
   with *error_r when the new environment can't be written. */
int lmdb_salvage_resolve(struct lmdb_salvage *sv, const char **error_r);

/* --- lmdb-salvage-resolve.c and lmdb-salvage-write.c --- */

#define LMDB_SALVAGE_RECOVERY_NAME "Recovered"

typedef int lmdb_salvage_step_func_t(struct lmdb_salvage *sv, MDB_txn *txn,
				     unsigned int idx, const char **error_r);

struct lmdb_salvage_step {
	struct lmdb_salvage *sv;
	lmdb_salvage_step_func_t *func;
	unsigned int start, end;
};

/* each body to rebuild, and whether that worked */
struct lmdb_salvage_rebuild {
	struct lmdb_salvage_body *body;
	bool ok;
	const char *error;
};

/* a UID an index has but no link was found for */
struct lmdb_salvage_missing {
	struct lmdb_salvage_box *box;
	uint32_t uid;
	bool in_index;
	const char *message_id;
	/* what the index says, for a link made again */
	const char *pop3_uidl;
	uint8_t flags;
	unsigned int keywords_count;
	const char *const *keywords;
	/* the body it is linked to again, or NULL */
	struct lmdb_salvage_body *body;
};

/* a link to add: one matched to its UID again, or a re-link */
struct lmdb_salvage_new_link {
	struct lmdb_salvage_box *box;
	uint32_t uid;
	struct lmdb_salvage_body *body;
	const struct lmdb_salvage_missing *missing;
};

struct lmdb_salvage_resolve {
	ARRAY(struct lmdb_salvage_rebuild) rebuilds;
	ARRAY(struct lmdb_salvage_body *) kept_bodies, lost_bodies;
	ARRAY(struct lmdb_salvage_link *) lost_links;
	ARRAY(struct lmdb_salvage_missing) missing;
	ARRAY(struct lmdb_salvage_new_link) new_links;
	struct lmdb_salvage_box *recovery_box;
};

/* Run func for 0..count-1, in batches of short write transactions. func
   may run again for the same index after the map grew: it must only
   change the transaction and what it sets itself. Returns 0 or -1. */
int lmdb_salvage_in_batches(struct lmdb_salvage *sv, unsigned int count,
			    lmdb_salvage_step_func_t *func,
			    const char **error_r);
/* lmdb-salvage-write.c: what the resolution decided, written: lost links
   and bodies removed, reference counts, gc entries, new links, mailbox
   records, the UIDL index, the counters. Returns 0 or -1. */
int lmdb_salvage_write(struct lmdb_salvage *sv, const char **error_r);

/* lmdb-salvage-resolve.c */
struct lmdb_salvage_message *
lmdb_salvage_note(struct lmdb_salvage *sv,
		  ARRAY_TYPE(lmdb_salvage_message) *msgs,
		  const guid_128_t guid, uint32_t uid, uint64_t body_id,
		  const char *message_id, const char *reason);

/* lmdb-salvage-match.c: step 3 of the resolution */
void lmdb_salvage_find_missing(struct lmdb_salvage *sv);
void lmdb_salvage_lookup_missing(struct lmdb_salvage *sv);
const char *
lmdb_salvage_body_message_id(struct lmdb_salvage *sv, MDB_txn *txn,
			     struct lmdb_salvage_body *body);
uint32_t lmdb_salvage_links_lost(struct lmdb_salvage *sv,
				 const struct lmdb_salvage_body *body);
int lmdb_salvage_match(struct lmdb_salvage *sv, const char **error_r);

#endif
