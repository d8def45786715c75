#ifndef DOVEADM_LMDB_VERIFY_H
#define DOVEADM_LMDB_VERIFY_H

/* doveadm lmdb verify: the command and its report
   (doveadm-lmdb-verify.c), the scan of each DBI
   (doveadm-lmdb-verify-scan.c), the checks of what it found
   (doveadm-lmdb-verify-check.c) and what -r then does about it
   (doveadm-lmdb-repair.c). */

#include "hash.h"
#include "doveadm-mail.h"

struct lmdb_verify_cmd_context {
	struct doveadm_mail_cmd_context ctx;
	bool repair;
	unsigned int problems;
};

/* the links of one mailbox, in UID order (the links DBI's order) */
struct lmdb_verify_box {
	guid_128_t guid;
	const char *name;
	bool active;
	ARRAY(uint32_t) uids;
	ARRAY(uint64_t) body_ids;
	/* UIDs whose link was quarantined or whose index record has no
	   link: expunged from the index by -r */
	ARRAY(uint32_t) expunge_uids;
};

ARRAY_DEFINE_TYPE(lmdb_verify_box, struct lmdb_verify_box *);
HASH_TABLE_DEFINE_TYPE(lmdb_link_counts, void *, void *);

struct lmdb_verify_state {
	struct lmdb_verify_cmd_context *cmd;
	struct lmdb_storage *storage;
	pool_t pool;

	/* mailbox GUID (hex) -> struct lmdb_verify_box */
	HASH_TABLE(char *, struct lmdb_verify_box *) boxes;
	ARRAY_TYPE(lmdb_verify_box) box_list;
	/* body id -> number of links */
	HASH_TABLE(void *, void *) refs;
	/* body id -> 1 if it has a body record */
	HASH_TABLE(void *, void *) bodies_seen;
	/* mailbox GUID hex + " " + UIDL -> the first UID holding it */
	HASH_TABLE(char *, void *) uidls;
	/* the same + " " + UID, for every link holding a UIDL */
	HASH_TABLE(char *, void *) uidl_holders;
	bool uidls_rebuild;

	/* bodies whose reference count differed from the snapshot's link
	   count: checked again against a fresh count before reporting */
	ARRAY(uint64_t) refcount_suspects;
	/* fresh link counts of suspects and of what -r changes */
	HASH_TABLE_TYPE(lmdb_link_counts) link_counts;

	/* what -r does, collected first, done in one write transaction */
	ARRAY(uint64_t) refcount_fixes;
	ARRAY(uint64_t) rebuild_bodies;
	ARRAY(uint64_t) gc_missing;
	ARRAY(buffer_t *) quarantine_links;
	ARRAY(buffer_t *) junk_gc_keys;
	unsigned int repaired, quarantined;
};

/* doveadm-lmdb-verify.c */
void lmdb_verify_report(struct lmdb_verify_state *state,
			const char *mailbox, uint32_t uid,
			uint64_t body_id, const char *problem);

/* doveadm-lmdb-verify-scan.c */
void lmdb_verify_quarantine_link(struct lmdb_verify_state *state,
				 struct lmdb_verify_box *box,
				 const void *key, uint32_t uid);
int lmdb_verify_scan_mailboxes(struct lmdb_verify_state *state,
			       MDB_txn *txn);
int lmdb_verify_scan_uidls(struct lmdb_verify_state *state,
			   MDB_txn *txn);
int lmdb_verify_scan_links(struct lmdb_verify_state *state,
			   MDB_txn *txn);
int lmdb_verify_scan_gc(struct lmdb_verify_state *state, MDB_txn *txn);

/* doveadm-lmdb-verify-check.c */
bool lmdb_verify_uid_quarantined(const struct lmdb_verify_box *box,
				 uint32_t uid);
int lmdb_verify_link_now(struct lmdb_verify_state *state,
			 const guid_128_t mailbox_guid, uint32_t uid);
int lmdb_verify_bodies(struct lmdb_verify_state *state);
void lmdb_verify_dangling_links(struct lmdb_verify_state *state);
void lmdb_verify_mailboxes(struct lmdb_verify_state *state,
			   struct mail_user *user);

/* doveadm-lmdb-repair.c */
/* Count the links of the bodies in counts (body id -> 1 on entry) as they
   are in txn: body id -> links + 1 on return. One pass over
   every link: mail saved, copied or expunged after verify's snapshot
   counts as it is now. Returns 0 or an LMDB code. */
int lmdb_repair_count_links(struct lmdb_env *env, MDB_txn *txn,
			    HASH_TABLE_TYPE(lmdb_link_counts) counts,
			    const char **error_r);
/* In one write transaction: the quarantine, rebuilt bodies, reference
   counts, gc entries, the UIDL index and the counters. */
int lmdb_repair_txn(MDB_txn *txn, void *context, const char **error_r);
/* Afterwards, through Dovecot: expunge the index records of what was
   quarantined, and those without a link. */
int lmdb_repair_index(struct lmdb_verify_state *state,
		      struct mail_user *user);

#endif
