/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "mail-namespace.h"
#include "mail-search-build.h"
#include "pop3-policy-env.h"
#include "pop3-policy-plugin.h"

/* Forgetting messages that left the maildrop, so that the environment
   holds what is in the maildrop plus the UIDL reservations, not the
   whole history. A message record is dropped:

   - by keep_days, right after its removal (pop3-policy-retention.c);
   - by the quota purge, right after, once no copy is left
     (pop3-policy-quota.c);
   - after a POP3 session whose DELEs expunged or moved it, at its
     logout, unless a copy with the same GUID is still there;
   - otherwise (IMAP expunges and moves, other clients) by the full
     sweep, at the first POP3 logout of a day and at every
     "doveadm pop3-policy run".

   The UIDL reservation ("uidls") stays: see pop3-policy-records.h. */

#define POP3_POLICY_SWEEP_INTERVAL_SECS (24 * 60 * 60)

struct pop3_policy_forget_ctx {
	const ARRAY_TYPE(const_string) *guids;
	/* the time of this full sweep, 0 if it isn't one */
	uint64_t sweep_time;
};

static int
pop3_policy_forget_write(struct pop3_policy_env *env, MDB_txn *txn,
			 void *context, const char **error_r)
{
	struct pop3_policy_forget_ctx *ctx = context;
	const char *guid;
	int ret;

	array_foreach_elem(ctx->guids, guid) {
		if ((ret = pop3_policy_env_msg_del(env, txn, guid,
						   error_r)) != 0)
			return ret;
	}
	if (ctx->sweep_time != 0)
		return pop3_policy_env_sweep_put(env, txn, ctx->sweep_time,
						 error_r);
	return 0;
}

static int
pop3_policy_forget_full(struct pop3_policy_user *puser,
			const ARRAY_TYPE(const_string) *guids,
			uint64_t sweep_time, const char **error_r)
{
	struct pop3_policy_forget_ctx ctx = {
		.guids = guids,
		.sweep_time = sweep_time,
	};
	struct pop3_policy_env *env;

	if (array_count(guids) == 0 && sweep_time == 0)
		return 0;
	if (pop3_policy_user_get_env(puser, &env, error_r) < 0)
		return -1;
	return pop3_policy_env_write(env, pop3_policy_forget_write, &ctx,
				     error_r) == 0 ? 0 : -1;
}

int pop3_policy_forget(struct pop3_policy_user *puser,
		       const ARRAY_TYPE(const_string) *guids,
		       const char **error_r)
{
	return pop3_policy_forget_full(puser, guids, 0, error_r);
}

struct pop3_policy_sweep_collect {
	struct pop3_policy_user *puser;
	pool_t pool;
	HASH_TABLE(char *, char *) candidates;
};

static int
pop3_policy_sweep_collect_all(const struct pop3_policy_msg_record *rec,
			      const char *error, void *context)
{
	struct pop3_policy_sweep_collect *ctx = context;
	char *guid;

	if (rec == NULL) {
		/* left alone: a record that can't be read can't be
		   matched with a message either */
		e_error(ctx->puser->user->event, POP3_POLICY_LOG_PREFIX"%s",
			error);
		return 0;
	}
	guid = p_strdup(ctx->pool, rec->guid);
	hash_table_update(ctx->candidates, guid, guid);
	return 0;
}

/* Only those of guids that have a record are candidates. */
static int
pop3_policy_sweep_collect_some(struct pop3_policy_sweep_collect *ctx,
			       struct pop3_policy_env *env,
			       const ARRAY_TYPE(const_string) *guids,
			       const char **error_r)
{
	struct pop3_policy_msg_record rec;
	const char *guid, *damage;
	MDB_txn *txn;
	char *copy;
	int ret = 0;

	if (pop3_policy_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	array_foreach_elem(guids, guid) {
		ret = pop3_policy_env_msg_lookup(env, txn, guid, &rec, &damage,
						 error_r);
		if (ret < 0)
			break;
		if (damage != NULL) {
			/* left alone, as by the full sweep: the others are
			   still dropped */
			e_error(ctx->puser->user->event,
				POP3_POLICY_LOG_PREFIX"%s", damage);
		}
		if (ret > 0) {
			copy = p_strdup(ctx->pool, guid);
			hash_table_update(ctx->candidates, copy, copy);
		}
	}
	pop3_policy_env_read_end(env, &txn);
	return ret < 0 ? -1 : 0;
}

/* Strike every candidate the maildrop still has. A message whose GUID
   can't be read (damaged on disk) may be any candidate: then all of
   them are struck, so that no record is dropped while its message may
   still be there; the next sweep tries again. */
static int
pop3_policy_sweep_strike_present(struct pop3_policy_sweep_collect *ctx,
				 const char **error_r)
{
	struct mail_namespace *ns = pop3_policy_user_inbox_ns(ctx->puser->user);
	struct mailbox *box;
	struct mailbox_transaction_context *trans;
	struct mail_search_context *search_ctx;
	struct mail_search_args *search_args;
	struct mail *mail;
	const char *guid;
	bool skipped = FALSE;
	int ret = 0;

	if (ns == NULL) {
		*error_r = "User has no INBOX namespace";
		return -1;
	}
	box = mailbox_alloc(ns->list, "INBOX", 0);
	if (mailbox_sync(box, MAILBOX_SYNC_FLAG_FULL_READ) < 0) {
		*error_r = t_strdup(mailbox_get_last_internal_error(box, NULL));
		mailbox_free(&box);
		return -1;
	}
	trans = mailbox_transaction_begin(box, 0, "pop3_policy sweep");
	search_args = mail_search_build_init();
	mail_search_build_add_all(search_args);
	search_ctx = mailbox_search_init(trans, search_args, NULL,
					 MAIL_FETCH_GUID, NULL);
	mail_search_args_unref(&search_args);
	while (hash_table_count(ctx->candidates) > 0 &&
	       mailbox_search_next(search_ctx, &mail)) {
		if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0) {
			e_warning(ctx->puser->user->event,
				  POP3_POLICY_LOG_PREFIX"sweep: skipping %s "
				  "UID %u, its GUID can't be read (no record "
				  "is dropped this time): %s",
				  mailbox_get_vname(box), mail->uid,
				  mailbox_get_last_internal_error(box, NULL));
			skipped = TRUE;
			continue;
		}
		(void)hash_table_try_remove(ctx->candidates, guid);
	}
	if (mailbox_search_deinit(&search_ctx) < 0)
		ret = -1;
	if (skipped)
		hash_table_clear(ctx->candidates, TRUE);
	mailbox_transaction_rollback(&trans);
	if (ret < 0)
		*error_r = t_strdup(mailbox_get_last_internal_error(box, NULL));
	mailbox_free(&box);
	return ret;
}

