#ifndef POP3_POLICY_SETTINGS_H
#define POP3_POLICY_SETTINGS_H

struct mail_user;

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

/* Parse the plugin {} settings of the user. On a bad value returns -1
   with an error naming the setting and the value. */
int pop3_policy_settings_read(struct mail_user *user,
			      struct pop3_policy_settings *set_r,
			      const char **error_r);
const char *pop3_policy_dele_to_str(const struct pop3_policy_settings *set);

#endif
