/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "ioloop.h"
#include "str.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "doveadm-mail.h"
#include "dlmdb-compat.h"
#include "doveadm-print.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-storage.h"
#include "doveadm-lmdb.h"

#include <sys/stat.h>

/* doveadm lmdb stats|compact|recover, and the registration of every
   doveadm lmdb command (verify and salvage live in their own files).
   This module calls into the storage
   plugin (one copy of the LMDB layer per process: an environment must
   never be opened twice), so doveadm loads it only after mail_plugins. */

const char *doveadm_storage_lmdb_plugin_version = DOVECOT_ABI_VERSION;

void doveadm_storage_lmdb_plugin_init(struct module *module);
void doveadm_storage_lmdb_plugin_deinit(void);

static struct lmdb_storage *lmdb_user_get_storage(struct mail_user *user)
{
	struct mail_namespace *ns;

	for (ns = user->namespaces; ns != NULL; ns = ns->next) {
		if (ns->storage != NULL &&
		    strcmp(ns->storage->name, LMDB_STORAGE_NAME) == 0)
			return LMDB_STORAGE(ns->storage);
	}
	return NULL;
}

struct lmdb_storage *
doveadm_lmdb_get_storage(struct doveadm_mail_cmd_context *ctx,
			 struct mail_user *user)
{
	struct lmdb_storage *storage = lmdb_user_get_storage(user);

	if (storage == NULL) {
		i_error("User %s has no lmdb storage", user->username);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_NOTFOUND);
	}
	return storage;
}

/* A mail process maps the whole data file within its vsz_limit, next to
   its own mappings (some 50 MB for imap) and room for the file to grow:
   the data plus Dovecot's default 256M, as the storage's log warning
   advises. doveadm runs under other limits than imap/pop3/lmtp and can't
   see theirs, so stats gives the admin that figure to compare with the
   services' vsz_limit, and warns about what it can see:
   lmdb_map_size_max. */
#define LMDB_STATS_PROCESS_BASE_VSZ (256ULL * 1024 * 1024)
#define LMDB_STATS_WARN_PERCENT 75

static uint64_t lmdb_cmd_stats_vsz_needed(struct lmdb_storage *storage,
					  const MDB_envinfo *info)
{
	uint64_t data = ((uint64_t)info->me_last_pgno + 1) *
		storage->env->page_size;
	uint64_t max = storage->env->set.map_size_max;

	if (data >= max / 100 * LMDB_STATS_WARN_PERCENT) {
		i_warning("lmdb: %s holds %"PRIu64" MB, %"PRIu64"%% of "
			  "lmdb_map_size_max (%"PRIu64" MB): raise it, or "
			  "compact (doveadm lmdb compact)", storage->env_path,
			  data / (1024*1024), data * 100 / I_MAX(max, 1),
			  max / (1024*1024));
	}
	/* rounded up to whole MiB: what an admin writes into the config */
	return (data + LMDB_STATS_PROCESS_BASE_VSZ + 1024*1024 - 1) /
		(1024*1024) * (1024*1024);
}

static int
lmdb_cmd_stats_run(struct doveadm_mail_cmd_context *ctx,
		   struct mail_user *user)
{
	struct lmdb_storage *storage = doveadm_lmdb_get_storage(ctx, user);
	struct lmdb_env_record rec;
	MDB_envinfo info;
	MDB_txn *txn;
	struct stat st;
	const char *error, *path;
	uint64_t used, free_pages, refs = 0;
	int ret;

