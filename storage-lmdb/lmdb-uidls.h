#ifndef LMDB_UIDLS_H
#define LMDB_UIDLS_H

/* The UIDL index: which links of a mailbox hold a POP3 UIDL. RFC 1939
   wants a UIDL unique in the maildrop, and UIDLs that arrive from outside
   (dsync from the other replica, a move, a migration) can collide with
   one a message here already has: with one lookup a save sees it and
   gives the newcomer a UIDL of its own. One entry per holding link, so
   links that share a UIDL from before (schema 1 copies) stay visible.
   Maintained in every transaction that adds or drops a link. No
   lib-storage types here. */

#include "lmdb-env.h"

ARRAY_DEFINE_TYPE(lmdb_uid, uint32_t);

/* The UIDs whose entries say they hold uidl (damaged entries left out),
   appended to uids_r. Returns 0 or an LMDB code. */
int lmdb_uidls_holders(struct lmdb_env *env, MDB_txn *txn,
		       const guid_128_t mailbox_guid, const char *uidl,
		       ARRAY_TYPE(lmdb_uid) *uids_r, const char **error_r);
/* The link uid holds uidl now. Returns 0 or an LMDB code. */
int lmdb_uidls_set(struct lmdb_env *env, MDB_txn *txn,
		   const guid_128_t mailbox_guid, const char *uidl,
		   uint32_t uid, const char **error_r);
/* The link uid no longer holds uidl (expunged, or its entry is stale).
   Returns 0 or an LMDB code. */
int lmdb_uidls_unset(struct lmdb_env *env, MDB_txn *txn,
		     const guid_128_t mailbox_guid, const char *uidl,
		     uint32_t uid, const char **error_r);
/* Build the index anew from the links (schema upgrade, verify -r).
   *duplicates_r counts links whose UIDL another link holds too. Returns
   0 or an LMDB code. */
int lmdb_uidls_rebuild(struct lmdb_env *env, MDB_txn *txn,
		       unsigned int *duplicates_r, const char **error_r);

#endif
