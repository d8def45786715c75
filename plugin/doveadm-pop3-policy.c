/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "str.h"
#include "mail-namespace.h"
#include "mail-search-build.h"
#include "doveadm-mail.h"
#include "dlmdb-compat.h"
#include "doveadm-print.h"
#include "pop3-policy-env.h"
#include "pop3-policy-plugin.h"

/* doveadm pop3-policy uidl|freeze-uidl|run|show. This module calls into
   the mail plugin (an LMDB environment must never be opened twice in a
   process), so its first dlopen, before mail_plugins are loaded, fails
   harmlessly and the second one works. */

const char *doveadm_pop3_policy_plugin_version = DOVECOT_ABI_VERSION;

void doveadm_pop3_policy_plugin_init(struct module *module);
void doveadm_pop3_policy_plugin_deinit(void);

struct pop3_policy_cmd_context {
	struct doveadm_mail_cmd_context ctx;
	bool dry_run;
};

static struct pop3_policy_user *
pop3_policy_cmd_get_user(struct doveadm_mail_cmd_context *ctx,
			 struct mail_user *user)
{
	struct pop3_policy_user *puser = POP3_POLICY_USER_CONTEXT(user);

	if (puser == NULL) {
		i_error("pop3_policy is not in mail_plugins of user %s",
			user->username);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_NOTPOSSIBLE);
	}
	return puser;
}

/* Iterate the user's maildrop (INBOX) in UID order. */
typedef int pop3_policy_cmd_mail_func_t(struct pop3_policy_user *puser,
					struct mailbox *box, struct mail *mail,
					void *context);

static int
pop3_policy_cmd_iter_inbox(struct doveadm_mail_cmd_context *ctx,
			   struct pop3_policy_user *puser,
			   pop3_policy_cmd_mail_func_t *func, void *context)
{
	struct mail_namespace *ns = pop3_policy_user_inbox_ns(puser->user);
	struct mailbox *box;
	struct mailbox_transaction_context *trans;
	struct mail_search_context *search_ctx;
	struct mail_search_args *search_args;
	struct mail *mail;
	int ret = 0;

	if (ns == NULL) {
		i_error("User %s has no INBOX namespace", puser->user->username);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_NOTFOUND);
		return -1;
	}
	box = mailbox_alloc(ns->list, "INBOX", 0);
	if (mailbox_sync(box, MAILBOX_SYNC_FLAG_FULL_READ) < 0) {
		i_error("Syncing INBOX of %s failed: %s", puser->user->username,
			mailbox_get_last_internal_error(box, NULL));
		doveadm_mail_failed_mailbox(ctx, box);
		mailbox_free(&box);
		return -1;
	}
	trans = mailbox_transaction_begin(box, 0, "doveadm pop3-policy");
	search_args = mail_search_build_init();
	mail_search_build_add_all(search_args);
	search_ctx = mailbox_search_init(trans, search_args, NULL,
					 MAIL_FETCH_GUID | MAIL_FETCH_FLAGS,
					 NULL);
	mail_search_args_unref(&search_args);
	while (ret == 0 && mailbox_search_next(search_ctx, &mail)) T_BEGIN {
		ret = func(puser, box, mail, context);
	} T_END;
	if (mailbox_search_deinit(&search_ctx) < 0)
		ret = -1;
	if (mailbox_transaction_commit(&trans) < 0)
		ret = -1;
	if (ret < 0) {
		i_error("INBOX of %s: %s", puser->user->username,
			mailbox_get_last_internal_error(box, NULL));
		doveadm_mail_failed_mailbox(ctx, box);
	}
	/* freeze-uidl's writes are flushed here, in one transaction */
	mailbox_free(&box);
	return ret;
}

/* --- uidl --- */

struct pop3_policy_uidl_ctx {
	pool_t pool;
	/* guids and UIDLs of the maildrop's messages, printed first */
	HASH_TABLE(char *, void *) printed;
	HASH_TABLE(char *, void *) printed_uidls;
};

