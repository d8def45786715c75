#ifndef LMDB_LINK_H
#define LMDB_LINK_H

/* Link records (mailbox GUID + UID -> body, flags mirror, POP3 data) and
   mailbox records (mailbox GUID -> name, UIDVALIDITY, highest UID). Every
   function works inside a transaction the caller owns. No lib-storage
   types here. */

#include "lmdb-records.h"
#include "lmdb-env.h"

/* Returns 1 and the record, 0 if missing, -1 if LMDB failed, -2 if the
   record is damaged (*error_r for both). */
int lmdb_link_get(struct lmdb_env *env, MDB_txn *txn,
		  const guid_128_t mailbox_guid, uint32_t uid, pool_t pool,
		  struct lmdb_link_record *rec_r, const char **error_r);
/* Return 0 or an LMDB code. */
int lmdb_link_put(struct lmdb_env *env, MDB_txn *txn,
		  const guid_128_t mailbox_guid, uint32_t uid,
		  const struct lmdb_link_record *rec, const char **error_r);
/* Like lmdb_link_put(), but MDB_KEYEXIST if the UID already has a link. */
int lmdb_link_add(struct lmdb_env *env, MDB_txn *txn,
		  const guid_128_t mailbox_guid, uint32_t uid,
		  const struct lmdb_link_record *rec, const char **error_r);
/* Delete the link and return what it held, in one B-tree lookup.
   *found_r is 1 with *rec_r, 0 if there was no link, -1 if the record
   was malformed (deleted all the same, *error_r says why). Returns 0 or
   an LMDB code. */
int lmdb_link_take(struct lmdb_env *env, MDB_txn *txn,
		   const guid_128_t mailbox_guid, uint32_t uid, pool_t pool,
		   struct lmdb_link_record *rec_r, int *found_r,
		   const char **error_r);
/* Replace the flag mirror (flags, modseq, keywords) of an existing link
   with that of *src in place. Returns 0 (also if the link is gone),
   MDB_CORRUPTED if the stored record is malformed, or an LMDB code. */
int lmdb_link_set_flags(struct lmdb_env *env, MDB_txn *txn,
			const guid_128_t mailbox_guid, uint32_t uid,
			const struct lmdb_link_record *src,
			const char **error_r);
int lmdb_link_delete(struct lmdb_env *env, MDB_txn *txn,
		     const guid_128_t mailbox_guid, uint32_t uid,
		     const char **error_r);
/* Highest UID with a link in the mailbox, 0 if none. Returns 0 or an
   LMDB code. */
int lmdb_link_get_highest_uid(struct lmdb_env *env, MDB_txn *txn,
			      const guid_128_t mailbox_guid,
			      uint32_t *uid_r, const char **error_r);

/* Iterate the links of one mailbox in UID order, starting at first_uid. */
struct lmdb_link_iter *
lmdb_link_iter_init(struct lmdb_env *env, MDB_txn *txn,
		    const guid_128_t mailbox_guid, uint32_t first_uid);
/* Returns 1 with the next link; 2 if the next link's record is damaged
   (*uid_r is its UID, lmdb_link_iter_get_error() says why, and the
   iteration goes on: damage is contained to that message); 0 at the end;
   -1 if LMDB itself failed (a damaged page: the iteration is over). */
int lmdb_link_iter_next(struct lmdb_link_iter *iter, pool_t pool,
			uint32_t *uid_r, struct lmdb_link_record *rec_r);
const char *lmdb_link_iter_get_error(struct lmdb_link_iter *iter);
/* How many malformed keys of the mailbox the iteration stepped over
   (their UIDs are unknown: a caller that concludes from a missing UID
   must not when this is above 0). */
unsigned int lmdb_link_iter_get_bad_keys(struct lmdb_link_iter *iter);
/* How many damaged records the iteration stepped over. */
unsigned int lmdb_link_iter_get_damaged(struct lmdb_link_iter *iter);
/* Returns -1 with *error_r if LMDB failed (not for damaged records). */
int lmdb_link_iter_deinit(struct lmdb_link_iter **iter, const char **error_r);

int lmdb_mailbox_get(struct lmdb_env *env, MDB_txn *txn,
		     const guid_128_t mailbox_guid, pool_t pool,
		     struct lmdb_mailbox_record *rec_r, const char **error_r);
int lmdb_mailbox_put(struct lmdb_env *env, MDB_txn *txn,
		     const guid_128_t mailbox_guid,
		     const struct lmdb_mailbox_record *rec,
		     const char **error_r);

/* Like lmdb_mailbox_get(), but a damaged record is replaced by fallback
   (what the caller knows from the index: name, UIDVALIDITY, highest
   UID), with its highest UID raised above every link of the mailbox, and
   *damage_r says what was wrong (NULL if nothing). Returns 1, 0 if there
   is no record, -1 on error (*error_r). */
int lmdb_mailbox_get_repair(struct lmdb_env *env, MDB_txn *txn,
			    const guid_128_t mailbox_guid,
			    const struct lmdb_mailbox_record *fallback,
			    pool_t pool, struct lmdb_mailbox_record *rec_r,
			    const char **damage_r, const char **error_r);

/* Adjust the env record's link counters. */
int lmdb_link_count(struct lmdb_env *env, MDB_txn *txn, int links,
		    int64_t vsize_bytes, const char **error_r);

#endif
