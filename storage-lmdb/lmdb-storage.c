/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "str.h"
#include "mail-index-modseq.h"
#include "mail-namespace.h"
#include "mailbox-list-private.h"
#include "mailbox-uidvalidity.h"
#include "index-pop3-uidl.h"
#include "lmdb-link.h"
#include "lmdb-sync.h"
#include "lmdb-uidl.h"
#include "lmdb-storage.h"

#include <sys/stat.h>

extern struct mailbox lmdb_mailbox;

static struct event_category event_category_lmdb = {
	.name = "lmdb",
	.parent = &event_category_storage,
};

void lmdb_storage_set_lmdb_error(struct mail_storage *storage, int ret,
				 const char *error)
{
	if (lmdb_env_error_is_space(ret)) {
		/* a full map or disk is temporary: LMTP answers 4xx and the
		   sender retries, where NOQUOTA would bounce the mail */
		e_error(storage->event, "%s", error);
		mail_storage_set_error(storage, MAIL_ERROR_TEMP,
			"Mail storage is out of space, try again later");
	} else {
		mail_storage_set_critical(storage, "lmdb: %s", error);
	}
}

/* Salvage hook (doveadm lmdb salvage): while set, a storage is created
   without opening its environment, which may be too damaged for LMDB's
   own code to touch; storage->env stays NULL until the command opens
   the salvaged one. Nothing else may use such a storage. */
bool lmdb_storage_no_env_open = FALSE;

static struct mail_storage *lmdb_storage_alloc(void)
{
	struct lmdb_storage *storage;
	pool_t pool;

	pool = pool_alloconly_create("lmdb storage", 1024);
	storage = p_new(pool, struct lmdb_storage, 1);
	storage->storage = lmdb_storage;
	storage->storage.pool = pool;
	return &storage->storage;
}

static int
lmdb_storage_check_refusals(struct mail_storage *_storage,
			    struct mail_namespace *ns, const char **error_r)
{
	const struct mailbox_list_settings *list_set = &ns->list->set;

	if (list_set->index_dir != NULL && list_set->index_dir[0] == '\0') {
		*error_r = "INDEX=MEMORY is not supported: the lmdb "
			"storage keeps its IMAP view in index files";
		return -1;
	}
	if (list_set->alt_dir != NULL) {
		*error_r = "ALT= is not supported: all mail of a user "
			"lives in one LMDB environment";
		return -1;
	}
	if (ns->type == MAIL_NAMESPACE_TYPE_SHARED) {
		/* another user's environment would need write access to
		   its lock.mdb from this user's processes */
		*error_r = "shared namespaces are not supported "
			"(use ACLs within one user, or dsync to share mail)";
		return -1;
	}
	if (_storage->set->mail_attachment_dir[0] != '\0') {
		*error_r = "mail_attachment_dir is not supported: "
			"bodies are stored once already, in LMDB";
		return -1;
	}
	return 0;
}

/* Once a user's data reach this share of what the process may map,
   every session says so: at the limit nothing of the user's mail can be
   read any more, not only new mail refused. */
#define LMDB_STORAGE_HEADROOM_WARN_PERCENT 75

static void lmdb_storage_check_headroom(struct lmdb_storage *storage)
{
	uint64_t used, limit;

	if (storage->env->headroom_warned ||
	    lmdb_env_get_headroom(storage->env, &used, &limit) < 0 ||
	    limit == UINT64_MAX ||
	    used < limit / 100 * LMDB_STORAGE_HEADROOM_WARN_PERCENT)
		return;
	e_warning(storage->storage.event, "lmdb: %s holds %"PRIu64" MB of "
		  "data and this process may map %"PRIu64" MB: raise "
		  "vsz_limit of the mail services (default_vsz_limit) above "
		  "the user's mail plus 256M before it is reached (then not "
		  "even reading works), or compact (doveadm lmdb compact)",
		  storage->env_path, used / (1024*1024), limit / (1024*1024));
	/* once per process and environment: LMTP opens it per delivery */
	storage->env->headroom_warned = TRUE;
}