static int
pop3_policy_cmd_uidl_mail(struct pop3_policy_user *puser ATTR_UNUSED,
			  struct mailbox *box ATTR_UNUSED, struct mail *mail,
			  void *context)
{
	struct pop3_policy_uidl_ctx *uctx = context;
	const char *guid, *uidl;

	if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0 ||
	    mail_get_special(mail, MAIL_FETCH_UIDL_BACKEND, &uidl) < 0)
		return -1;
	if (uidl[0] == '\0' ||
	    hash_table_lookup(uctx->printed, guid) != NULL)
		return 0;
	hash_table_insert(uctx->printed, p_strdup(uctx->pool, guid),
			  POINTER_CAST(1));
	hash_table_update(uctx->printed_uidls, p_strdup(uctx->pool, uidl),
			  POINTER_CAST(1));
	doveadm_print(guid);
	doveadm_print(uidl);
	return 0;
}

struct pop3_policy_uidl_rest {
	struct pop3_policy_uidl_ctx *uctx;
	ARRAY_TYPE(const_string) lines;
	pool_t pool;
};

static int
pop3_policy_cmd_uidl_record(const char *uidl,
			    const struct pop3_policy_uidl_record *rec,
			    const char *error, void *context)
{
	struct pop3_policy_uidl_rest *rest = context;
	const char *pair[2];

	if (rec == NULL) {
		i_error("%s", error);
		return 0;
	}
	if (hash_table_lookup(rest->uctx->printed_uidls, uidl) != NULL)
		return 0;
	/* print after the read transaction: doveadm output may block */
	pair[0] = p_strdup(rest->pool, rec->guid);
	pair[1] = p_strdup(rest->pool, uidl);
	array_append(&rest->lines, pair, 2);
	return 0;
}

static int
pop3_policy_cmd_uidl_run(struct doveadm_mail_cmd_context *ctx,
			 struct mail_user *user)
{
	struct pop3_policy_user *puser = pop3_policy_cmd_get_user(ctx, user);
	struct pop3_policy_uidl_ctx uctx;
	struct pop3_policy_uidl_rest rest;
	struct pop3_policy_env *env;
	const char *const *lines, *error;
	unsigned int i, count;
	int ret;

	if (puser == NULL)
		return -1;
	i_zero(&uctx);
	uctx.pool = pool_alloconly_create("pop3_policy uidl", 1024);
	hash_table_create(&uctx.printed, uctx.pool, 0, str_hash, strcmp);
	hash_table_create(&uctx.printed_uidls, uctx.pool, 0, str_hash, strcmp);
	/* the maildrop first, in POP3 order; then the reserved UIDLs of
	   messages that are gone (a UIDL is never given to another
	   message) */
	ret = pop3_policy_cmd_iter_inbox(ctx, puser,
					 pop3_policy_cmd_uidl_mail, &uctx);
	if (ret == 0) {
		i_zero(&rest);
		rest.uctx = &uctx;
		rest.pool = uctx.pool;
		p_array_init(&rest.lines, uctx.pool, 16);
		if (pop3_policy_user_get_env(puser, &env, &error) < 0 ||
		    pop3_policy_env_uidl_iter(env, pop3_policy_cmd_uidl_record,
					      &rest, &error) < 0) {
			i_error("%s", error);
			doveadm_mail_failed_error(ctx, MAIL_ERROR_TEMP);
			ret = -1;
		}
		lines = array_get(&rest.lines, &count);
		for (i = 0; i < count; i++)
			doveadm_print(lines[i]);
	}
	hash_table_destroy(&uctx.printed);
	hash_table_destroy(&uctx.printed_uidls);
	pool_unref(&uctx.pool);
	return ret;
}

static void pop3_policy_cmd_uidl_init(DLMDB_DOVEADM_INIT_PARAMS(ctx ATTR_UNUSED))
{
	doveadm_print_header_simple("guid");
	doveadm_print_header_simple("uidl");
}

static struct doveadm_mail_cmd_context *pop3_policy_cmd_uidl_alloc(void)
{
	struct pop3_policy_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct pop3_policy_cmd_context);
	ctx->ctx.v.run = pop3_policy_cmd_uidl_run;
	ctx->ctx.v.init = pop3_policy_cmd_uidl_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TAB);
	return &ctx->ctx;
}

