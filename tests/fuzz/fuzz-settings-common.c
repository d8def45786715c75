/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "fuzz-common.h"
#include "fuzz-settings-common.h"

#include <stdlib.h>

struct fuzz_settings fuzz_settings;

void fuzz_settings_load(const char *const *names, unsigned int count,
			const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size, *nl;
	unsigned int i;
	char *value;
	size_t len;

	fuzz_settings.names = names;
	fuzz_settings.count = count;
	fuzz_settings.values = calloc(count, sizeof(char *));
	i_assert(fuzz_settings.values != NULL);
	for (i = 0; i < count && p < end; i++) {
		nl = memchr(p, '\n', end - p);
		len = (nl == NULL ? end : nl) - p;
		/* a C string: up to the first NUL */
		len = strnlen((const char *)p, len);
		value = malloc(len + 1);
		i_assert(value != NULL);
		memcpy(value, p, len);
		value[len] = '\0';
		fuzz_settings.values[i] = value;
		p = nl == NULL ? end : nl + 1;
	}
}

void fuzz_settings_free(void)
{
	unsigned int i;

	for (i = 0; i < fuzz_settings.count; i++)
		free(fuzz_settings.values[i]);
	free(fuzz_settings.values);
	i_zero(&fuzz_settings);
}

const char *fuzz_setting(const char *name)
{
	unsigned int i;

	for (i = 0; i < fuzz_settings.count; i++) {
		if (strcmp(fuzz_settings.names[i], name) == 0)
			return fuzz_settings.values[i];
	}
	/* a name the harness doesn't know: a new setting to add here */
	fuzz_fail("setting %s read but not fuzzed", name);
}

const char *mail_user_plugin_getenv(struct mail_user *user ATTR_UNUSED,
				    const char *name)
{
	return fuzz_setting(name);
}
