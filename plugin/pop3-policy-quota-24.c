/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* quota_purge's hook into Dovecot 2.4's quota plugin: its test_alloc
   vfunc (in struct quota) is chained, as the trash plugin does. Space a
   purge frees is credited as 2.4's trash plugin credits it: to each
   quota root that counts the maildrop, then the transaction's effective
   ceilings are recomputed. Those two functions of the quota plugin are
   looked up at run time, as its user context is: this plugin must load
   without quota. */

#include "lib.h"
#include "array.h"
#include "quota-private.h"
#include "quota-plugin.h"
#include "pop3-policy-plugin.h"
#include "pop3-policy-records.h"
#include "pop3-policy-quota.h"

#include <dlfcn.h>

#define POP3_POLICY_QUOTA_MAX_RETRIES 3

typedef enum quota_alloc_result
pop3_policy_test_alloc_t(struct quota_transaction_context *ctx, uoff_t size,
			 struct mailbox *expunged_box, uoff_t expunged_size,
			 const struct quota_overrun **overruns_r,
			 const char **error_r);
typedef void
pop3_policy_root_expunged_t(struct quota_transaction_root_context *rctx,
			    uint64_t count_expunged, uint64_t bytes_expunged);
typedef void
pop3_policy_update_expunged_t(struct quota_transaction_context *ctx);

struct pop3_policy_quota_hook {
	struct quota *quota;
	/* the next test_alloc of this user's chain */
	pop3_policy_test_alloc_t *next_test_alloc;
	pop3_policy_root_expunged_t *root_expunged;
	pop3_policy_update_expunged_t *update_expunged;
};

bool pop3_policy_quota_uses_vsizes(struct pop3_policy_user *puser)
{
	return puser->quota_hook->quota->vsizes;
}

static int64_t pop3_policy_quota_minus(int64_t used, uint64_t freed)
{
	if (freed > (uint64_t)INT64_MAX)
		freed = INT64_MAX;
	return used < INT64_MIN + (int64_t)freed ? INT64_MIN :
		used - (int64_t)freed;
}

/* The transaction as 2.4 judges it: usage less what was expunged in
   separate transactions (and the mail a MOVE or REPLACE expunges). */
static void
pop3_policy_quota_get_state(const struct quota_transaction_context *ctx,
			    uoff_t expunged_size,
			    struct pop3_policy_quota_state *state_r)
{
	i_zero(state_r);
	state_r->bytes_used = pop3_policy_quota_minus(ctx->bytes_used,
		ctx->bytes_expunged);
	state_r->bytes_used = pop3_policy_quota_minus(state_r->bytes_used,
		expunged_size);
	state_r->count_used = pop3_policy_quota_minus(ctx->count_used,
		ctx->count_expunged);
	if (expunged_size > 0) {
		state_r->count_used =
			pop3_policy_quota_minus(state_r->count_used, 1);
	}
	state_r->bytes_ceil = ctx->bytes_ceil;
	state_r->count_ceil = ctx->count_ceil;
	state_r->bytes_over = ctx->bytes_over;
	state_r->count_over = ctx->count_over;
}

static void
pop3_policy_quota_credit_ctx(struct pop3_policy_user *puser,
			     struct quota_transaction_context *ctx,
			     uint64_t bytes_freed, uint64_t count_freed)
{
	struct pop3_policy_quota_hook *hook = puser->quota_hook;
	struct mail_namespace *ns = pop3_policy_user_inbox_ns(puser->user);
	struct quota_root *const *roots;
	unsigned int i, count;

	roots = array_get(&hook->quota->all_roots, &count);
	for (i = 0; i < count; i++) {
		/* the roots counting the maildrop (count has no
		   match_box: a root counts its namespaces) */
		if (array_lsearch_ptr(&roots[i]->namespaces, ns) == NULL)
			continue;
		hook->root_expunged(&ctx->roots[i], count_freed, bytes_freed);
	}
	hook->update_expunged(ctx);
}