/* --- freeze-uidl --- */

static int
pop3_policy_cmd_freeze_mail(struct pop3_policy_user *puser ATTR_UNUSED,
			    struct mailbox *box, struct mail *mail,
			    void *context)
{
	unsigned int *count = context;
	const char *uidl;

	if (pop3_policy_uidl_freeze_current(box, mail, &uidl) < 0)
		return -1;
	(*count)++;
	return 0;
}

static int
pop3_policy_cmd_freeze_run(struct doveadm_mail_cmd_context *ctx,
			   struct mail_user *user)
{
	struct pop3_policy_user *puser = pop3_policy_cmd_get_user(ctx, user);
	unsigned int count = 0;

	if (puser == NULL)
		return -1;
	if (pop3_policy_cmd_iter_inbox(ctx, puser,
				       pop3_policy_cmd_freeze_mail,
				       &count) < 0)
		return -1;
	doveadm_print(t_strdup_printf("frozen\t%u", count));
	return 0;
}

static void pop3_policy_cmd_line_header(void)
{
	doveadm_print_header("line", "line",
			     DOVEADM_PRINT_HEADER_FLAG_HIDE_TITLE);
}

static void pop3_policy_cmd_line_init(DLMDB_DOVEADM_INIT_PARAMS(ctx ATTR_UNUSED))
{
	pop3_policy_cmd_line_header();
}

static struct doveadm_mail_cmd_context *pop3_policy_cmd_freeze_alloc(void)
{
	struct pop3_policy_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct pop3_policy_cmd_context);
	ctx->ctx.v.run = pop3_policy_cmd_freeze_run;
	ctx->ctx.v.init = pop3_policy_cmd_line_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_FLOW);
	return &ctx->ctx;
}

/* --- run --- */

static void pop3_policy_cmd_run_line(const char *line, void *context
				     ATTR_UNUSED)
{
	doveadm_print(line);
}

static int
pop3_policy_cmd_run_run(struct doveadm_mail_cmd_context *_ctx,
			struct mail_user *user)
{
	struct pop3_policy_cmd_context *ctx =
		container_of(_ctx, struct pop3_policy_cmd_context, ctx);
	struct pop3_policy_user *puser = pop3_policy_cmd_get_user(_ctx, user);
	const char *error;
	unsigned int forgotten;

	if (puser == NULL)
		return -1;
	if (pop3_policy_retention_run(user, ctx->dry_run,
				      pop3_policy_cmd_run_line, NULL,
				      &error) < 0) {
		i_error("pop3-policy run for %s failed: %s",
			user->username, error);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	if (ctx->dry_run)
		return 0;
	/* also forget what left the maildrop since the last sweep */
	if (pop3_policy_sweep(puser, NULL, &forgotten, &error) < 0) {
		i_error("pop3-policy run for %s: dropping records of messages "
			"no longer in INBOX failed: %s", user->username, error);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	e_debug(user->event, POP3_POLICY_LOG_PREFIX
		"forgot %u messages no longer in INBOX", forgotten);
	return 0;
}

static void pop3_policy_cmd_run_init(DLMDB_DOVEADM_INIT_PARAMS(_ctx))
{
	struct pop3_policy_cmd_context *ctx =
		container_of(_ctx, struct pop3_policy_cmd_context, ctx);

	(void)doveadm_cmd_param_bool(_ctx->cctx, "dry-run", &ctx->dry_run);
	pop3_policy_cmd_line_header();
}

static struct doveadm_mail_cmd_context *pop3_policy_cmd_run_alloc(void)
{
	struct pop3_policy_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct pop3_policy_cmd_context);
	dlmdb_doveadm_cmd_accept_options(&ctx->ctx, "n");
	ctx->ctx.v.run = pop3_policy_cmd_run_run;
	ctx->ctx.v.init = pop3_policy_cmd_run_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_FLOW);
	return &ctx->ctx;
}

