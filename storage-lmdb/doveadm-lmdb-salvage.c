/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "str.h"
#include "file-lock.h"
#include "unlink-directory.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "doveadm-mail.h"
#include "dlmdb-compat.h"
#include "doveadm-print.h"
#include "lmdb-storage.h"
#include "doveadm-lmdb.h"
#include "doveadm-lmdb-salvage.h"

#include <fcntl.h>

/* doveadm lmdb salvage [-f]: build a fresh environment from what is still
   readable in a damaged one (lmdb-salvage.c), keep the damaged file
   aside, put the new one in its place and make every mailbox's index
   agree with it; report what was lost.

   1. The user's storage is created without opening the environment
      (lmdb_storage_no_env_open): LMDB's code never reads the damaged
      file, only lmdb-pagescan does.
   2. The swap lock is held exclusively from before the check for other
      processes until the new file is in place: opens wait (and fail
      after 30 seconds) meanwhile.
   3. A process that has the environment open would go on writing into
      the damaged file after the swap, and those writes would be lost:
      the command refuses (naming the processes) unless -f is given.
   4. What the indexes know (each mailbox's GUID, name, UIDs; for the
      salvage's lookup flags, keywords, cached Message-IDs and UIDLs) is
      read with lib-index alone, before the swap
      (doveadm-lmdb-salvage-index.c).
   5. The swap: the damaged data.mdb gets a second name,
      data.mdb.damaged-<time>, lock.mdb is moved aside likewise, the new
      file is renamed over data.mdb, the directory synced. data.mdb
      exists at every moment: a crash leaves either file in place.
   6. With the new environment open: mailboxes that exist in it but not
      in the mailbox list are created (as doveadm lmdb recover does),
      and every mailbox's index is rebuilt from its links (as doveadm
      force-resync does, keeping the old index's flags). */

#define LMDB_SALVAGE_DIR_NAME "salvage.tmp"
#define LMDB_SALVAGE_LOCK_TIMEOUT_SECS 30

struct lmdb_salvage_cmd_context {
	struct doveadm_mail_cmd_context ctx;
	bool force;
};

/* --- the report --- */

static void lmdb_salvage_print(const char *mailbox, uint32_t uid,
			       const char *message_id, const char *status)
{
	doveadm_print(mailbox);
	doveadm_print(uid == 0 ? "-" : dec2str(uid));
	doveadm_print(message_id == NULL ? "-" : message_id);
	doveadm_print(status);
}

static void lmdb_salvage_total(const char *what, uint64_t count)
{
	lmdb_salvage_print("-", 0, NULL,
			   t_strdup_printf("%s: %"PRIu64, what, count));
}

/* Prints the report; returns TRUE if anything was lost. */
static bool lmdb_salvage_report(const struct lmdb_salvage_result *result)
{
	const struct lmdb_salvage_message *msg;
	const struct lmdb_salvage_mailbox_note *note;
	unsigned int names_lost = 0;

	array_foreach(&result->lost, msg) {
		lmdb_salvage_print(msg->mailbox_name, msg->uid,
				   msg->message_id,
				   t_strconcat("lost: ", msg->reason, NULL));
	}
	array_foreach(&result->restored, msg) {
		lmdb_salvage_print(msg->mailbox_name, msg->uid,
				   msg->message_id,
				   t_strconcat("restored: ", msg->reason, NULL));
	}
	array_foreach(&result->relinked, msg) {
		lmdb_salvage_print(msg->mailbox_name, msg->uid,
				   msg->message_id,
				   t_strconcat("recovered: ", msg->reason, NULL));
	}
	array_foreach(&result->mailboxes, note) {
		const char *status = NULL;

		switch (note->fate) {
		case LMDB_SALVAGE_MAILBOX_FROM_INDEX:
			status = "mailbox record rebuilt from its index";
			break;
		case LMDB_SALVAGE_MAILBOX_NAME_LOST:
			status = t_strdup_printf("mailbox name lost: %u "
				"messages kept under this name", note->links);
			names_lost++;
			break;
		case LMDB_SALVAGE_MAILBOX_RECOVERY:
			status = t_strdup_printf("holds the %u messages whose "
				"links were lost", note->links);
			break;
		}
		lmdb_salvage_print(note->name, 0, NULL, status);
	}
	lmdb_salvage_total("records kept from trees",
			   result->records_tree);
	lmdb_salvage_total("records kept from orphan pages",
			   result->records_orphan);
	lmdb_salvage_total("records damaged", result->records_damaged);
	lmdb_salvage_total("orphan records unreadable",
			   result->orphans_unreadable);
	lmdb_salvage_total("orphan records duplicate",
			   result->records_duplicate);
	lmdb_salvage_total("orphan links expunged before",
			   result->records_stale);
	lmdb_salvage_total("records misplaced", result->records_misplaced);
	if (result->records_unverified > 0) {
		lmdb_salvage_total("records unverified (schema 1: no "
				   "checksums)", result->records_unverified);
	}
	lmdb_salvage_total("pages unreadable",
			   result->scan.pages_unreadable);
	lmdb_salvage_total("pages missing", result->scan.pages_missing);
	lmdb_salvage_total("messages kept", result->links);
	lmdb_salvage_total("messages lost", array_count(&result->lost));
	lmdb_salvage_total("messages restored",
			   array_count(&result->restored));
	lmdb_salvage_total("messages recovered",
			   array_count(&result->relinked));
	lmdb_salvage_total("bodies rebuilt", result->bodies_rebuilt);
	lmdb_salvage_total("bodies lost", result->bodies_lost);
	lmdb_salvage_total("bodies without links (freed by purge)",
			   result->bodies_unlinked);
	lmdb_salvage_total("mailbox names lost", names_lost);
	if (result->meta_fallback_reason != NULL) {
		lmdb_salvage_print("-", 0, NULL, t_strconcat(
			"the newest transaction was unreadable: ",
			result->meta_fallback_reason, NULL));
	}
	return array_count(&result->lost) > 0 || names_lost > 0;
}

