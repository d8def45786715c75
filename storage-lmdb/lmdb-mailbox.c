/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "mail-namespace.h"
#include "mailbox-list-private.h"
#include "lmdb-link.h"
#include "lmdb-sync.h"
#include "lmdb-uidl.h"
#include "lmdb-storage.h"

#include <sys/stat.h>

/* The mailbox vfuncs: open, create, update, metadata, delete, rename,
   close, change notification. */

static int lmdb_mailbox_check_existence(struct mailbox *box)
{
	const char *box_path = mailbox_get_path(box);
	struct stat st;

	if (stat(box_path, &st) == 0)
		return 0;
	if (errno == ENOENT || errno == ENAMETOOLONG) {
		mail_storage_set_error(box->storage, MAIL_ERROR_NOTFOUND,
			T_MAIL_ERR_MAILBOX_NOT_FOUND(box->vname));
	} else if (errno == EACCES) {
		mailbox_set_critical(box, "%s",
			mail_error_eacces_msg("stat", box_path));
	} else {
		mailbox_set_critical(box, "stat(%s) failed: %m", box_path);
	}
	return -1;
}

static int lmdb_mailbox_alloc_index(struct lmdb_mailbox *mbox)
{
	if (index_storage_mailbox_alloc_index(&mbox->box) < 0)
		return -1;
	mbox->hdr_ext_id =
		mail_index_ext_register(mbox->box.index, "lmdb-hdr",
					sizeof(struct lmdb_index_header), 0, 0);
	return 0;
}

/* Links above the index's next_uid (a save that crashed between its LMDB
   and index commits) must show up at the next sync even when the index
   itself has nothing to sync; so must index records above every link (a
   save whose LMDB commit a power cut lost, lmdb_sync_adopt()). Either
   means the index lost part of its log, maybe expunges with it: every
   record is checked for its link then. */
static void lmdb_mailbox_check_orphans(struct lmdb_mailbox *mbox)
{
	struct lmdb_env *env = mbox->storage->env;
	const struct mail_index_header *hdr =
		mail_index_get_header(mbox->box.view);
	const char *error;
	uint32_t highest_uid, last_uid = 0, count;
	MDB_txn *txn;

	count = mail_index_view_get_messages_count(mbox->box.view);
	if (count > 0)
		mail_index_lookup_uid(mbox->box.view, count, &last_uid);
	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		return;
	if (lmdb_link_get_highest_uid(env, txn, mbox->mailbox_guid,
				      &highest_uid, &error) == 0 &&
	    (highest_uid >= hdr->next_uid || last_uid > highest_uid)) {
		mbox->need_adopt = TRUE;
		mbox->need_link_check = TRUE;
	}
	lmdb_env_read_end(env, &txn);
}

static int lmdb_mailbox_open(struct mailbox *box)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	struct lmdb_index_header hdr;

	if (lmdb_mailbox_check_existence(box) < 0)
		return -1;
	if (lmdb_mailbox_alloc_index(mbox) < 0)
		return -1;
	if (index_storage_mailbox_open(box, FALSE) < 0)
		return -1;
	/* Appends need no index fsync: a save is durable once its links
	   are in LMDB, and a sync adopts links that a crash kept from the
	   index (with their UIDs; next_uid never goes below LMDB's highest
	   UID). Expunge requests do: they must be on disk before a sync
	   drops the links, or a crash could leave index records whose
	   links are gone. */
	mail_index_set_fsync_mode(box->index,
				  box->storage->set->parsed_fsync_mode,
				  MAIL_INDEX_FSYNC_MASK_EXPUNGES);
	if (box->creating) {
		/* create_box initialises the index */
		return 0;
	}
	if (lmdb_read_header(mbox, &hdr, FALSE) < 0) {
		/* the index is new or was lost: find or create the
		   mailbox's identity (and let sync adopt its mail) under
		   the index sync lock alone, as dbox does. Never the list
		   lock: Dovecot opens mailboxes while holding the list
		   index lock (a list index sync reads each new mailbox's
		   GUID), and mailbox_create() holds the list lock while it
		   waits for the list index lock: a deadlock. A creator
		   takes the index sync lock too; whoever comes first
		   initialises the index, the other sees uid_validity set. */
		if (lmdb_mailbox_create_indexes_locked(box, NULL) < 0 ||
		    lmdb_read_header(mbox, &hdr, TRUE) < 0)
			return -1;
	}
	memcpy(mbox->mailbox_guid, hdr.mailbox_guid,
	       sizeof(mbox->mailbox_guid));
	lmdb_mailbox_check_orphans(mbox);
	return 0;
}

