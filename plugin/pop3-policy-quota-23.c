/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* quota_purge's hook into Dovecot 2.3's quota plugin: its test_alloc
   vfunc (in struct quota_settings) is chained, as the trash plugin does,
   and space a purge frees is credited to the transaction's ceilings. */

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

typedef bool
pop3_policy_ns_visible_t(struct quota_root *root, struct mail_namespace *ns);

struct pop3_policy_quota_hook {
	struct quota *quota;
	/* quota_root_is_namespace_visible() of the quota plugin */
	pop3_policy_ns_visible_t *ns_visible;
	/* the next test_alloc of this user's chain */
	enum quota_alloc_result
	(*next_test_alloc)(struct quota_transaction_context *ctx,
			   uoff_t size, const char **error_r);
};

bool pop3_policy_quota_uses_vsizes(struct pop3_policy_user *puser)
{
	return puser->quota_hook->quota->set->vsizes;
}

/* the save being judged */
struct pop3_policy_quota_alloc23 {
	struct pop3_policy_quota_alloc alloc;
	struct quota_transaction_context *ctx;
	const char **error_r;
};

static void
pop3_policy_quota_get_state(struct pop3_policy_quota_alloc *alloc,
			    struct pop3_policy_quota_state *state_r)
{
	const struct quota_transaction_context *ctx =
		((struct pop3_policy_quota_alloc23 *)alloc)->ctx;

	i_zero(state_r);
	state_r->bytes_used = ctx->bytes_used;
	state_r->count_used = ctx->count_used;
	state_r->bytes_ceil = ctx->bytes_ceil;
	state_r->count_ceil = ctx->count_ceil;
	state_r->bytes_over = ctx->bytes_over;
	state_r->count_over = ctx->count_over;
}

static void
pop3_policy_quota_credit_ctx(struct pop3_policy_quota_alloc *alloc,
			     uint64_t bytes_freed, uint64_t count_freed)
{
	struct quota_transaction_context *ctx =
		((struct pop3_policy_quota_alloc23 *)alloc)->ctx;
	struct pop3_policy_quota_state state;
	uint64_t old_ceil = ctx->bytes_ceil;

	pop3_policy_quota_get_state(alloc, &state);
	pop3_policy_quota_credit(&state, bytes_freed, count_freed);
	/* bytes_ceil2 is the real ceiling behind a temporary extra
	   allowance: it moves by as much */
	if (ctx->bytes_ceil2 != (uint64_t)-1 && state.bytes_ceil >= old_ceil)
		ctx->bytes_ceil2 += state.bytes_ceil - old_ceil;
	ctx->bytes_ceil = state.bytes_ceil;
	ctx->count_ceil = state.count_ceil;
	ctx->bytes_over = state.bytes_over;
	ctx->count_over = state.count_over;
}

static int pop3_policy_quota_retest(struct pop3_policy_quota_alloc *alloc)
{
	struct pop3_policy_quota_alloc23 *a =
		(struct pop3_policy_quota_alloc23 *)alloc;
	struct pop3_policy_user *puser =
		POP3_POLICY_USER_CONTEXT(a->ctx->quota->user);

	return puser->quota_hook->next_test_alloc(a->ctx, alloc->size,
						  a->error_r);
}

static bool pop3_policy_quota_inbox_counts(struct pop3_policy_quota_alloc *alloc)
{
	struct quota_transaction_context *ctx =
		((struct pop3_policy_quota_alloc23 *)alloc)->ctx;
	struct pop3_policy_user *puser =
		POP3_POLICY_USER_CONTEXT(ctx->quota->user);
	struct pop3_policy_quota_hook *hook = puser->quota_hook;
	struct mail_namespace *inbox_ns =
		pop3_policy_user_inbox_ns(puser->user);
	struct quota_root *root;

	if (inbox_ns == NULL)
		return FALSE;
	array_foreach_elem(&hook->quota->roots, root) {
		if (hook->ns_visible(root, mailbox_get_namespace(ctx->box)) &&
		    !hook->ns_visible(root, inbox_ns))
			return FALSE;
	}
	return TRUE;
}

static enum quota_alloc_result
pop3_policy_quota_test_alloc(struct quota_transaction_context *ctx,
			     uoff_t size, const char **error_r)
{
	struct pop3_policy_user *puser =
		POP3_POLICY_USER_CONTEXT(ctx->quota->user);
	struct pop3_policy_quota_alloc23 a = {
		.alloc = {
			.size = size,
			.get_state = pop3_policy_quota_get_state,
			.credit = pop3_policy_quota_credit_ctx,
			.retest = pop3_policy_quota_retest,
			.inbox_counts = pop3_policy_quota_inbox_counts,
		},
		.ctx = ctx,
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
	array_foreach_elem(&quota->roots, root) {
		if (strcmp(root->backend.name, "count") != 0) {
			*error_r = t_strdup_printf(
				"pop3_policy_quota_purge=yes needs the count "
				"quota backend, but quota root %s uses %s "
				"(an LMDB file never shrinks, so only count "
				"sees space freed by expunges)",
				root->set->name, root->backend.name);
			return -1;
		}
	}
	hook = p_new(puser->user->pool, struct pop3_policy_quota_hook, 1);
	hook->quota = quota;
	/* looked up at run time, as the quota user context is */
	hook->ns_visible = (pop3_policy_ns_visible_t *)
		dlsym(RTLD_DEFAULT, "quota_root_is_namespace_visible");
	if (hook->ns_visible == NULL) {
		*error_r = "pop3_policy_quota_purge=yes: this quota plugin "
			"lacks quota_root_is_namespace_visible()";
		return -1;
	}
	puser->quota_hook = hook;
	if (quota->set->test_alloc == pop3_policy_quota_test_alloc)
		return 0;
	hook->next_test_alloc = quota->set->test_alloc;
	quota->set->test_alloc = pop3_policy_quota_test_alloc;
	return 0;
}
