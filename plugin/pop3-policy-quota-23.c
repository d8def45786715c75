/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* quota_purge's hook into Dovecot 2.3's quota plugin: its test_alloc
   vfunc (in struct quota_settings) is chained, as the trash plugin does,
   and space a purge frees is credited to the transaction's ceilings. */

#include "lib.h"
#include "array.h"
#include "quota-private.h"
#include "quota-plugin.h"
#include "pop3-policy-plugin.h"
#include "pop3-policy-records.h"
#include "pop3-policy-quota.h"

#define POP3_POLICY_QUOTA_MAX_RETRIES 3

struct pop3_policy_quota_hook {
	struct quota *quota;
	/* the next test_alloc of this user's chain */
	enum quota_alloc_result
	(*next_test_alloc)(struct quota_transaction_context *ctx,
			   uoff_t size, const char **error_r);
};

bool pop3_policy_quota_uses_vsizes(struct pop3_policy_user *puser)
{
	return puser->quota_hook->quota->set->vsizes;
}

static void
pop3_policy_quota_get_state(const struct quota_transaction_context *ctx,
			    struct pop3_policy_quota_state *state_r)
{
	i_zero(state_r);
	state_r->bytes_used = ctx->bytes_used;
	state_r->count_used = ctx->count_used;
	state_r->bytes_ceil = ctx->bytes_ceil;
	state_r->count_ceil = ctx->count_ceil;
	state_r->bytes_over = ctx->bytes_over;
	state_r->count_over = ctx->count_over;
}

static void
pop3_policy_quota_credit_ctx(struct quota_transaction_context *ctx,
			     uint64_t bytes_freed, uint64_t count_freed)
{
	struct pop3_policy_quota_state state;
	uint64_t old_ceil = ctx->bytes_ceil;

	pop3_policy_quota_get_state(ctx, &state);
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

static enum quota_alloc_result
pop3_policy_quota_test_alloc(struct quota_transaction_context *ctx,
			     uoff_t size, const char **error_r)
{
	struct pop3_policy_user *puser =
		POP3_POLICY_USER_CONTEXT(ctx->quota->user);
	struct pop3_policy_quota_state state;
	enum quota_alloc_result ret;
	uint64_t bytes_needed, count_needed, bytes_freed, count_freed;
	unsigned int i;

	i_assert(puser != NULL && puser->quota_hook != NULL &&
		 puser->quota_hook->next_test_alloc != NULL);
	ret = puser->quota_hook->next_test_alloc(ctx, size, error_r);
	/* Only a save or copy has a transaction open on its mailbox: RCPT
	   time checks (STATUS_CHECK_OVER_QUOTA) have none and must not
	   delete anything. */
	if (ret != QUOTA_ALLOC_RESULT_OVER_QUOTA || puser->quota_purging ||
	    ctx->box == NULL || ctx->box->transaction_count == 0)
		return ret;

	puser->quota_purging = TRUE;
	for (i = 0; i < POP3_POLICY_QUOTA_MAX_RETRIES &&
		    ret == QUOTA_ALLOC_RESULT_OVER_QUOTA; i++) {
		pop3_policy_quota_get_state(ctx, &state);
		pop3_policy_quota_needed(&state, size, &bytes_needed,
					 &count_needed);
		if (bytes_needed == 0 && count_needed == 0)
			break;
		bytes_freed = count_freed = 0;
		if (pop3_policy_quota_purge(puser, bytes_needed, count_needed,
					    &bytes_freed, &count_freed) <= 0)
			break;
		pop3_policy_quota_credit_ctx(ctx, bytes_freed, count_freed);
		ret = puser->quota_hook->next_test_alloc(ctx, size, error_r);
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
	array_foreach_elem(&quser->quota->roots, root) {
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
	hook = p_new(user->pool, struct pop3_policy_quota_hook, 1);
	hook->quota = quser->quota;
	puser->quota_hook = hook;
	if (hook->quota->set->test_alloc == pop3_policy_quota_test_alloc)
		return 0;
	hook->next_test_alloc = hook->quota->set->test_alloc;
	hook->quota->set->test_alloc = pop3_policy_quota_test_alloc;
	return 0;
}