static int
lmdb_storage_create(struct mail_storage *_storage, struct mail_namespace *ns,
		    const char **error_r)
{
	struct lmdb_storage *storage = LMDB_STORAGE(_storage);
	struct mailbox_permissions perm;
	const char *root, *error;

	if (lmdb_storage_check_refusals(_storage, ns, error_r) < 0)
		return -1;
	if (lmdb_settings_read(_storage->user, &storage->set, &error) < 0) {
		*error_r = error;
		return -1;
	}
	/* UIDLs are fixed when a message is saved: the format must be
	   computable then */
	if (lmdb_uidl_check_format(_storage->set->pop3_uidl_format,
				   &error) < 0) {
		*error_r = error;
		return -1;
	}
	if (_storage->set->parsed_fsync_mode == FSYNC_MODE_NEVER)
		storage->set.env.no_sync = TRUE;

	root = mailbox_list_get_root_forced(ns->list, MAILBOX_LIST_PATH_TYPE_DIR);
	if (mailbox_list_mkdir_root(ns->list, root,
				    MAILBOX_LIST_PATH_TYPE_DIR) < 0) {
		*error_r = mailbox_list_get_last_internal_error(ns->list, NULL);
		return -1;
	}
	mailbox_list_get_root_permissions(ns->list, &perm);
	storage->set.env.mode = perm.file_create_mode;
	storage->env_path = p_strdup(_storage->pool, root);
	_storage->unique_root_dir = p_strdup(_storage->pool, root);

	if (lmdb_storage_no_env_open)
		return 0;
	if (lmdb_env_open(root, &storage->set.env, &storage->env, &error) < 0) {
		*error_r = error;
		return -1;
	}
	lmdb_storage_check_headroom(storage);
	return 0;
}

static void lmdb_storage_destroy(struct mail_storage *_storage)
{
	struct lmdb_storage *storage = LMDB_STORAGE(_storage);

	if (storage->env != NULL) {
		lmdb_storage_autopurge(storage);
		lmdb_env_unref(&storage->env);
	}
	index_storage_destroy(_storage);
}

static void
lmdb_storage_get_list_settings(const struct mail_namespace *ns ATTR_UNUSED,
			       struct mailbox_list_settings *set)
{
	if (set->layout == NULL)
		set->layout = MAILBOX_LIST_NAME_FS;
	if (set->subscription_fname == NULL)
		set->subscription_fname = LMDB_SUBSCRIPTION_FILE_NAME;
	if (*set->maildir_name == '\0')
		set->maildir_name = LMDB_MAILDIR_NAME;
	if (*set->mailbox_dir_name == '\0')
		set->mailbox_dir_name = LMDB_MAILBOX_DIR_NAME;
}

static struct mailbox *
lmdb_mailbox_alloc(struct mail_storage *storage, struct mailbox_list *list,
		   const char *vname, enum mailbox_flags flags)
{
	struct lmdb_mailbox *mbox;
	struct index_mailbox_context *ibox;
	pool_t pool;

	/* the index files are the IMAP view: never without them */
	flags &= ENUM_NEGATE(MAILBOX_FLAG_NO_INDEX_FILES);

	pool = pool_alloconly_create("lmdb mailbox", 1024*3);
	mbox = p_new(pool, struct lmdb_mailbox, 1);
	mbox->box = lmdb_mailbox;
	mbox->box.pool = pool;
	mbox->box.storage = storage;
	mbox->box.list = list;
	mbox->box.mail_vfuncs = &lmdb_mail_vfuncs;

	index_storage_mailbox_alloc(&mbox->box, vname, flags, MAIL_INDEX_PREFIX);

	ibox = INDEX_STORAGE_CONTEXT(&mbox->box);
	ibox->index_flags |= MAIL_INDEX_OPEN_FLAG_KEEP_BACKUPS |
		MAIL_INDEX_OPEN_FLAG_NEVER_IN_MEMORY;

	mbox->storage = LMDB_STORAGE(storage);
	return &mbox->box;
}

int lmdb_read_header(struct lmdb_mailbox *mbox,
		     struct lmdb_index_header *hdr_r, bool log_error)
{
	struct mail_index_view *view;
	const void *data;
	size_t data_size;
	int ret = 0;

	view = mail_index_view_open(mbox->box.index);
	mail_index_get_header_ext(view, mbox->hdr_ext_id, &data, &data_size);
	i_zero(hdr_r);
	if (data_size < sizeof(guid_128_t)) {
		if (log_error && !mbox->box.creating) {
			mailbox_set_critical(&mbox->box,
				"lmdb: Invalid lmdb-hdr size %zu", data_size);
		}
		ret = -1;
	} else {
		memcpy(hdr_r, data, I_MIN(data_size, sizeof(*hdr_r)));
		if (guid_128_is_empty(hdr_r->mailbox_guid))
			ret = -1;
	}
	mail_index_view_close(&view);
	return ret;
}

