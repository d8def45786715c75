#ifndef LMDB_STORAGE_H
#define LMDB_STORAGE_H

#include "index-storage.h"
#include "index-mail.h"
#include "lmdb-env.h"
#include "lmdb-records.h"
#include "lmdb-settings.h"

#define LMDB_STORAGE_NAME "lmdb"
#define LMDB_UIDVALIDITY_FILE_NAME "dovecot-uidvalidity"

/* header extension "lmdb-hdr" in every mailbox index */
enum lmdb_index_header_flags {
	LMDB_INDEX_HEADER_FLAG_HAVE_POP3_UIDLS = 0x01,
	LMDB_INDEX_HEADER_FLAG_HAVE_POP3_ORDERS = 0x02,
};

struct lmdb_index_header {
	guid_128_t mailbox_guid;
	uint32_t flags; /* enum lmdb_index_header_flags */
	uint32_t unused;
};

struct lmdb_storage {
	struct mail_storage storage;

	struct lmdb_settings set;
	const char *env_path;
	struct lmdb_env *env;
};

struct lmdb_mailbox {
	struct mailbox box;
	struct lmdb_storage *storage;

	uint32_t hdr_ext_id;
	guid_128_t mailbox_guid;
	/* set by a save's commit_post when LMDB couldn't flush the saved
	   mail to disk: the commit must fail (lmdb_transaction_commit) */
	char *commit_sync_error;
	/* the mailbox needs a full backend sync (links above next_uid) */
	bool need_adopt:1;
	/* the index lost part of its log in a crash: check every record
	   for its link at the next backend sync (lmdb-adopt.c) */
	bool need_link_check:1;
};

/* one message of a save/copy transaction, in append order */
struct lmdb_save_mail {
	uint32_t seq;
	/* assigned at commit */
	uint32_t uid;
	uint64_t body_id;
	uint64_t virtual_size;
	time_t save_date;
	uint8_t flags;
	unsigned int keywords_count;
	const char *const *keywords;
	/* message GUID, for the UIDL format's %g */
	const char *guid;
	const char *pop3_uidl;
	uint32_t pop3_order;
	/* a small body kept in memory until the link transaction writes
	   it (body_id is 0 until then) */
	struct lmdb_body_writer *deferred;
	/* single-instance copy: the body already had a reference */
	bool copied;
	/* a copy: gets a UIDL of its own (lmdb_uidl_assign()) */
	bool new_uidl;
	/* a MOVE within the mailbox: the UID of the source, whose UIDL
	   the message keeps (the source is expunged after the commit) */
	uint32_t moved_from_uid;
};

ARRAY_DEFINE_TYPE(lmdb_save_mail, struct lmdb_save_mail);

/* Which cache fields a copy carries from one source mailbox into the
   destination, resolved once per transaction instead of once per mail
   (lmdb-copy.c). */
struct lmdb_copy_cache_field {
	unsigned int src_idx, dest_idx;
	/* date.save is set anew, the sizes also go to the dest mail */
	bool save_date, physical_size, virtual_size;
};
struct lmdb_copy_cache {
	struct mailbox *src_box;
	struct mail_cache *src_cache;
	ARRAY(struct lmdb_copy_cache_field) fields;
	buffer_t *buf;
};

extern struct mail_storage lmdb_storage;
extern struct mail_vfuncs lmdb_mail_vfuncs;

#define LMDB_STORAGE(s) (container_of(s, struct lmdb_storage, storage))
#define LMDB_MAILBOX(s) (container_of(s, struct lmdb_mailbox, box))

/* lmdb-storage.c: set by doveadm lmdb salvage before its user is
   created (see lmdb_storage_create()) */
extern bool lmdb_storage_no_env_open;

/* lmdb-storage.c */
/* Map an LMDB/errno failure to the storage error the user sees. */
void lmdb_storage_set_lmdb_error(struct mail_storage *storage, int ret,
				 const char *error);
/* The error a full map or disk gives the user (temporary), for a failure
   that was already logged. */
void lmdb_storage_set_space_error(struct mail_storage *storage);

