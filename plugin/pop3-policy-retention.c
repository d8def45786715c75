/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "hash.h"
#include "mail-namespace.h"
#include "mail-search-build.h"
#include "pop3-policy-env.h"
#include "pop3-policy-plugin.h"

/* keep_days: a message a POP3 client downloaded is removed keep_days
   after its first download, DELE or not. Mail nobody downloaded is
   never touched. The due messages are read from the "downloads" index,
   oldest first, so a pass where nothing is due costs one index lookup
   whatever the history; only when something is due is the maildrop
   scanned to find it. */

struct pop3_policy_retention_collect {
	struct pop3_policy_user *puser;
	pool_t pool;
	/* guid -> guid, messages due */
	HASH_TABLE(char *, char *) due;
	/* GUIDs of the messages removed by this pass */
	ARRAY_TYPE(const_string) removed;
	/* messages whose GUID couldn't be read: any of them may be one of
	   the due ones */
	unsigned int skipped;
};

static int
pop3_policy_retention_collect(const struct pop3_policy_msg_record *rec,
			      const char *error, void *context)
{
	struct pop3_policy_retention_collect *ctx = context;
	char *guid;

	if (rec == NULL) {
		/* one bad record must not stop the others */
		e_error(ctx->puser->user->event, POP3_POLICY_LOG_PREFIX"%s",
			error);
		return 0;
	}
	guid = p_strdup(ctx->pool, rec->guid);
	hash_table_update(ctx->due, guid, guid);
	return 0;
}

static int
pop3_policy_retention_apply(struct pop3_policy_user *puser,
			    struct pop3_policy_retention_collect *collect,
			    bool dry_run,
			    pop3_policy_action_callback_t *callback,
			    void *context, const char **error_r)
{
	struct mail_namespace *ns = pop3_policy_user_inbox_ns(puser->user);
	struct mailbox *box;
	struct mailbox_transaction_context *trans;
	struct mail_search_context *search_ctx;
	struct mail_search_args *search_args;
	struct mail *mail;
	ARRAY_TYPE(const_string) lines;
	const char *guid, *line;
	uoff_t vsize;
	int ret = 0;

	box = mailbox_alloc(ns->list, "INBOX", 0);
	if (mailbox_sync(box, MAILBOX_SYNC_FLAG_FULL_READ) < 0) {
		*error_r = mailbox_get_last_internal_error(box, NULL);
		mailbox_free(&box);
		return -1;
	}
	t_array_init(&lines, 16);
	trans = mailbox_transaction_begin(box, 0, "pop3_policy keep_days");
	search_args = mail_search_build_init();
	mail_search_build_add_all(search_args);
	search_ctx = mailbox_search_init(trans, search_args, NULL,
					 MAIL_FETCH_GUID |
					 MAIL_FETCH_VIRTUAL_SIZE, NULL);
	mail_search_args_unref(&search_args);
	while (mailbox_search_next(search_ctx, &mail)) {
		if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0) {
			/* one unreadable message (damaged on disk) must not
			   stop the removal of the others */
			e_warning(puser->user->event, POP3_POLICY_LOG_PREFIX
				  "keep_days: skipping %s UID %u, its GUID "
				  "can't be read: %s", mailbox_get_vname(box),
				  mail->uid,
				  mailbox_get_last_internal_error(box, NULL));
			collect->skipped++;
			continue;
		}
		if (hash_table_lookup(collect->due, guid) == NULL)
			continue;
		if (mail_get_virtual_size(mail, &vsize) < 0)
			vsize = 0;
		line = pop3_policy_audit_line("remove", guid,
			pop3_policy_mail_get_uidl(puser, mail), vsize,
			"keep-days");
		array_push_back(&lines, &line);
		if (!dry_run) {
			mail_expunge(mail);
			guid = p_strdup(collect->pool, guid);
			array_push_back(&collect->removed, &guid);
		}
	}
	if (mailbox_search_deinit(&search_ctx) < 0)
		ret = -1;
	if (ret < 0 || dry_run || array_count(&collect->removed) == 0)
		mailbox_transaction_rollback(&trans);
	else if (mailbox_transaction_commit(&trans) < 0 ||
		 mailbox_sync(box, 0) < 0)
		ret = -1;
	if (ret < 0) {
		*error_r = mailbox_get_last_internal_error(box, NULL);
		array_clear(&collect->removed);
	} else {
		/* only what was committed (or would be, dry_run) */
		array_foreach_elem(&lines, line) {
			if (!dry_run)
				e_info(puser->user->event, "%s", line);
			if (callback != NULL)
				callback(line, context);
		}
	}
	mailbox_free(&box);
	return ret;
}

/* The due messages are gone now (removed, or already gone before):
   forget them. If a message couldn't be read, a due one not found may
   be that message: then only the removed ones are forgotten, and the
   others stay due for the next pass. */
static void
pop3_policy_retention_forget(struct pop3_policy_retention_collect *collect)
{
	struct hash_iterate_context *iter;
	ARRAY_TYPE(const_string) all;
	const ARRAY_TYPE(const_string) *guids = &collect->removed;
	char *key, *value;
	const char *error;

	if (collect->skipped == 0) {
		t_array_init(&all, hash_table_count(collect->due));
		iter = hash_table_iterate_init(collect->due);
		while (hash_table_iterate(iter, collect->due, &key, &value))
			array_push_back(&all, (const char **)&value);
		hash_table_iterate_deinit(&iter);
		guids = &all;
	}
	if (pop3_policy_forget(collect->puser, guids, &error) < 0) {
		e_error(collect->puser->user->event, POP3_POLICY_LOG_PREFIX
			"Dropping records of removed messages failed: %s",
			error);
	}
}

int pop3_policy_retention_run(struct mail_user *user, bool dry_run,
			      pop3_policy_action_callback_t *callback,
			      void *context, const char **error_r)
{
	struct pop3_policy_user *puser = POP3_POLICY_USER_CONTEXT(user);
	struct pop3_policy_retention_collect collect;
	struct pop3_policy_env *env;
	int ret;

	if (puser == NULL) {
		*error_r = "pop3_policy is not in mail_plugins";
		return -1;
	}
	if (puser->set.keep_days == 0)
		return 0;
	if (pop3_policy_user_get_env(puser, &env, error_r) < 0)
		return -1;

	i_zero(&collect);
	collect.puser = puser;
	collect.pool = pool_alloconly_create("pop3_policy retention", 1024);
	hash_table_create(&collect.due, collect.pool, 0, str_hash, strcmp);
	p_array_init(&collect.removed, collect.pool, 16);
	ret = pop3_policy_env_due_iter(env, puser->set.keep_days,
				       pop3_policy_now(),
				       pop3_policy_retention_collect,
				       &collect, error_r);
	if (ret == 0 && hash_table_count(collect.due) > 0) {
		ret = pop3_policy_retention_apply(puser, &collect, dry_run,
						  callback, context, error_r);
		if (ret == 0 && !dry_run) T_BEGIN {
			pop3_policy_retention_forget(&collect);
		} T_END;
	}
	hash_table_destroy(&collect.due);
	pool_unref(&collect.pool);
	return ret;
}