/* --- show --- */

static int
pop3_policy_cmd_show_mail(struct pop3_policy_user *puser,
			  struct mailbox *box ATTR_UNUSED, struct mail *mail,
			  void *context ATTR_UNUSED)
{
	struct pop3_policy_msg_record rec;
	struct pop3_policy_env *env;
	const char *guid, *uidl, *flag, *const *kw, *damage, *error;
	MDB_txn *txn;
	bool hidden = FALSE;
	int ret;

	if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0 ||
	    mail_get_special(mail, MAIL_FETCH_UIDL_BACKEND, &uidl) < 0)
		return -1;
	if (pop3_policy_user_get_env(puser, &env, &error) < 0 ||
	    pop3_policy_env_read_begin(env, &txn, &error) < 0) {
		mail_set_critical(mail, "%s", error);
		return -1;
	}
	ret = pop3_policy_env_msg_lookup(env, txn, guid, &rec, &damage,
					 &error);
	pop3_policy_env_read_end(env, &txn);
	if (ret < 0) {
		mail_set_critical(mail, "%s", error);
		return -1;
	}
	if (damage != NULL) {
		/* listed, not served: the others still are */
		e_error(mail_event(mail), POP3_POLICY_LOG_PREFIX"%s", damage);
	}
	if (ret == 0)
		i_zero(&rec);
	flag = pop3_policy_user_get_deleted_flag(puser);
	if (flag != NULL) {
		for (kw = mail_get_keywords(mail); *kw != NULL; kw++) {
			if (strcasecmp(*kw, flag) == 0)
				hidden = TRUE;
		}
	} else {
		hidden = (rec.flags & POP3_POLICY_MSG_FLAG_HIDDEN) != 0;
	}
	doveadm_print(guid);
	doveadm_print(uidl[0] == '\0' ? "-" : uidl);
	doveadm_print(damage != NULL ? "damaged" :
		      rec.first_download == 0 ? "-" :
		      dec2str(rec.first_download));
	doveadm_print(hidden ? "yes" : "no");
	return 0;
}

static int
pop3_policy_cmd_show_run(struct doveadm_mail_cmd_context *ctx,
			 struct mail_user *user)
{
	struct pop3_policy_user *puser = pop3_policy_cmd_get_user(ctx, user);

	if (puser == NULL)
		return -1;
	return pop3_policy_cmd_iter_inbox(ctx, puser,
					  pop3_policy_cmd_show_mail, NULL);
}

static void pop3_policy_cmd_show_init(DLMDB_DOVEADM_INIT_PARAMS(ctx ATTR_UNUSED))
{
	doveadm_print_header_simple("guid");
	doveadm_print_header_simple("uidl");
	doveadm_print_header_simple("downloaded");
	doveadm_print_header_simple("hidden");
}

static struct doveadm_mail_cmd_context *pop3_policy_cmd_show_alloc(void)
{
	struct pop3_policy_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct pop3_policy_cmd_context);
	ctx->ctx.v.run = pop3_policy_cmd_show_run;
	ctx->ctx.v.init = pop3_policy_cmd_show_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TAB);
	return &ctx->ctx;
}

static struct doveadm_cmd_ver2 pop3_policy_commands[] = {
	{
		.name = "pop3-policy uidl",
		.usage = "",
		.mail_cmd = pop3_policy_cmd_uidl_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "pop3-policy freeze-uidl",
		.usage = "",
		.mail_cmd = pop3_policy_cmd_freeze_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "pop3-policy run",
		.usage = "[--dry-run]",
		.mail_cmd = pop3_policy_cmd_run_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAM('n', "dry-run", CMD_PARAM_BOOL, 0)
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "pop3-policy show",
		.usage = "",
		.mail_cmd = pop3_policy_cmd_show_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAMS_END
	},
};

void doveadm_pop3_policy_plugin_init(struct module *module ATTR_UNUSED)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(pop3_policy_commands); i++)
		doveadm_cmd_register_ver2(&pop3_policy_commands[i]);
}

void doveadm_pop3_policy_plugin_deinit(void)
{
}
