/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* Dovecot 2.4: lib20_pop3_policy_settings.so, loaded by the config
   process from $(moduledir)/settings. Without it doveconf refuses every
   pop3_policy_* setting as unknown, and the plugins find no
   "pop3_policy" settings. The config process looks up
   <module name>_set_infos. */

#include "lib.h"
#include "settings-parser.h"
#include "pop3-policy-settings-info.h"

extern const char *pop3_policy_settings_version;
extern const struct setting_parser_info *pop3_policy_settings_set_infos[];

const char *pop3_policy_settings_version = DOVECOT_ABI_VERSION;
const struct setting_parser_info *pop3_policy_settings_set_infos[] = {
	&pop3_policy_setting_parser_info,
	NULL
};