int pop3_policy_sweep(struct pop3_policy_user *puser,
		      const ARRAY_TYPE(const_string) *guids,
		      unsigned int *forgotten_r, const char **error_r)
{
	struct pop3_policy_sweep_collect ctx;
	struct hash_iterate_context *iter;
	ARRAY_TYPE(const_string) gone;
	struct pop3_policy_env *env;
	char *key, *value;
	uint64_t sweep_time;
	int ret;

	*forgotten_r = 0;
	if (pop3_policy_user_get_env(puser, &env, error_r) < 0)
		return -1;
	i_zero(&ctx);
	ctx.puser = puser;
	ctx.pool = pool_alloconly_create("pop3_policy sweep", 1024);
	hash_table_create(&ctx.candidates, ctx.pool, 0, str_hash, strcmp);

	/* records first, the maildrop after: a record written meanwhile
	   is no candidate, and a message that arrived meanwhile is seen */
	sweep_time = guids == NULL ? (uint64_t)pop3_policy_now() : 0;
	if (guids == NULL) {
		ret = pop3_policy_env_msg_iter(env,
			pop3_policy_sweep_collect_all, &ctx, error_r);
	} else {
		ret = pop3_policy_sweep_collect_some(&ctx, env, guids,
						     error_r);
	}
	if (ret == 0 && hash_table_count(ctx.candidates) > 0)
		ret = pop3_policy_sweep_strike_present(&ctx, error_r);
	if (ret == 0) {
		p_array_init(&gone, ctx.pool,
			     hash_table_count(ctx.candidates) + 1);
		iter = hash_table_iterate_init(ctx.candidates);
		while (hash_table_iterate(iter, ctx.candidates, &key, &value))
			array_push_back(&gone, (const char **)&value);
		hash_table_iterate_deinit(&iter);
		ret = pop3_policy_forget_full(puser, &gone, sweep_time,
					      error_r);
		if (ret == 0)
			*forgotten_r = array_count(&gone);
	}
	hash_table_destroy(&ctx.candidates);
	pool_unref(&ctx.pool);
	return ret;
}

static bool pop3_policy_sweep_full_due(struct pop3_policy_user *puser,
				       struct pop3_policy_env *env)
{
	uint64_t last_sweep;
	MDB_txn *txn;
	const char *error;
	int ret;

	if (pop3_policy_env_read_begin(env, &txn, &error) < 0) {
		e_error(puser->user->event, POP3_POLICY_LOG_PREFIX"%s", error);
		return FALSE;
	}
	ret = pop3_policy_env_sweep_get(env, txn, &last_sweep, &error);
	pop3_policy_env_read_end(env, &txn);
	if (ret < 0) {
		/* the sweep rewrites the record */
		e_error(puser->user->event, POP3_POLICY_LOG_PREFIX"%s", error);
		return TRUE;
	}
	/* a clock set back makes last_sweep lie in the future: sweep */
	return last_sweep + POP3_POLICY_SWEEP_INTERVAL_SECS <=
		(uint64_t)pop3_policy_now() ||
		last_sweep > (uint64_t)pop3_policy_now();
}

void pop3_policy_sweep_at_logout(struct pop3_policy_user *puser)
{
	const ARRAY_TYPE(const_string) *guids = NULL;
	struct pop3_policy_env *env;
	unsigned int forgotten;
	const char *error;
	int ret;

	/* no file: nothing to forget, and no reason to create one */
	ret = pop3_policy_user_get_env_if_exists(puser, &env, &error);
	if (ret <= 0) {
		if (ret < 0) {
			e_error(puser->user->event, POP3_POLICY_LOG_PREFIX
				"%s", error);
		}
		return;
	}
	if (!pop3_policy_sweep_full_due(puser, env)) {
		if (!array_is_created(&puser->dele_gone) ||
		    array_count(&puser->dele_gone) == 0)
			return;
		guids = &puser->dele_gone;
	}
	if (pop3_policy_sweep(puser, guids, &forgotten, &error) < 0) {
		e_error(puser->user->event, POP3_POLICY_LOG_PREFIX
			"Dropping records of messages no longer in INBOX "
			"failed: %s", error);
	} else if (forgotten > 0) {
		e_debug(puser->user->event, POP3_POLICY_LOG_PREFIX
			"forgot %u messages no longer in INBOX", forgotten);
	}
}