	if (storage == NULL)
		return -1;
	if (lmdb_env_read_begin(storage->env, &txn, &error) < 0) {
		i_error("%s", error);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	ret = lmdb_env_record_get(storage->env, txn, &rec, &error);
	lmdb_env_read_end(storage->env, &txn);
	if (ret != 0 || lmdb_env_get_used_bytes(storage->env, &used,
						&free_pages, &error) < 0) {
		i_error("%s", error);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	(void)mdb_env_info(storage->env->env, &info);
	path = t_strconcat(storage->env_path, "/data.mdb", NULL);
	if (stat(path, &st) < 0)
		i_zero(&st);
	/* every link holds one reference */
	refs = rec.links;

	doveadm_print(dec2str(rec.links));
	doveadm_print(dec2str(rec.bodies));
	doveadm_print(dec2str(refs));
	doveadm_print(dec2str(rec.link_vsize_bytes));
	doveadm_print(dec2str(rec.body_bytes));
	doveadm_print(dec2str(used));
	doveadm_print(dec2str(free_pages));
	/* what compaction would give back: the file beyond what is used */
	doveadm_print(dec2str((uint64_t)st.st_size > used ?
			      (uint64_t)st.st_size - used : 0));
	doveadm_print(dec2str((uint64_t)st.st_size));
	doveadm_print(dec2str(info.me_mapsize));
	doveadm_print(dec2str(lmdb_cmd_stats_vsz_needed(storage, &info)));
	return 0;
}

static void lmdb_cmd_stats_init(DLMDB_DOVEADM_INIT_PARAMS(ctx ATTR_UNUSED))
{
	doveadm_print_header_simple("messages");
	doveadm_print_header_simple("bodies");
	doveadm_print_header_simple("references");
	doveadm_print_header_simple("message_bytes");
	doveadm_print_header_simple("body_bytes");
	doveadm_print_header_simple("used_bytes");
	doveadm_print_header_simple("free_pages");
	doveadm_print_header_simple("reclaimable_bytes");
	doveadm_print_header_simple("file_size");
	doveadm_print_header_simple("map_size");
	doveadm_print_header_simple("vsz_limit_needed");
}

static struct doveadm_mail_cmd_context *lmdb_cmd_stats_alloc(void)
{
	struct doveadm_mail_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct doveadm_mail_cmd_context);
	ctx->v.run = lmdb_cmd_stats_run;
	ctx->v.init = lmdb_cmd_stats_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_FLOW);
	return ctx;
}

/* --- compact --- */

static int
lmdb_cmd_compact_run(struct doveadm_mail_cmd_context *ctx,
		     struct mail_user *user)
{
	struct lmdb_storage *storage = doveadm_lmdb_get_storage(ctx, user);
	uint64_t old_size, new_size;
	const char *error;

	if (storage == NULL)
		return -1;
	if (lmdb_env_compact(storage->env, &old_size, &new_size, &error) < 0) {
		i_error("lmdb compact: %s", error);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	doveadm_print(dec2str(old_size));
	doveadm_print(dec2str(new_size));
	doveadm_print(dec2str(old_size > new_size ? old_size - new_size : 0));
	return 0;
}

static void lmdb_cmd_compact_init(DLMDB_DOVEADM_INIT_PARAMS(ctx ATTR_UNUSED))
{
	doveadm_print_header_simple("old_size");
	doveadm_print_header_simple("new_size");
	doveadm_print_header_simple("reclaimed");
}

static struct doveadm_mail_cmd_context *lmdb_cmd_compact_alloc(void)
{
	struct doveadm_mail_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct doveadm_mail_cmd_context);
	ctx->v.run = lmdb_cmd_compact_run;
	ctx->v.init = lmdb_cmd_compact_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_FLOW);
	return ctx;
}

/* --- recover --- */

static int lmdb_recover_mailbox(struct doveadm_mail_cmd_context *ctx,
				struct mail_namespace *ns,
				const guid_128_t guid,
				const struct lmdb_mailbox_record *rec)
{
	struct mailbox *box;
	struct mailbox_update update;
	enum mailbox_existence existence;
	enum mail_error error;
	int ret = 0;

	box = mailbox_alloc(ns->list, rec->name, MAILBOX_FLAG_IGNORE_ACLS);
	if (mailbox_exists(box, FALSE, &existence) < 0) {
		i_error("%s: %s", rec->name,
			mailbox_get_last_internal_error(box, NULL));
		doveadm_mail_failed_mailbox(ctx, box);
		mailbox_free(&box);
		return -1;
	}
	if (existence == MAILBOX_EXISTENCE_SELECT) {
		mailbox_free(&box);
		return 0;
	}
	i_zero(&update);
	memcpy(update.mailbox_guid, guid, sizeof(update.mailbox_guid));
	update.uid_validity = rec->uid_validity;
	if (mailbox_create(box, &update, FALSE) < 0) {
		(void)mailbox_get_last_error(box, &error);
		if (error != MAIL_ERROR_EXISTS) {
			i_error("Recreating %s failed: %s", rec->name,
				mailbox_get_last_internal_error(box, NULL));
			doveadm_mail_failed_mailbox(ctx, box);
			ret = -1;
		}
	}
	/* the sync appends the mailbox's links to the new index */
	if (ret == 0 && mailbox_sync(box, MAILBOX_SYNC_FLAG_FORCE_RESYNC) < 0) {
		i_error("Syncing %s failed: %s", rec->name,
			mailbox_get_last_internal_error(box, NULL));
		doveadm_mail_failed_mailbox(ctx, box);
		ret = -1;
	}
	if (ret == 0) {
		doveadm_print(rec->name);
		doveadm_print(guid_128_to_string(guid));
	}
	mailbox_free(&box);
	return ret;
}