static enum quota_alloc_result
pop3_policy_quota_test_alloc(struct quota_transaction_context *ctx,
			     uoff_t size, struct mailbox *expunged_box,
			     uoff_t expunged_size,
			     const struct quota_overrun **overruns_r,
			     const char **error_r)
{
	struct pop3_policy_user *puser =
		POP3_POLICY_USER_CONTEXT(ctx->quota->user);
	struct pop3_policy_quota_hook *hook;
	struct pop3_policy_quota_state state;
	enum quota_alloc_result ret;
	uint64_t bytes_needed, count_needed, bytes_freed, count_freed;
	unsigned int i;

	i_assert(puser != NULL && puser->quota_hook != NULL &&
		 puser->quota_hook->next_test_alloc != NULL);
	hook = puser->quota_hook;
	ret = hook->next_test_alloc(ctx, size, expunged_box, expunged_size,
				    overruns_r, error_r);
	/* Only a save or copy has a transaction open on its mailbox: RCPT
	   time checks (quota-status, LMTP's) have none and must not delete
	   anything. */
	if (ret != QUOTA_ALLOC_RESULT_OVER_QUOTA || puser->quota_purging ||
	    ctx->box == NULL || ctx->box->transaction_count == 0)
		return ret;

	puser->quota_purging = TRUE;
	for (i = 0; i < POP3_POLICY_QUOTA_MAX_RETRIES &&
		    ret == QUOTA_ALLOC_RESULT_OVER_QUOTA; i++) {
		pop3_policy_quota_get_state(ctx, expunged_box == NULL ? 0 :
					    expunged_size, &state);
		pop3_policy_quota_needed(&state, size, &bytes_needed,
					 &count_needed);
		if (bytes_needed == 0 && count_needed == 0)
			break;
		bytes_freed = count_freed = 0;
		if (pop3_policy_quota_purge(puser, bytes_needed, count_needed,
					    &bytes_freed, &count_freed) <= 0)
			break;
		pop3_policy_quota_credit_ctx(puser, ctx, bytes_freed,
					     count_freed);
		ret = hook->next_test_alloc(ctx, size, expunged_box,
					    expunged_size, overruns_r, error_r);
	}
	puser->quota_purging = FALSE;
	return ret;
}

int pop3_policy_quota_user_init(struct pop3_policy_user *puser,
				const char **error_r)
{
	struct mail_user *user = puser->user;
	struct pop3_policy_quota_hook *hook;
	struct quota_user *quser;
	struct quota_root *root;

	/* the quota-status service only asks; nothing may be deleted
	   there */
	if (user->service != NULL && strcmp(user->service, "quota-status") == 0)
		return 0;
	quser = pop3_policy_quota_user(user);
	if (quser == NULL || quser->quota == NULL) {
		*error_r = "pop3_policy_quota_purge=yes needs the quota "
			"plugin in mail_plugins (before pop3_policy)";
		return -1;
	}
	array_foreach_elem(&quser->quota->all_roots, root) {
		if (strcmp(root->backend.name, "count") != 0) {
			*error_r = t_strdup_printf(
				"pop3_policy_quota_purge=yes needs the count "
				"quota driver, but quota %s uses %s "
				"(an LMDB file never shrinks, so only count "
				"sees space freed by expunges)",
				root->set->quota_name, root->backend.name);
			return -1;
		}
	}
	hook = p_new(user->pool, struct pop3_policy_quota_hook, 1);
	hook->quota = quser->quota;
	hook->root_expunged = (pop3_policy_root_expunged_t *)
		dlsym(RTLD_DEFAULT, "quota_transaction_root_expunged");
	hook->update_expunged = (pop3_policy_update_expunged_t *)
		dlsym(RTLD_DEFAULT, "quota_transaction_update_expunged");
	if (hook->root_expunged == NULL || hook->update_expunged == NULL) {
		*error_r = "pop3_policy_quota_purge=yes: this quota plugin "
			"lacks quota_transaction_root_expunged()";
		return -1;
	}
	puser->quota_hook = hook;
	if (hook->quota->test_alloc == pop3_policy_quota_test_alloc)
		return 0;
	hook->next_test_alloc = hook->quota->test_alloc;
	hook->quota->test_alloc = pop3_policy_quota_test_alloc;
	return 0;
}
