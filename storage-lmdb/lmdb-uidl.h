#ifndef LMDB_UIDL_H
#define LMDB_UIDL_H

#include "lmdb-storage.h"

/* pop3_uidl_format variables that cannot be computed when a message is
   saved: %m needs the header MD5 only mbox keeps, %f a file name. */
int lmdb_uidl_check_format(const char *format, const char **error_r);

/* Give every saved message without a UIDL of its own the one
   pop3_uidl_format makes of it now, so the UIDL is fixed in the link
   record from the start (UIDs must be assigned already). */
void lmdb_uidl_assign(struct lmdb_mailbox *mbox, uint32_t uid_validity, pool_t pool,
		      ARRAY_TYPE(lmdb_save_mail) *mails);

/* Tell the index which UIDs may have a backend UIDL or POP3 order, so
   that lookups for all others stay free: raise the POP3 max UID to
   highest_uidl_uid (0 = none) and set the header flags (never lowered). */
void lmdb_uidl_note_saved(struct lmdb_mailbox *mbox,
			  struct mail_index_transaction *trans,
			  uint32_t highest_uidl_uid, bool have_order);

/* mail vfunc: remember the UIDL; written at transaction commit, all in
   one LMDB transaction (a first UIDL listing of a big maildrop must not
   cost a commit per message) */
void lmdb_mail_update_pop3_uidl(struct mail *mail, const char *uidl);

/* mailbox vfuncs wrapping index_transaction_commit/rollback */
int lmdb_transaction_commit(struct mailbox_transaction_context *t,
			    struct mail_transaction_commit_changes *changes_r);
void lmdb_transaction_rollback(struct mailbox_transaction_context *t);

#endif
