/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "mail-storage-hooks.h"
#include "pop3-policy-plugin.h"

const char *pop3_policy_plugin_version = DOVECOT_ABI_VERSION;

struct pop3_policy_user_module pop3_policy_user_module =
	MODULE_CONTEXT_INIT(&mail_user_module_register);

static void pop3_policy_mail_user_created(struct mail_user *user)
{
	struct mail_user_vfuncs *v = user->vlast;
	struct pop3_policy_user *puser;
	const char *error;

	puser = p_new(user->pool, struct pop3_policy_user, 1);
	if (pop3_policy_settings_read(user, &puser->set, &error) < 0) {
		/* a policy that can't be read must not silently become
		   "expunge everything": fail the session */
		user->error = p_strdup_printf(user->pool, "pop3_policy: %s",
					      error);
		return;
	}
	puser->module_ctx.super = *v;
	user->vlast = &puser->module_ctx.super;
	MODULE_CONTEXT_SET(user, pop3_policy_user_module, puser);

	e_debug(user->event, "pop3_policy: dele=%s keep_days=%u "
		"quota_purge=%s login_delay=%us",
		pop3_policy_dele_to_str(&puser->set), puser->set.keep_days,
		puser->set.quota_purge ? "yes" : "no",
		puser->set.login_delay_secs);
}

static struct mail_storage_hooks pop3_policy_mail_storage_hooks = {
	.mail_user_created = pop3_policy_mail_user_created,
};

void pop3_policy_plugin_init(struct module *module)
{
	mail_storage_hooks_add(module, &pop3_policy_mail_storage_hooks);
}

void pop3_policy_plugin_deinit(void)
{
	mail_storage_hooks_remove(&pop3_policy_mail_storage_hooks);
}
