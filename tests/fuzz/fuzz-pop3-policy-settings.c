/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* pop3_policy_settings_read() (plugin/pop3-policy-settings.c) over any
   values of its plugin {} settings, one per input line in the order of
   setting_names[] (fuzz-settings-common.h). Checked against
   docs/pop3-policy.md: it succeeds iff pop3_policy_dele is expunge, keep,
   mark-read or move:<valid UTF-8 mailbox>, pop3_policy_keep_days a
   number, pop3_policy_quota_purge yes or no and pop3_policy_login_delay
   a number of seconds or a time; then the fields hold those values and
   pop3_policy_dele_to_str() gives back the setting's string. */

#include "lib.h"
#include "settings-parser.h"
#include "strnum.h"
#include "unichar.h"
#include "pop3-policy-settings.h"
#include "fuzz-common.h"
#include "fuzz-settings-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const setting_names[] = {
	"pop3_policy_dele",
	"pop3_policy_keep_days",
	"pop3_policy_quota_purge",
	"pop3_policy_login_delay",
};

static bool is_set(const char *str)
{
	return str != NULL && str[0] != '\0';
}

static bool dele_valid(const char *str)
{
	return strcmp(str, "expunge") == 0 || strcmp(str, "keep") == 0 ||
		strcmp(str, "mark-read") == 0 ||
		(strncmp(str, "move:", 5) == 0 && str[5] != '\0' &&
		 uni_utf8_str_is_valid(str + 5));
}

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	fuzz_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mail_user *user = i_new(struct mail_user, 1);
	struct pop3_policy_settings set;
	const char *error = NULL, *dele, *keep, *purge, *delay, *terr;
	unsigned int keep_days = 0, delay_secs = 0;
	bool ok = TRUE;
	int ret;

	fuzz_settings_load(setting_names, N_ELEMENTS(setting_names),
			   data, size);
	user->pool = fuzz_pool_create();
	T_BEGIN {
		dele = fuzz_setting("pop3_policy_dele");
		keep = fuzz_setting("pop3_policy_keep_days");
		purge = fuzz_setting("pop3_policy_quota_purge");
		delay = fuzz_setting("pop3_policy_login_delay");
		if (is_set(dele) && !dele_valid(dele))
			ok = FALSE;
		if (is_set(keep) && str_to_uint(keep, &keep_days) < 0)
			ok = FALSE;
		if (is_set(purge) && strcmp(purge, "yes") != 0 &&
		    strcmp(purge, "no") != 0)
			ok = FALSE;
		if (is_set(delay) && str_to_uint(delay, &delay_secs) < 0 &&
		    settings_get_time(delay, &delay_secs, &terr) < 0)
			ok = FALSE;

		ret = pop3_policy_settings_read(user, &set, &error);
		if (ret < 0) {
			fuzz_assert(!ok);
			fuzz_assert(error != NULL &&
				    str_begins(error, "Invalid pop3_policy_"));
		} else {
			fuzz_assert(ret == 0);
			fuzz_assert(ok);
			if (is_set(dele)) {
				fuzz_assert(strcmp(pop3_policy_dele_to_str(&set),
						   dele) == 0);
			} else {
				fuzz_assert(set.dele == POP3_POLICY_DELE_EXPUNGE);
			}
			fuzz_assert(set.keep_days == keep_days);
			fuzz_assert(set.quota_purge ==
				    (is_set(purge) && strcmp(purge, "yes") == 0));
			fuzz_assert(set.login_delay_secs == delay_secs);
		}
	} T_END;
	pool_unref(&user->pool);
	i_free(user);
	fuzz_settings_free();
	return 0;
}