static int
lmdb_mailbox_create(struct mailbox *box, const struct mailbox_update *update,
		    bool directory)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	struct lmdb_index_header hdr;
	int ret;

	if ((ret = index_storage_mailbox_create(box, directory)) <= 0)
		return ret;
	if (mailbox_open(box) < 0)
		return -1;
	if (mail_index_get_header(box->view)->uid_validity != 0 &&
	    !box->storage->rebuilding_list_index) {
		mail_storage_set_error(box->storage, MAIL_ERROR_EXISTS,
				       "Mailbox already exists");
		return -1;
	}
	if (lmdb_mailbox_create_indexes_locked(box, update) < 0)
		return -1;
	if (directory || !guid_128_is_empty(mbox->mailbox_guid))
		return 0;
	/* another process created it meanwhile */
	if (lmdb_read_header(mbox, &hdr, TRUE) < 0)
		return -1;
	memcpy(mbox->mailbox_guid, hdr.mailbox_guid,
	       sizeof(mbox->mailbox_guid));
	return 0;
}

static int
lmdb_mailbox_update(struct mailbox *box, const struct mailbox_update *update)
{
	if (!box->opened) {
		if (mailbox_open(box) < 0)
			return -1;
	}
	if (lmdb_mailbox_create_indexes(box, update, NULL) < 0)
		return -1;
	return index_storage_mailbox_update_common(box, update);
}

static int
lmdb_mailbox_get_metadata(struct mailbox *box,
			  enum mailbox_metadata_items items,
			  struct mailbox_metadata *metadata_r)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);

	if (index_mailbox_get_metadata(box, items, metadata_r) < 0)
		return -1;
	if ((items & MAILBOX_METADATA_GUID) != 0) {
		memcpy(metadata_r->guid, mbox->mailbox_guid,
		       sizeof(metadata_r->guid));
	}
	return 0;
}

static int lmdb_mailbox_delete(struct mailbox *box)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	guid_128_t guid;
	bool had_guid;

	/* index_storage_mailbox_delete() expunges every message through
	   our sync, which drops the links; then the name is free */
	had_guid = box->opened && !guid_128_is_empty(mbox->mailbox_guid);
	memcpy(guid, mbox->mailbox_guid, sizeof(guid));
	if (index_storage_mailbox_delete(box) < 0)
		return -1;
	if (had_guid) {
		memcpy(mbox->mailbox_guid, guid, sizeof(guid));
		(void)lmdb_mailbox_record_write(mbox, 0,
						LMDB_MAILBOX_STATE_DELETED,
						FALSE);
	}
	return 0;
}

struct lmdb_rename_ctx {
	struct lmdb_env *env;
	const char *old_name, *new_name;
	char sep;
	unsigned int renamed;
};

