#ifndef POP3_POLICY_PLUGIN_H
#define POP3_POLICY_PLUGIN_H

#include "module-context.h"
#include "mail-user.h"
#include "pop3-policy-settings.h"

struct pop3_policy_user {
	union mail_user_module_context module_ctx;
	struct pop3_policy_settings set;
};

#define POP3_POLICY_USER_CONTEXT(obj) \
	MODULE_CONTEXT(obj, pop3_policy_user_module)
extern MODULE_CONTEXT_DEFINE(pop3_policy_user_module,
			     &mail_user_module_register);

extern const char *pop3_policy_plugin_version;

void pop3_policy_plugin_init(struct module *module);
void pop3_policy_plugin_deinit(void);

#endif