/* lmdb-mailbox-index.c */
int lmdb_read_header(struct lmdb_mailbox *mbox,
		     struct lmdb_index_header *hdr_r, bool log_error);
void lmdb_update_header(struct lmdb_mailbox *mbox,
			struct mail_index_transaction *trans,
			const struct lmdb_index_header *hdr);
/* The mailbox's LMDB record as the index in view knows it: what replaces
   a damaged record. */
void lmdb_mailbox_fallback_record(struct lmdb_mailbox *mbox,
				  struct mail_index_view *view,
				  struct lmdb_mailbox_record *rec_r);
/* FALSE when no message of the mailbox was ever saved with a POP3 order */
bool lmdb_mailbox_have_pop3_orders(struct lmdb_mailbox *mbox);
int lmdb_mailbox_record_write(struct lmdb_mailbox *mbox,
			      uint32_t uid_validity,
			      enum lmdb_mailbox_state state,
			      bool keep_existing);
int
lmdb_mailbox_create_indexes(struct mailbox *box,
			    const struct mailbox_update *update,
			    struct mail_index_transaction *trans);
int lmdb_mailbox_create_indexes_locked(struct mailbox *box,
				       const struct mailbox_update *update);

/* lmdb-lost-name.c: a mailbox Dovecot's list rebuild recreates by its
   GUID under a placeholder name gets the name LMDB keeps for that GUID
   (into the index's box-name header, which Dovecot renames it to at its
   next open). Returns 1 and the mailbox's UIDVALIDITY if LMDB knows it,
   0 if not, -1 on error. */
int lmdb_mailbox_lost_name_restore(struct lmdb_mailbox *mbox,
				   const guid_128_t guid,
				   struct mail_index_transaction *trans,
				   uint32_t *uid_validity_r);

/* lmdb-purge.c */
int lmdb_storage_purge(struct mail_storage *storage);
/* Purge if lmdb_autopurge_interval has passed since the last one. */
void lmdb_storage_autopurge(struct lmdb_storage *storage);

/* lmdb-mail.c */
struct mail *
lmdb_mail_alloc(struct mailbox_transaction_context *t,
		enum mail_fetch_field wanted_fields,
		struct mailbox_header_lookup_ctx *wanted_headers);

/* lmdb-save.c */
struct mail_save_context *
lmdb_save_alloc(struct mailbox_transaction_context *t);
int lmdb_save_begin(struct mail_save_context *ctx, struct istream *input);
int lmdb_save_continue(struct mail_save_context *ctx);
int lmdb_save_finish(struct mail_save_context *ctx);
void lmdb_save_cancel(struct mail_save_context *ctx);
/* Append the message being saved or copied to the index transaction and
   to the save context's list. */
struct lmdb_save_mail *lmdb_save_add_to_index(struct mail_save_context *ctx);
pool_t lmdb_save_get_pool(struct mail_save_context *ctx);
struct lmdb_copy_cache *
lmdb_save_get_copy_cache(struct mail_save_context *ctx);
/* Does the message keep the UIDL it comes with (a save, a move, dsync's
   copies), or is it a copy that must get a new one? */
bool lmdb_save_keeps_uidl(struct mail_save_context *ctx);
/* A single-instance copy needs no save_finish: mark it done. */
void lmdb_save_copy_finished(struct mail_save_context *ctx);
int lmdb_transaction_save_commit_pre(struct mail_save_context *ctx);
void lmdb_transaction_save_commit_post(struct mail_save_context *ctx,
	struct mail_index_transaction_commit_result *result);
void lmdb_transaction_save_rollback(struct mail_save_context *ctx);
/* The save context's record of a message being saved at seq, or NULL. */
const struct lmdb_save_mail *
lmdb_save_get_mail(struct mailbox_transaction_context *t, uint32_t seq);

/* lmdb-copy.c */
int lmdb_copy(struct mail_save_context *ctx, struct mail *mail);

/* lmdb-sync.c */
struct mailbox_sync_context *
lmdb_storage_sync_init(struct mailbox *box, enum mailbox_sync_flags flags);

#endif
