/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "mail-storage-private.h"
#include "lmdb-env.h"
#include "lmdb-storage.h"
#include "lmdb-plugin.h"

const char *storage_lmdb_plugin_version = DOVECOT_ABI_VERSION;

void storage_lmdb_plugin_init(struct module *module ATTR_UNUSED)
{
	lmdb_settings_class_init(&lmdb_storage);
	mail_storage_class_register(&lmdb_storage);
}

void storage_lmdb_plugin_deinit(void)
{
	mail_storage_class_unregister(&lmdb_storage);
	lmdb_env_deinit();
}