static int
lmdb_cmd_recover_run(struct doveadm_mail_cmd_context *ctx,
		     struct mail_user *user)
{
	struct lmdb_storage *storage = doveadm_lmdb_get_storage(ctx, user);
	struct mail_namespace *ns = mail_namespace_find_inbox(user->namespaces);
	struct lmdb_mailbox_record rec;
	ARRAY(guid_128_t) guids;
	ARRAY(struct lmdb_mailbox_record) recs;
	const struct lmdb_mailbox_record *recp;
	guid_128_t *guidp;
	MDB_txn *txn;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	pool_t pool;
	unsigned int i;
	int ret;

	if (storage == NULL)
		return -1;
	pool = pool_alloconly_create("lmdb recover", 4096);
	p_array_init(&guids, pool, 16);
	p_array_init(&recs, pool, 16);
	/* every failure sets doveadm's exit code: a run() that fails
	   without one is an assertion failure in doveadm */
	if (lmdb_env_read_begin(storage->env, &txn, &error) < 0) {
		i_error("%s", error);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_TEMP);
		pool_unref(&pool);
		return -1;
	}
	ret = mdb_cursor_open(txn, storage->env->dbi_mailboxes, &cursor);
	while (ret == 0 &&
	       (ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		if (key.mv_size != GUID_128_SIZE ||
		    !lmdb_mailbox_record_decode(key.mv_data, val.mv_data,
						val.mv_size, pool, &rec,
						&error) ||
		    rec.state != LMDB_MAILBOX_STATE_ACTIVE)
			continue;
		guidp = array_append_space(&guids);
		memcpy(*guidp, key.mv_data, GUID_128_SIZE);
		array_push_back(&recs, &rec);
	}
	if (ret == MDB_NOTFOUND)
		mdb_cursor_close(cursor);
	lmdb_env_read_end(storage->env, &txn);
	if (ret != MDB_NOTFOUND) {
		i_error("iterating mailboxes failed: %s", mdb_strerror(ret));
		doveadm_mail_failed_error(ctx, MAIL_ERROR_TEMP);
		pool_unref(&pool);
		return -1;
	}
	ret = 0;
	for (i = 0; i < array_count(&recs); i++) {
		recp = array_idx(&recs, i);
		guidp = array_idx_modifiable(&guids, i);
		if (lmdb_recover_mailbox(ctx, ns, *guidp, recp) < 0)
			ret = -1;
	}
	pool_unref(&pool);
	return ret;
}

static void lmdb_cmd_recover_init(DLMDB_DOVEADM_INIT_PARAMS(ctx ATTR_UNUSED))
{
	doveadm_print_header_simple("recovered");
	doveadm_print_header_simple("guid");
}

static struct doveadm_mail_cmd_context *lmdb_cmd_recover_alloc(void)
{
	struct doveadm_mail_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct doveadm_mail_cmd_context);
	ctx->v.run = lmdb_cmd_recover_run;
	ctx->v.init = lmdb_cmd_recover_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TAB);
	return ctx;
}

static struct doveadm_cmd_ver2 lmdb_commands[] = {
	{
		.name = "lmdb stats",
		.usage = "",
		.mail_cmd = lmdb_cmd_stats_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "lmdb verify",
		.usage = "[-r]",
		.mail_cmd = doveadm_lmdb_cmd_verify_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAM('r', "repair", CMD_PARAM_BOOL, 0)
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "lmdb salvage",
		.usage = "[-f]",
		.mail_cmd = doveadm_lmdb_cmd_salvage_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAM('f', "force", CMD_PARAM_BOOL, 0)
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "lmdb compact",
		.usage = "",
		.mail_cmd = lmdb_cmd_compact_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "lmdb recover",
		.usage = "",
		.mail_cmd = lmdb_cmd_recover_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAMS_END
	},
};

void doveadm_storage_lmdb_plugin_init(struct module *module ATTR_UNUSED)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(lmdb_commands); i++)
		doveadm_cmd_register_ver2(&lmdb_commands[i]);
}

void doveadm_storage_lmdb_plugin_deinit(void)
{
}
