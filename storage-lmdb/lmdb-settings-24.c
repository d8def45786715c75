/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The lmdb_* settings on Dovecot 2.4: declared in lmdb-settings-info.c,
   checked by the config process, read here with settings_get() through
   the storage's event (global settings, "lmdb { }", protocol filters and
   userdb fields all apply). */

#include "lib.h"
#include "settings.h"
#include "settings-parser.h"
#include "mail-storage-private.h"
#include "mailbox-list-private.h"
#include "lmdb-settings.h"
#include "lmdb-settings-info.h"

static bool lmdb_settings_dead_grace_warned = FALSE;

int lmdb_settings_read(struct mail_storage *storage,
		       struct lmdb_settings *set_r, const char **error_r)
{
	const struct lmdb_storage_settings *set;
	const char *error;

	if (settings_get(storage->event, &lmdb_setting_parser_info, 0,
			 &set, &error) < 0) {
		*error_r = t_strdup(error);
		return -1;
	}
	i_zero(set_r);
	set_r->env.map_size_initial = set->lmdb_map_size_initial;
	set_r->env.map_size_max = set->lmdb_map_size_max;
	set_r->env.map_reserve = set->lmdb_map_reserve;
	set_r->env.max_readers = set->lmdb_max_readers;
	set_r->pending_grace_secs = set->lmdb_pending_grace;
	set_r->autopurge_interval_secs = set->lmdb_autopurge_interval;
	if (set->lmdb_dead_grace[0] != '\0' &&
	    !lmdb_settings_dead_grace_warned) {
		/* no longer needed: a stream reads its own snapshot, so
		   expunged bodies are freed at once (docs/design.md) */
		e_warning(storage->event, "lmdb: The lmdb_dead_grace setting "
			  "is obsolete and ignored: expunged mail is freed "
			  "at once");
		lmdb_settings_dead_grace_warned = TRUE;
	}
	/* everything is copied: nothing keeps the settings pool */
	settings_free(set);
	return 0;
}

int lmdb_settings_check_location(struct mail_storage *storage,
				 struct mail_namespace *ns,
				 const char **error_r)
{
	const struct mail_storage_settings *mail_set = ns->list->mail_set;

	/* the 2.3 names in the messages help admins moving a config */
	if (strcmp(mail_set->mail_index_path, MAIL_INDEX_PATH_MEMORY) == 0) {
		*error_r = "mail_index_path = MEMORY (2.3: INDEX=MEMORY) is "
			"not supported: the lmdb storage keeps its IMAP view "
			"in index files";
		return -1;
	}
	if (mail_set->mail_alt_path[0] != '\0') {
		*error_r = "mail_alt_path (2.3: ALT=) is not supported: all "
			"mail of a user lives in one LMDB environment";
		return -1;
	}
	if (storage->set->mail_ext_attachment_path[0] != '\0') {
		*error_r = "mail_ext_attachment_path (2.3: "
			"mail_attachment_dir) is not supported: bodies are "
			"stored once already, in LMDB";
		return -1;
	}
	return 0;
}

void lmdb_settings_class_init(struct mail_storage *storage_class)
{
	/* registered with the class (mail_storage_class_register()), so
	   its defaults also apply when no config is read (doveadm -O) */
	storage_class->set_info = &lmdb_setting_parser_info;
}
