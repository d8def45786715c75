/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* Dovecot 2.4: lib20_lmdb_settings.so, loaded by the config process from
   $(moduledir)/settings. Without it doveconf refuses every lmdb_*
   setting as unknown, and the storage finds no "lmdb" settings. The
   config process looks up <module name>_set_infos. */

#include "lib.h"
#include "settings-parser.h"
#include "lmdb-settings-info.h"

extern const char *lmdb_settings_version;
extern const struct setting_parser_info *lmdb_settings_set_infos[];

const char *lmdb_settings_version = DOVECOT_ABI_VERSION;
const struct setting_parser_info *lmdb_settings_set_infos[] = {
	&lmdb_setting_parser_info,
	NULL
};