void lmdb_update_header(struct lmdb_mailbox *mbox,
			struct mail_index_transaction *trans,
			const struct lmdb_index_header *hdr)
{
	struct lmdb_index_header old;
	const void *data;
	size_t data_size;

	mail_index_get_header_ext(mbox->box.view, mbox->hdr_ext_id,
				  &data, &data_size);
	i_zero(&old);
	memcpy(&old, data, I_MIN(data_size, sizeof(old)));
	if (data_size != sizeof(*hdr))
		mail_index_ext_resize_hdr(trans, mbox->hdr_ext_id, sizeof(*hdr));
	if (data_size != sizeof(*hdr) || memcmp(&old, hdr, sizeof(old)) != 0) {
		mail_index_update_header_ext(trans, mbox->hdr_ext_id, 0,
					     hdr, sizeof(*hdr));
	}
}

void lmdb_mailbox_fallback_record(struct lmdb_mailbox *mbox,
				  struct mail_index_view *view,
				  struct lmdb_mailbox_record *rec_r)
{
	const struct mail_index_header *hdr = mail_index_get_header(view);

	i_zero(rec_r);
	rec_r->state = LMDB_MAILBOX_STATE_ACTIVE;
	rec_r->uid_validity = hdr->uid_validity;
	rec_r->highest_uid = hdr->next_uid > 0 ? hdr->next_uid - 1 : 0;
	rec_r->highest_modseq = mail_index_modseq_get_highest(view);
	rec_r->created = ioloop_time;
	rec_r->hierarchy_sep = mail_namespace_get_sep(mbox->box.list->ns);
	rec_r->name = mbox->box.vname;
}

bool lmdb_mailbox_have_pop3_orders(struct lmdb_mailbox *mbox)
{
	const struct lmdb_index_header *hdr;
	const void *data;
	size_t size;

	mail_index_get_header_ext(mbox->box.view, mbox->hdr_ext_id,
				  &data, &size);
	if (size < sizeof(*hdr))
		return TRUE;
	hdr = data;
	return (hdr->flags & LMDB_INDEX_HEADER_FLAG_HAVE_POP3_ORDERS) != 0;
}

struct lmdb_mailbox_find_ctx {
	const char *name;
	guid_128_t guid;
	struct lmdb_mailbox_record rec;
	pool_t pool;
	bool found;
};

/* Find the active mailbox record carrying this name: after the index was
   lost, that is how a mailbox gets its GUID (and its mail) back. */
