#ifndef POP3_POLICY_SETTINGS_H
#define POP3_POLICY_SETTINGS_H

struct mail_user;

/* The pop3_policy_* settings: the same names and values on Dovecot 2.3
   (plugin { }, pop3-policy-settings-23.c) and 2.4 (global settings
   declared in pop3-policy-settings-info.c, read by
   pop3-policy-settings-24.c). docs/pop3-policy.md documents them. */

enum pop3_policy_dele {
	/* Dovecot's own behaviour */
	POP3_POLICY_DELE_EXPUNGE = 0,
	/* hide from POP3 with pop3_deleted_flag, keep in IMAP */
	POP3_POLICY_DELE_KEEP,
	/* keep plus \Seen */
	POP3_POLICY_DELE_MARK_READ,
	/* file into dele_mailbox */
	POP3_POLICY_DELE_MOVE,
};

struct pop3_policy_settings {
	enum pop3_policy_dele dele;
	const char *dele_mailbox;
	/* remove downloaded mail this many days after its first download
	   (0 = never) */
	unsigned int keep_days;
	bool quota_purge;
	/* minimum seconds between POP3 logins (0 = off) */
	unsigned int login_delay_secs;
};

/* pop3-policy-settings.c: the values' syntax, shared by both versions
   (and, on 2.4, by the config process: libdovecot only here) */

/* Parse pop3_policy_dele (expunge, keep, mark-read, move:<mailbox>).
   The mailbox name is allocated from pool. -1 if invalid. */
int pop3_policy_parse_dele(const char *str, pool_t pool,
			   enum pop3_policy_dele *dele_r,
			   const char **mailbox_r);
/* Parse pop3_policy_login_delay: seconds, bare or with a unit ("5 mins").
   -1 with *error_r if invalid. */
int pop3_policy_parse_login_delay(const char *str, unsigned int *secs_r,
				  const char **error_r);
const char *pop3_policy_dele_to_str(const struct pop3_policy_settings *set);

/* pop3-policy-settings-{23,24}.c */

/* The user's settings. On a bad value returns -1 with an error naming the
   setting and the value. */
int pop3_policy_settings_read(struct mail_user *user,
			      struct pop3_policy_settings *set_r,
			      const char **error_r);
/* Only pop3_policy_login_delay (the login-delay module). */
int pop3_policy_settings_read_login_delay(struct mail_user *user,
					  unsigned int *secs_r,
					  const char **error_r);
/* Dovecot's pop3_deleted_flag as this process's POP3 settings have it,
   NULL where there are none (processes other than pop3). */
const char *pop3_policy_settings_pop3_deleted_flag(struct mail_user *user);
/* Where the login-delay module keeps the last login time: the index root
   of the INBOX namespace's location, else its mail root, else home. It
   runs before the user's namespaces exist, so this reads the settings. */
int pop3_policy_settings_login_dir(struct mail_user *user,
				   const char **dir_r, const char **error_r);

#endif
