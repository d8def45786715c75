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
#include "mail-namespace.h"
#include "mailbox-list.h"
#include "quota-private.h"
#include "quota-plugin.h"
#include "pop3-policy-plugin.h"
#include "pop3-policy-records.h"
#include "pop3-policy-quota.h"

#include <dlfcn.h>

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
typedef bool
pop3_policy_root_visible_t(struct quota_root *root, struct mailbox *box);

struct pop3_policy_quota_hook {
	struct quota *quota;
	/* the next test_alloc of this user's chain */
	pop3_policy_test_alloc_t *next_test_alloc;
	pop3_policy_root_expunged_t *root_expunged;
	pop3_policy_update_expunged_t *update_expunged;
	pop3_policy_root_visible_t *root_visible;
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

/* the save being judged */
struct pop3_policy_quota_alloc24 {
	struct pop3_policy_quota_alloc alloc;
	struct pop3_policy_user *puser;
	struct quota_transaction_context *ctx;
	struct mailbox *expunged_box;
	uoff_t expunged_size;
	const struct quota_overrun **overruns_r;
	const char **error_r;
};

/* The transaction as 2.4 judges it: usage less what was expunged in
   separate transactions (and the mail a MOVE or REPLACE expunges). */
static void
pop3_policy_quota_get_state(struct pop3_policy_quota_alloc *alloc,
			    struct pop3_policy_quota_state *state_r)
{
	const struct pop3_policy_quota_alloc24 *a =
		(struct pop3_policy_quota_alloc24 *)alloc;
	const struct quota_transaction_context *ctx = a->ctx;
	uoff_t expunged_size = a->expunged_box == NULL ? 0 : a->expunged_size;

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
pop3_policy_quota_credit_ctx(struct pop3_policy_quota_alloc *alloc,
			     uint64_t bytes_freed, uint64_t count_freed)
{
	const struct pop3_policy_quota_alloc24 *a =
		(struct pop3_policy_quota_alloc24 *)alloc;
	struct pop3_policy_quota_hook *hook = a->puser->quota_hook;
	struct mail_namespace *ns = pop3_policy_user_inbox_ns(a->puser->user);
	struct quota_root *const *roots;
	unsigned int i, count;

	roots = array_get(&hook->quota->all_roots, &count);
	for (i = 0; i < count; i++) {
		/* the roots counting the maildrop (count has no
		   match_box: a root counts its namespaces) */
		if (array_lsearch_ptr(&roots[i]->namespaces, ns) == NULL)
			continue;
		hook->root_expunged(&a->ctx->roots[i], count_freed,
				    bytes_freed);
	}
	hook->update_expunged(a->ctx);
}

static bool pop3_policy_quota_inbox_counts(struct pop3_policy_quota_alloc *alloc)
{
	const struct pop3_policy_quota_alloc24 *a =
		(struct pop3_policy_quota_alloc24 *)alloc;
	struct pop3_policy_quota_hook *hook = a->puser->quota_hook;
	struct mail_namespace *inbox_ns =
		pop3_policy_user_inbox_ns(a->puser->user);
	struct quota_root *root;

	if (inbox_ns == NULL)
		return FALSE;
	array_foreach_elem(&hook->quota->all_roots, root) {
		if (hook->root_visible(root, a->ctx->box) &&
		    array_lsearch_ptr(&root->namespaces, inbox_ns) == NULL)
			return FALSE;
	}
	return TRUE;
}

static int pop3_policy_quota_retest(struct pop3_policy_quota_alloc *alloc)
{
	const struct pop3_policy_quota_alloc24 *a =
		(struct pop3_policy_quota_alloc24 *)alloc;

	return a->puser->quota_hook->next_test_alloc(a->ctx, alloc->size,
		a->expunged_box, a->expunged_size, a->overruns_r, a->error_r);
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
	struct pop3_policy_quota_alloc24 a = {
		.alloc = {
			.size = size,
			.get_state = pop3_policy_quota_get_state,
			.credit = pop3_policy_quota_credit_ctx,
			.retest = pop3_policy_quota_retest,
			.inbox_counts = pop3_policy_quota_inbox_counts,
		},
		.puser = puser,
		.ctx = ctx,
		.expunged_box = expunged_box,
		.expunged_size = expunged_size,
		.overruns_r = overruns_r,
		.error_r = error_r,
	};

	i_assert(puser != NULL && puser->quota_hook != NULL &&
		 puser->quota_hook->next_test_alloc != NULL);
	return pop3_policy_quota_alloc_retry(puser, ctx->box,
					     pop3_policy_quota_retest(&a.alloc),
					     &a.alloc);
}

int pop3_policy_quota_user_init(struct pop3_policy_user *puser,
				const char **error_r)
{
	struct pop3_policy_quota_hook *hook;
	struct quota_root *root;
	struct quota *quota;
	int ret;

	if ((ret = pop3_policy_quota_user_quota(puser, &quota, error_r)) <= 0)
		return ret;
	array_foreach_elem(&quota->all_roots, root) {
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
	hook = p_new(puser->user->pool, struct pop3_policy_quota_hook, 1);
	hook->quota = quota;
	hook->root_expunged = (pop3_policy_root_expunged_t *)
		dlsym(RTLD_DEFAULT, "quota_transaction_root_expunged");
	hook->update_expunged = (pop3_policy_update_expunged_t *)
		dlsym(RTLD_DEFAULT, "quota_transaction_update_expunged");
	hook->root_visible = (pop3_policy_root_visible_t *)
		dlsym(RTLD_DEFAULT, "quota_root_is_visible");
	if (hook->root_expunged == NULL || hook->update_expunged == NULL ||
	    hook->root_visible == NULL) {
		*error_r = "pop3_policy_quota_purge=yes: this quota plugin "
			"lacks quota_transaction_root_expunged()";
		return -1;
	}
	puser->quota_hook = hook;
	if (quota->test_alloc == pop3_policy_quota_test_alloc)
		return 0;
	hook->next_test_alloc = quota->test_alloc;
	quota->test_alloc = pop3_policy_quota_test_alloc;
	return 0;
}
