#ifndef LMDB_UIDLS_H
#define LMDB_UIDLS_H

/* The UIDL index: which link of a mailbox holds a POP3 UIDL. RFC 1939
   wants a UIDL unique in the maildrop, and UIDLs that arrive from outside
   (dsync from the other replica, a move, a migration) can collide with
   one a message here already has: with one lookup a save sees it and
   gives the newcomer a UIDL of its own. Maintained in every transaction
   that adds or drops a link. No lib-storage types here. */

#include "lmdb-env.h"

/* Returns 1 with the UID holding uidl, 0 if none (a damaged entry counts
   as none: it is overwritten), -1 on LMDB failure. */
int lmdb_uidls_lookup(struct lmdb_env *env, MDB_txn *txn,
		      const guid_128_t mailbox_guid, const char *uidl,
		      uint32_t *uid_r, const char **error_r);
/* uidl is held by uid now. Returns 0 or an LMDB code. */
int lmdb_uidls_set(struct lmdb_env *env, MDB_txn *txn,
		   const guid_128_t mailbox_guid, const char *uidl,
		   uint32_t uid, const char **error_r);
/* The link uid with uidl is gone: drop the entry if it is still uid's.
   Returns 0 or an LMDB code. */
int lmdb_uidls_unset(struct lmdb_env *env, MDB_txn *txn,
		     const guid_128_t mailbox_guid, const char *uidl,
		     uint32_t uid, const char **error_r);
/* Build the index anew from the links (schema upgrade, verify -r): the
   first link of a UIDL holds it. *duplicates_r counts links whose UIDL
   another link already holds. Returns 0 or an LMDB code. */
int lmdb_uidls_rebuild(struct lmdb_env *env, MDB_txn *txn,
		       unsigned int *duplicates_r, const char **error_r);

#endif
