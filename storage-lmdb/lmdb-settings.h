#ifndef LMDB_SETTINGS_H
#define LMDB_SETTINGS_H

#include "lmdb-env.h"

/* The lmdb_* settings: the same names, defaults and limits on Dovecot 2.3
   (plugin { }, lmdb-settings-23.c) and 2.4 (global settings declared in
   lmdb-settings-info.c, read by lmdb-settings-24.c). Documented in the
   README. */
#define LMDB_DEFAULT_MAP_SIZE_INITIAL (16ULL * 1024 * 1024)
#define LMDB_DEFAULT_MAP_SIZE_MAX (32ULL * 1024 * 1024 * 1024)
#define LMDB_DEFAULT_MAP_RESERVE (16ULL * 1024 * 1024)
#define LMDB_DEFAULT_MAX_READERS 512
#define LMDB_DEFAULT_PENDING_GRACE_SECS (36 * 60 * 60)
#define LMDB_DEFAULT_AUTOPURGE_INTERVAL_SECS (24 * 60 * 60)

#define LMDB_MAX_READERS_MIN 8
#define LMDB_MAX_READERS_MAX 65536
#define LMDB_MAP_SIZE_MAX_MIN (1024ULL * 1024)

/* Directory names inside the mail root (both versions) */
#define LMDB_SUBSCRIPTION_FILE_NAME "subscriptions"
/* per-mailbox directory holding its index files (as dbox-Mails) */
#define LMDB_MAILDIR_NAME "lmdb-Mails"
#define LMDB_MAILBOX_DIR_NAME "mailboxes"

struct mail_storage;
struct mail_namespace;

/* What the storage uses, whichever Dovecot it came from. */
struct lmdb_settings {
	struct lmdb_env_settings env;
	/* seconds before saves that never committed are freed (bodies
	   whose last link goes are freed at once) */
	unsigned int pending_grace_secs;
	/* purge runs by itself at most this often per user (0 = never) */
	unsigned int autopurge_interval_secs;
};

/* lmdb-settings-{23,24}.c */

/* Hook the storage class up with the version's settings before it is
   registered: 2.3 its list settings (mailboxes/, lmdb-Mails), 2.4 its
   settings info (the same as defaults of the "lmdb" filter). */
void lmdb_settings_class_init(struct mail_storage *storage_class);
/* The user's lmdb_* settings. On a bad value -1 with an error naming the
   setting and the value. */
int lmdb_settings_read(struct mail_storage *storage,
		       struct lmdb_settings *set_r, const char **error_r);
/* Refuse mail location settings lmdb can't work with (index files in
   memory, an alternative storage, external attachments). */
int lmdb_settings_check_location(struct mail_storage *storage,
				 struct mail_namespace *ns,
				 const char **error_r);

#endif