static int lmdb_rename_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_rename_ctx *ctx = context;
	struct lmdb_mailbox_record rec;
	MDB_cursor *cursor;
	MDB_val key, val;
	ARRAY(guid_128_t) guids;
	ARRAY_TYPE(const_string) names;
	guid_128_t *guidp;
	const char *error, *const *namep;
	size_t old_len = strlen(ctx->old_name);
	pool_t pool = pool_datastack_create();
	int ret;

	ctx->renamed = 0;
	t_array_init(&guids, 8);
	t_array_init(&names, 8);
	if ((ret = mdb_cursor_open(txn, ctx->env->dbi_mailboxes,
				   &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(mailboxes) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	/* the mailbox and its children: name == old or old + sep + ... */
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		if (key.mv_size != GUID_128_SIZE ||
		    !lmdb_mailbox_record_decode(key.mv_data, val.mv_data,
						val.mv_size, pool, &rec,
						&error) ||
		    rec.state != LMDB_MAILBOX_STATE_ACTIVE ||
		    strncmp(rec.name, ctx->old_name, old_len) != 0 ||
		    (rec.name[old_len] != '\0' &&
		     rec.name[old_len] != ctx->sep))
			continue;
		guidp = array_append_space(&guids);
		memcpy(*guidp, key.mv_data, GUID_128_SIZE);
		array_push_back(&names, &rec.name);
	}
	mdb_cursor_close(cursor);
	if (ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("iterating mailboxes failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	namep = array_front(&names);
	array_foreach_modifiable(&guids, guidp) {
		ret = lmdb_mailbox_get(ctx->env, txn, *guidp, pool, &rec,
				       error_r);
		if (ret <= 0)
			return ret < 0 ? MDB_CORRUPTED : MDB_NOTFOUND;
		rec.name = t_strconcat(ctx->new_name, *namep + old_len, NULL);
		if ((ret = lmdb_mailbox_put(ctx->env, txn, *guidp, &rec,
					    error_r)) != 0)
			return ret;
		namep++;
		ctx->renamed++;
	}
	return 0;
}

static int lmdb_mailbox_rename(struct mailbox *src, struct mailbox *dest)
{
	struct lmdb_storage *storage = LMDB_STORAGE(src->storage);
	struct lmdb_rename_ctx ctx;
	const char *error;
	int ret;

	if (index_storage_mailbox_rename(src, dest) < 0)
		return -1;
	/* the list lock is still held by our caller: names in LMDB follow
	   the list in the same critical section */
	i_zero(&ctx);
	ctx.env = storage->env;
	ctx.old_name = src->vname;
	ctx.new_name = dest->vname;
	ctx.sep = mail_namespace_get_sep(src->list->ns);
	ret = lmdb_env_write(storage->env, lmdb_rename_txn, &ctx, TRUE, &error);
	if (ret != 0) {
		/* the rename itself happened; a stale name is repaired by
		   the next open of the mailbox */
		e_error(src->event, "lmdb: Failed to record rename %s -> %s: %s",
			src->vname, dest->vname, error);
	}
	return 0;
}

static void lmdb_mailbox_close(struct mailbox *box)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);

	i_free(mbox->commit_sync_error);
	index_storage_mailbox_close(box);
}

static void lmdb_notify_changes(struct mailbox *box)
{
	const char *dir, *path;

	if (box->notify_callback == NULL)
		mailbox_watch_remove_all(box);
	else {
		if (mailbox_get_path_to(box, MAILBOX_LIST_PATH_TYPE_INDEX,
					&dir) <= 0)
			return;
		path = t_strdup_printf("%s/"MAIL_INDEX_PREFIX".log", dir);
		mailbox_watch_add(box, path);
	}
}

struct mailbox lmdb_mailbox = {
	.v = {
		.is_readonly = index_storage_is_readonly,
		.enable = index_storage_mailbox_enable,
		.exists = index_storage_mailbox_exists,
		.open = lmdb_mailbox_open,
		.close = lmdb_mailbox_close,
		.free = index_storage_mailbox_free,
		.create_box = lmdb_mailbox_create,
		.update_box = lmdb_mailbox_update,
		.delete_box = lmdb_mailbox_delete,
		.rename_box = lmdb_mailbox_rename,
		.get_status = index_storage_get_status,
		.get_metadata = lmdb_mailbox_get_metadata,
		.set_subscribed = index_storage_set_subscribed,
		.attribute_set = index_storage_attribute_set,
		.attribute_get = index_storage_attribute_get,
		.attribute_iter_init = index_storage_attribute_iter_init,
		.attribute_iter_next = index_storage_attribute_iter_next,
		.attribute_iter_deinit = index_storage_attribute_iter_deinit,
		.list_index_has_changed = index_storage_list_index_has_changed,
		.list_index_update_sync = index_storage_list_index_update_sync,
		.sync_init = lmdb_storage_sync_init,
		.sync_next = index_mailbox_sync_next,
		.sync_deinit = index_mailbox_sync_deinit,
		.notify_changes = lmdb_notify_changes,
		.transaction_begin = index_transaction_begin,
		.transaction_commit = lmdb_transaction_commit,
		.transaction_rollback = lmdb_transaction_rollback,
		.mail_alloc = lmdb_mail_alloc,
		.search_init = index_storage_search_init,
		.search_deinit = index_storage_search_deinit,
		.search_next_nonblock = index_storage_search_next_nonblock,
		.search_next_update_seq = index_storage_search_next_update_seq,
		.search_next_match_mail = index_storage_search_next_match_mail,
		.save_alloc = lmdb_save_alloc,
		.save_begin = lmdb_save_begin,
		.save_continue = lmdb_save_continue,
		.save_finish = lmdb_save_finish,
		.save_cancel = lmdb_save_cancel,
		.copy = lmdb_copy,
		.transaction_save_commit_pre = lmdb_transaction_save_commit_pre,
		.transaction_save_commit_post = lmdb_transaction_save_commit_post,
		.transaction_save_rollback = lmdb_transaction_save_rollback,
		.is_inconsistent = index_storage_is_inconsistent,
	}
};
