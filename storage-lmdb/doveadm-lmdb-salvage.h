#ifndef DOVEADM_LMDB_SALVAGE_H
#define DOVEADM_LMDB_SALVAGE_H

/* Shared by doveadm-lmdb-salvage.c (the command),
   doveadm-lmdb-salvage-swap.c (other processes, the file swap) and
   doveadm-lmdb-salvage-index.c (the mailbox indexes). */

#include "lmdb-salvage.h"

struct mail_user;
struct mail_storage;
struct mail_namespace;
struct lmdb_storage;

/* a mailbox in the list */
struct lmdb_salvage_listed {
	struct mail_namespace *ns;
	const char *vname;
};
ARRAY_DEFINE_TYPE(lmdb_salvage_listed, struct lmdb_salvage_listed);
ARRAY_DEFINE_TYPE(lmdb_salvage_mailbox_info, struct lmdb_salvage_mailbox_info);

/* Every selectable mailbox of the namespaces storage serves (*listed),
   and what their indexes say (*infos). Returns 0, or -1 if listing
   failed (logged). */
int lmdb_salvage_collect(struct mail_user *user, struct mail_storage *storage,
			 pool_t pool, ARRAY_TYPE(lmdb_salvage_listed) *listed,
			 ARRAY_TYPE(lmdb_salvage_mailbox_info) *infos);

/* The salvage's lookup (lmdb_salvage_lookup_func_t), with its context. */
struct lmdb_salvage_lookup *
lmdb_salvage_lookup_init(const ARRAY_TYPE(lmdb_salvage_listed) *listed);
void lmdb_salvage_lookup_deinit(struct lmdb_salvage_lookup **lk);
bool lmdb_salvage_lookup_uid(const struct lmdb_salvage_mailbox_info *info,
			     uint32_t uid, void *context,
			     struct lmdb_salvage_index_message *msg_r);

/* With the salvaged environment open: create the mailboxes it has but
   the list doesn't (added to *listed), then rebuild every listed
   mailbox's index from its links. Both return 0 or -1 (logged). */
int lmdb_salvage_create_missing(struct mail_user *user,
				struct lmdb_storage *storage, pool_t pool,
				ARRAY_TYPE(lmdb_salvage_listed) *listed);
int lmdb_salvage_resync(const ARRAY_TYPE(lmdb_salvage_listed) *listed);

/* doveadm-lmdb-salvage-swap.c */
const char *lmdb_salvage_holders(const char *root);
int lmdb_salvage_swap(const char *root, const char *dest,
		      const char **aside_r, const char **error_r);

#endif