static int lmdb_mailbox_find_by_name(struct lmdb_storage *storage,
				     struct lmdb_mailbox_find_ctx *ctx,
				     const char **error_r)
{
	struct lmdb_env *env = storage->env;
	struct lmdb_mailbox_record rec;
	MDB_txn *txn;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	int ret;

	if (lmdb_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	if ((ret = mdb_cursor_open(txn, env->dbi_mailboxes, &cursor)) != 0) {
		lmdb_env_read_end(env, &txn);
		*error_r = t_strdup_printf("mdb_cursor_open(mailboxes) failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		if (key.mv_size != GUID_128_SIZE)
			continue;
		if (!lmdb_mailbox_record_decode(key.mv_data, val.mv_data,
						val.mv_size, ctx->pool, &rec,
						&error)) {
			e_error(storage->storage.event,
				"lmdb: %s: skipping corrupted mailbox record %s: %s",
				env->path, guid_128_to_string(key.mv_data), error);
			continue;
		}
		if (rec.state == LMDB_MAILBOX_STATE_ACTIVE &&
		    strcmp(rec.name, ctx->name) == 0) {
			memcpy(ctx->guid, key.mv_data, GUID_128_SIZE);
			ctx->rec = rec;
			ctx->found = TRUE;
			break;
		}
	}
	mdb_cursor_close(cursor);
	lmdb_env_read_end(env, &txn);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("iterating mailboxes failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	return 0;
}

struct lmdb_mailbox_write_ctx {
	struct lmdb_env *env;
	const guid_128_t *guid;
	const char *name;
	char sep;
	uint32_t uid_validity;
	enum lmdb_mailbox_state state;
	/* only add a missing record, never change one */
	bool keep_existing;
};

static int
lmdb_mailbox_write_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_mailbox_write_ctx *ctx = context;
	struct lmdb_mailbox_record rec;
	int ret;

	ret = lmdb_mailbox_get(ctx->env, txn, *ctx->guid,
			       pool_datastack_create(), &rec, error_r);
	if (ret < 0)
		return MDB_CORRUPTED;
	if (ret > 0 && ctx->keep_existing)
		return 0;
	if (ret == 0) {
		i_zero(&rec);
		rec.created = ioloop_time;
	}
	if (ctx->name != NULL) {
		rec.name = ctx->name;
		rec.hierarchy_sep = ctx->sep;
	}
	if (ctx->uid_validity != 0)
		rec.uid_validity = ctx->uid_validity;
	rec.state = ctx->state;
	return lmdb_mailbox_put(ctx->env, txn, *ctx->guid, &rec, error_r);
}

static int lmdb_mailbox_record_write(struct lmdb_mailbox *mbox,
				     uint32_t uid_validity,
				     enum lmdb_mailbox_state state,
				     bool keep_existing)
{
	struct mailbox *box = &mbox->box;
	struct lmdb_mailbox_write_ctx ctx;
	const char *error;
	int ret;

	i_zero(&ctx);
	ctx.env = mbox->storage->env;
	ctx.guid = &mbox->mailbox_guid;
	ctx.name = box->vname;
	ctx.sep = mail_namespace_get_sep(box->list->ns);
	ctx.uid_validity = uid_validity;
	ctx.state = state;
	ctx.keep_existing = keep_existing;
	ret = lmdb_env_write(ctx.env, lmdb_mailbox_write_txn, &ctx, TRUE, &error);
	if (ret != 0) {
		lmdb_storage_set_lmdb_error(box->storage, ret, error);
		return -1;
	}
	return 0;
}

static int
lmdb_mailbox_create_indexes(struct mailbox *box,
			    const struct mailbox_update *update,
			    struct mail_index_transaction *trans)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	struct mail_index_transaction *new_trans = NULL;
	const struct mail_index_header *hdr;
	struct lmdb_index_header lhdr;
	struct lmdb_mailbox_find_ctx find;
	const char *error;
	uint32_t uid_validity = 0, uid_next;
	bool have_hdr;

	if (trans == NULL) {
		new_trans = mail_index_transaction_begin(box->view, 0);
		trans = new_trans;
	}
	hdr = mail_index_get_header(box->view);
	have_hdr = lmdb_read_header(mbox, &lhdr, FALSE) == 0;
	if (!have_hdr)
		i_zero(&lhdr);

	i_zero(&find);
	if (update != NULL && !guid_128_is_empty(update->mailbox_guid)) {
		memcpy(lhdr.mailbox_guid, update->mailbox_guid,
		       sizeof(lhdr.mailbox_guid));
	} else if (!have_hdr) {
		/* a new mailbox, or one whose index was lost: if LMDB
		   knows a mailbox of this name, this is that mailbox */
		find.name = box->vname;
		find.pool = pool_datastack_create();
		if (lmdb_mailbox_find_by_name(mbox->storage, &find,
					      &error) < 0) {
			mailbox_set_critical(box, "lmdb: %s", error);
			if (new_trans != NULL)
				mail_index_transaction_rollback(&new_trans);
			return -1;
		}
		if (find.found) {
			memcpy(lhdr.mailbox_guid, find.guid,
			       sizeof(lhdr.mailbox_guid));
			uid_validity = find.rec.uid_validity;
			mbox->need_adopt = TRUE;
			e_debug(box->event, "lmdb: Index lost, recovering "
				"mailbox GUID %s from LMDB",
				guid_128_to_string(find.guid));
		} else {
			guid_128_generate(lhdr.mailbox_guid);
		}
	}

	if (update != NULL && update->uid_validity != 0)
		uid_validity = update->uid_validity;
	else if (hdr->uid_validity != 0)
		uid_validity = hdr->uid_validity;
	else if (uid_validity == 0) {
		uid_validity = mailbox_uidvalidity_next(box->list,
			t_strconcat(mailbox_list_get_root_forced(box->list,
				MAILBOX_LIST_PATH_TYPE_CONTROL),
				"/"LMDB_UIDVALIDITY_FILE_NAME, NULL));
	}

	if (hdr->uid_validity != uid_validity) {
		mail_index_update_header(trans,
			offsetof(struct mail_index_header, uid_validity),
			&uid_validity, sizeof(uid_validity), TRUE);
	}
	if (update != NULL && hdr->next_uid < update->min_next_uid) {
		uid_next = update->min_next_uid;
		mail_index_update_header(trans,
			offsetof(struct mail_index_header, next_uid),
			&uid_next, sizeof(uid_next), TRUE);
	}
	if (update != NULL && update->min_first_recent_uid != 0 &&
	    hdr->first_recent_uid < update->min_first_recent_uid) {
		uint32_t first_recent_uid = update->min_first_recent_uid;

		mail_index_update_header(trans,
			offsetof(struct mail_index_header, first_recent_uid),
			&first_recent_uid, sizeof(first_recent_uid), FALSE);
	}
	if (update != NULL && update->min_highest_modseq != 0 &&
	    mail_index_modseq_get_highest(box->view) <
	    update->min_highest_modseq) {
		mail_index_modseq_enable(box->index);
		mail_index_update_highest_modseq(trans,
						 update->min_highest_modseq);
	}
	if (box->inbox_user && box->creating && !find.found)
		index_pop3_uidl_set_max_uid(box, trans, 0);

	lmdb_update_header(mbox, trans, &lhdr);
	memcpy(mbox->mailbox_guid, lhdr.mailbox_guid,
	       sizeof(mbox->mailbox_guid));
	/* LMDB may already hold mail for this GUID (index lost, recovery,
	   dsync): the next sync appends what the index lacks */
	mbox->need_adopt = TRUE;

	/* LMDB last: it is the innermost lock. An open (neither creating
	   nor updating) doesn't hold the list lock: a record that exists
	   is left as a concurrent rename or delete may have just written
	   it; one found by name above needs no change anyway. */
	if (lmdb_mailbox_record_write(mbox, uid_validity,
				      LMDB_MAILBOX_STATE_ACTIVE,
				      !box->creating && update == NULL) < 0) {
		if (new_trans != NULL)
			mail_index_transaction_rollback(&new_trans);
		return -1;
	}
	if (new_trans != NULL) {
		if (mail_index_transaction_commit(&new_trans) < 0) {
			mailbox_set_index_error(box);
			return -1;
		}
	}
	return 0;
}

static int lmdb_mailbox_create_indexes_locked(struct mailbox *box,
					      const struct mailbox_update *update)
{
	struct mail_index_sync_ctx *sync_ctx;
	struct mail_index_view *view;
	struct mail_index_transaction *trans;
	int ret;

	/* the index sync lock serialises creators */
	ret = mail_index_sync_begin(box->index, &sync_ctx, &view, &trans, 0);
	if (ret <= 0) {
		i_assert(ret != 0);
		mailbox_set_index_error(box);
		return -1;
	}
	if (mail_index_get_header(view)->uid_validity == 0) {
		if (lmdb_mailbox_create_indexes(box, update, trans) < 0) {
			mail_index_sync_rollback(&sync_ctx);
			return -1;
		}
	}
	return mail_index_sync_commit(&sync_ctx);
}

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
   itself has nothing to sync. */
static void lmdb_mailbox_check_orphans(struct lmdb_mailbox *mbox)
{
	struct lmdb_env *env = mbox->storage->env;
	const struct mail_index_header *hdr =
		mail_index_get_header(mbox->box.view);
	const char *error;
	uint32_t highest_uid;
	MDB_txn *txn;

	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		return;
	if (lmdb_link_get_highest_uid(env, txn, mbox->mailbox_guid,
				      &highest_uid, &error) == 0 &&
	    highest_uid >= hdr->next_uid)
		mbox->need_adopt = TRUE;
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

struct mail_storage lmdb_storage = {
	.name = LMDB_STORAGE_NAME,
	.class_flags = MAIL_STORAGE_CLASS_FLAG_UNIQUE_ROOT |
		MAIL_STORAGE_CLASS_FLAG_HAVE_MAIL_GUIDS |
		MAIL_STORAGE_CLASS_FLAG_HAVE_MAIL_SAVE_GUIDS |
		/* dsync compares GUIDs by their 128-bit digest: an over-long
		   GUID is stored as that digest (lmdb-save.c) and must still
		   match the source's on every later run */
		MAIL_STORAGE_CLASS_FLAG_HAVE_MAIL_GUID128 |
		MAIL_STORAGE_CLASS_FLAG_BINARY_DATA,
	.event_category = &event_category_lmdb,

	.v = {
		.alloc = lmdb_storage_alloc,
		.create = lmdb_storage_create,
		.destroy = lmdb_storage_destroy,
		.get_list_settings = lmdb_storage_get_list_settings,
		.mailbox_alloc = lmdb_mailbox_alloc,
		.purge = lmdb_storage_purge,
		.list_index_rebuild = mail_storage_list_index_rebuild,
	}
};

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
