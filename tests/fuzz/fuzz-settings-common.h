#ifndef FUZZ_SETTINGS_COMMON_H
#define FUZZ_SETTINGS_COMMON_H

/* The settings parsers read their strings with mail_user_plugin_getenv()
   and parse them in the same function: they can be fuzzed whole,
   unchanged, by giving them a mail_user_plugin_getenv() of our own (the
   targets link no lib-storage) that serves the plugin {} settings from
   the input. The input is one value per line, in the order of names[];
   a missing line is an unset setting. Each value is a copy in an
   allocation of its own size. */

#include "lib.h"
#include "mail-user.h"

struct fuzz_settings {
	const char *const *names;
	unsigned int count;
	char **values;
};

extern struct fuzz_settings fuzz_settings;

void fuzz_settings_load(const char *const *names, unsigned int count,
			const uint8_t *data, size_t size);
void fuzz_settings_free(void);
/* The value of name, or NULL if unset. */
const char *fuzz_setting(const char *name);

#endif
