/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "mail-namespace.h"
#include "mailbox-list-private.h"
#include "lmdb-uidl.h"
#include "lmdb-storage.h"

/* The storage class: its vfuncs (create, destroy, list settings, mailbox
   allocation), what it refuses, and how LMDB failures reach the user. */

extern struct mailbox lmdb_mailbox;

static struct event_category event_category_lmdb = {
	.name = "lmdb",
	.parent = &event_category_storage,
};

void lmdb_storage_set_lmdb_error(struct mail_storage *storage, int ret,
				 const char *error)
{
	if (lmdb_env_error_is_space(ret)) {
		e_error(storage->event, "%s", error);
		lmdb_storage_set_space_error(storage);
	} else {
		mail_storage_set_critical(storage, "lmdb: %s", error);
	}
}

void lmdb_storage_set_space_error(struct mail_storage *storage)
{
	/* a full map or disk is temporary: LMTP answers 4xx and the sender
	   retries, where NOQUOTA would bounce the mail */
	mail_storage_set_error(storage, MAIL_ERROR_TEMP,
			       "Mail storage is out of space, try again later");
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
	if (ns->type == MAIL_NAMESPACE_TYPE_SHARED) {
		/* another user's environment would need write access to
		   its lock.mdb from this user's processes */
		*error_r = "shared namespaces are not supported "
			"(use ACLs within one user, or dsync to share mail)";
		return -1;
	}
	return lmdb_settings_check_location(_storage, ns, error_r);
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
	if (lmdb_settings_read(_storage, &storage->set, &error) < 0) {
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
		.mailbox_alloc = lmdb_mailbox_alloc,
		.purge = lmdb_storage_purge,
		.list_index_rebuild = mail_storage_list_index_rebuild,
	}
};