/* --- the command --- */

static int
lmdb_salvage_build_locked(struct lmdb_salvage_cmd_context *ctx,
			  struct mail_user *user, struct lmdb_storage *storage,
			  pool_t pool, ARRAY_TYPE(lmdb_salvage_listed) *listed,
			  struct lmdb_salvage_result **result_r)
{
	const char *root = storage->env_path;
	const char *dest = t_strconcat(root, "/"LMDB_SALVAGE_DIR_NAME, NULL);
	struct lmdb_salvage_settings set;
	struct lmdb_salvage_lookup *lookup;
	ARRAY_TYPE(lmdb_salvage_mailbox_info) infos;
	struct mail_namespace *ns;
	const char *holders, *error, *aside = NULL;
	struct stat st;
	int ret;

	holders = lmdb_salvage_holders(root);
	if (holders != NULL && !ctx->force) {
		i_error("lmdb salvage: %s is open by process(es) %s: they "
			"would go on writing into the damaged file after the "
			"swap. Stop them (doveadm kick, or stop the services) "
			"and try again, or use -f to salvage anyway", root,
			holders);
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_INUSE);
		return -1;
	}
	if (holders != NULL) {
		i_warning("lmdb salvage: %s is open by process(es) %s (-f): "
			  "what they write from now on is lost", root, holders);
	}

	p_array_init(&infos, pool, 16);
	if (lmdb_salvage_collect(user, &storage->storage, pool, listed,
				 &infos) < 0) {
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	if (stat(dest, &st) == 0 &&
	    unlink_directory(dest, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0) {
		i_error("lmdb salvage: %s", error);
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	if (mkdir(dest, 0700) < 0) {
		i_error("lmdb salvage: mkdir(%s) failed: %m", dest);
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	if (stat(t_strconcat(root, "/data.mdb", NULL), &st) < 0)
		i_zero(&st);

	ns = mail_namespace_find_inbox(user->namespaces);
	i_zero(&set);
	set.data_path = t_strconcat(root, "/data.mdb", NULL);
	set.dest_dir = dest;
	set.env_set = storage->set.env;
	set.env_set.mode = (st.st_mode & 0777) != 0 ?
		(st.st_mode & 0777) : storage->set.env.mode;
	set.hierarchy_sep = mail_namespace_get_sep(ns);
	set.now = ioloop_time;
	set.mailboxes = array_get(&infos, &set.mailboxes_count);
	lookup = lmdb_salvage_lookup_init(listed);
	set.lookup = lmdb_salvage_lookup_uid;
	set.lookup_context = lookup;
	ret = lmdb_salvage_build(&set, result_r, &error);
	lmdb_salvage_lookup_deinit(&lookup);
	if (ret < 0) {
		i_error("lmdb salvage: %s (nothing was changed)", error);
		(void)unlink_directory(dest, UNLINK_DIRECTORY_FLAG_RMDIR,
				       &error);
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
		return -1;
	}

	if (lmdb_salvage_swap(root, dest, &aside, &error) < 0) {
		i_error("lmdb salvage: %s", error);
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
		if (aside == NULL) {
			/* nothing changed */
			(void)unlink_directory(dest,
				UNLINK_DIRECTORY_FLAG_RMDIR, &error);
			lmdb_salvage_result_free(result_r);
			return -1;
		}
	} else {
		i_info("lmdb salvage: %s replaced by the salvaged "
		       "environment; the damaged file is %s", root, aside);
	}
	if (unlink_directory(dest, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0)
		i_error("lmdb salvage: %s", error);
	return 0;
}

static int
lmdb_cmd_salvage_run(struct doveadm_mail_cmd_context *_ctx,
		     struct mail_user *user)
{
	struct lmdb_salvage_cmd_context *ctx =
		container_of(_ctx, struct lmdb_salvage_cmd_context, ctx);
	struct lmdb_storage *storage = doveadm_lmdb_get_storage(_ctx, user);
	struct lmdb_salvage_result *result = NULL;
	ARRAY_TYPE(lmdb_salvage_listed) listed;
	struct file_lock *lock;
	const char *root, *error;
	struct stat st;
	pool_t pool;
	int ret;

	if (storage == NULL)
		return -1;
	root = storage->env_path;
	if (storage->env != NULL) {
		/* the hook didn't apply: the environment was opened */
		i_error("lmdb salvage: %s was opened before the salvage "
			"could start", root);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	if (stat(t_strconcat(root, "/data.mdb", NULL), &st) < 0) {
		i_error("lmdb salvage: stat(%s/data.mdb) failed: %m", root);
		doveadm_mail_failed_error(_ctx, errno == ENOENT ?
					  MAIL_ERROR_NOTFOUND : MAIL_ERROR_TEMP);
		return -1;
	}
	/* new opens wait from here until the new file is in place */
	if (lmdb_env_swap_lock_dir(root, st.st_mode & 0777, F_WRLCK,
				   LMDB_SALVAGE_LOCK_TIMEOUT_SECS, &lock,
				   &error) < 0) {
		i_error("lmdb salvage: %s", error);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	pool = pool_alloconly_create("lmdb salvage cmd", 4096);
	p_array_init(&listed, pool, 16);
	ret = lmdb_salvage_build_locked(ctx, user, storage, pool, &listed,
					&result);
	/* released before this process opens the environment itself,
	   which takes the same lock shared */
	file_unlock(&lock);
	if (ret < 0) {
		lmdb_salvage_result_free(&result);
		pool_unref(&pool);
		return -1;
	}

	if (lmdb_env_open(root, &storage->set.env, &storage->env,
			  &error) < 0) {
		i_error("lmdb salvage: opening the salvaged environment "
			"failed: %s", error);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		ret = -1;
	} else if (lmdb_salvage_create_missing(user, storage, pool,
					       &listed) < 0 ||
		   lmdb_salvage_resync(&listed) < 0) {
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		ret = -1;
	}
	if (lmdb_salvage_report(result))
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_NOTPOSSIBLE);
	lmdb_salvage_result_free(&result);
	pool_unref(&pool);
	return ret;
}

static void lmdb_cmd_salvage_init(DLMDB_DOVEADM_INIT_PARAMS(_ctx))
{
	struct lmdb_salvage_cmd_context *ctx =
		container_of(_ctx, struct lmdb_salvage_cmd_context, ctx);

	(void)doveadm_cmd_param_bool(_ctx->cctx, "force", &ctx->force);
	doveadm_print_header_simple("mailbox");
	doveadm_print_header_simple("uid");
	doveadm_print_header_simple("message-id");
	doveadm_print_header_simple("status");
}

static void lmdb_cmd_salvage_deinit(struct doveadm_mail_cmd_context *ctx ATTR_UNUSED)
{
	/* a doveadm server process runs other commands after this one */
	lmdb_storage_no_env_open = FALSE;
}

struct doveadm_mail_cmd_context *doveadm_lmdb_cmd_salvage_alloc(void)
{
	struct lmdb_salvage_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct lmdb_salvage_cmd_context);
	dlmdb_doveadm_cmd_accept_options(&ctx->ctx, "f");
	ctx->ctx.v.run = lmdb_cmd_salvage_run;
	ctx->ctx.v.init = lmdb_cmd_salvage_init;
	ctx->ctx.v.deinit = lmdb_cmd_salvage_deinit;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TAB);
	/* before the user's storage is created: its environment must not
	   be opened (lmdb_storage_create()) */
	lmdb_storage_no_env_open = TRUE;
	return &ctx->ctx;
}
