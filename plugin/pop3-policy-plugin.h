#ifndef POP3_POLICY_PLUGIN_H
#define POP3_POLICY_PLUGIN_H

#include "module-context.h"
#include "hash.h"
#include "mail-user.h"
#include "mail-storage-private.h"
#include "quota.h"
#include "pop3-policy-settings.h"

struct pop3_policy_env;

#define POP3_POLICY_LOG_PREFIX "pop3_policy: "

struct pop3_policy_user {
	union mail_user_module_context module_ctx;
	struct mail_user *user;
	struct pop3_policy_settings set;

	/* opened on first use, closed at user deinit */
	struct pop3_policy_env *env;
	/* Dovecot's pop3_deleted_flag: from the POP3 settings in pop3
	   processes, elsewhere as the last POP3 session recorded it */
	const char *deleted_flag;
	bool deleted_flag_looked_up;
	/* no deleted_flag, because its record couldn't be read (damaged,
	   or an LMDB error): the records' hidden bits are then no evidence
	   (the keyword may have been removed since) */
	bool deleted_flag_unknown;

	/* quota_purge: the hook into the quota plugin (found at run time,
	   the plugin must load without quota; its API differs between
	   Dovecot versions: pop3-policy-quota-{23,24}.c) */
	struct pop3_policy_quota_hook *quota_hook;
	bool quota_purging;

	/* a POP3 session opened INBOX: run keep_days and the sweep at
	   logout */
	bool pop3_inbox_opened;
	/* GUIDs this POP3 session's DELEs expunged or moved away: their
	   records are dropped at logout unless a copy is still there */
	ARRAY_TYPE(const_string) dele_gone;
};

/* Writes buffered during a mailbox's life, flushed in one LMDB
   transaction at transaction commit and mailbox close. */
struct pop3_policy_pending {
	char *guid;
	/* UIDL shown to a client for the first time, or NULL */
	char *uidl;
	/* end of a complete RETR/TOP read, or 0 */
	time_t download;
	bool hidden;
	/* copied, moved or saved (with its GUID) into the maildrop: a new
	   stay, whose downloads start over. Only applied if the
	   transaction commits. */
	bool arrived;
};

struct pop3_policy_mailbox {
	union mailbox_module_context module_ctx;
	struct pop3_policy_user *puser;
	/* opened by a POP3 session (MAILBOX_FLAG_POP3_SESSION) */
	bool pop3_session;
	/* the INBOX of the INBOX namespace: the POP3 maildrop */
	bool maildrop;

	pool_t pending_pool;
	ARRAY(struct pop3_policy_pending *) pending;
	/* guid -> pending */
	HASH_TABLE(char *, struct pop3_policy_pending *) pending_by_guid;
	/* uidl -> guid, of UIDLs frozen but not yet flushed */
	HASH_TABLE(char *, char *) pending_uidls;

	/* dele=move: the destination, committed before the source */
	struct mailbox *move_box;
	struct mailbox_transaction_context *move_trans;
	bool move_failed;

	/* audit lines of DELEs, logged once the transaction commits */
	pool_t dele_audit_pool;
	ARRAY_TYPE(const_string) dele_audit;
};

struct pop3_policy_mail {
	union mail_module_context module_ctx;
	/* our wrapper of the RETR/TOP stream */
	struct istream *download_input;
	/* a DELE was already turned into the policy's action */
	bool dele_done;
};

#define POP3_POLICY_USER_CONTEXT(obj) \
	MODULE_CONTEXT(obj, pop3_policy_user_module)
#define POP3_POLICY_MAILBOX_CONTEXT(obj) \
	MODULE_CONTEXT(obj, pop3_policy_storage_module)
#define POP3_POLICY_MAIL_CONTEXT(obj) \
	MODULE_CONTEXT(obj, pop3_policy_mail_module)

extern MODULE_CONTEXT_DEFINE(pop3_policy_user_module,
			     &mail_user_module_register);
extern MODULE_CONTEXT_DEFINE(pop3_policy_storage_module,
			     &mail_storage_module_register);
extern MODULE_CONTEXT_DEFINE(pop3_policy_mail_module,
			     &mail_module_register);

extern const char *pop3_policy_plugin_version;

void pop3_policy_plugin_init(struct module *module);
void pop3_policy_plugin_deinit(void);

/* pop3-policy-plugin.c */
/* The user's environment, opened on first use. */
int pop3_policy_user_get_env(struct pop3_policy_user *puser,
			     struct pop3_policy_env **env_r,
			     const char **error_r);
/* The same, but only if its file exists: 1 with *env_r, 0 if it doesn't
   (nothing was ever recorded), -1 on error. */
int pop3_policy_user_get_env_if_exists(struct pop3_policy_user *puser,
				       struct pop3_policy_env **env_r,
				       const char **error_r);
/* The pop3_deleted_flag keyword, or NULL when unknown/unset. */
const char *pop3_policy_user_get_deleted_flag(struct pop3_policy_user *puser);
/* An audit line for the values given, without the log prefix; logged
   (e_info on the user's event) once what it reports is committed. */
const char *pop3_policy_audit_line(const char *action, const char *guid,
				   const char *uidl, uoff_t vsize,
				   const char *rule);
struct mail_namespace *pop3_policy_user_inbox_ns(struct mail_user *user);
time_t pop3_policy_now(void);

/* pop3-policy-storage.c */
void pop3_policy_mailbox_allocated(struct mailbox *box);
void pop3_policy_mail_allocated(struct mail *mail);
struct pop3_policy_pending *
pop3_policy_pending_get(struct pop3_policy_mailbox *pbox, const char *guid);
int pop3_policy_pending_flush(struct pop3_policy_mailbox *pbox,
			      const char **error_r);

/* pop3-policy-uidl.c */
int pop3_policy_uidl_get_special(struct mail *mail,
				 enum mail_fetch_field field,
				 const char **value_r);
/* The UIDL POP3 shows (or would show) for mail, without freezing a new
   one; "-" if there's none. */
const char *pop3_policy_mail_get_uidl(struct pop3_policy_user *puser,
				      struct mail *mail);
/* Compute what Dovecot's POP3 server would show from pop3_uidl_format
   (no backend UIDL). */
int pop3_policy_uidl_from_format(struct mail *mail, const char **uidl_r,
				 const char **error_r);
/* Freeze (or look up) the UIDL of mail for a POP3 client. */
int pop3_policy_uidl_freeze(struct pop3_policy_mailbox *pbox,
			    struct mail *mail, const char **uidl_r);

/* freeze-uidl: freeze whatever POP3 would show for mail now, the
   backend's UIDL included. */
int pop3_policy_uidl_freeze_current(struct mailbox *box, struct mail *mail,
				    const char **uidl_r);

/* pop3-policy-download.c */
int pop3_policy_download_get_stream(struct mail *mail, bool get_body,
				    struct message_size *hdr_size,
				    struct message_size *body_size,
				    struct istream **stream_r);
void pop3_policy_download_close(struct mail *mail);

/* pop3-policy-dele.c */
void pop3_policy_dele_expunge(struct mail *mail);
void pop3_policy_dele_update_keywords(struct mail *mail,
				      enum modify_type modify_type,
				      struct mail_keywords *keywords);
int pop3_policy_dele_transaction_commit(struct pop3_policy_mailbox *pbox,
					struct mailbox_transaction_context *t);
void pop3_policy_dele_transaction_rollback(struct pop3_policy_mailbox *pbox);
/* Log the DELEs' audit lines if committed, else drop them. */
void pop3_policy_dele_audit_end(struct pop3_policy_mailbox *pbox,
				bool committed);
void pop3_policy_dele_close(struct pop3_policy_mailbox *pbox);

/* pop3-policy-retention.c */
typedef void pop3_policy_action_callback_t(const char *line, void *context);
/* Apply keep_days to the user's maildrop now. Calls callback with each
   audit line (without log prefix). dry_run only reports. */
int pop3_policy_retention_run(struct mail_user *user, bool dry_run,
			      pop3_policy_action_callback_t *callback,
			      void *context, const char **error_r);

/* pop3-policy-sweep.c */
/* Drop the records of guids (all of them are gone from the maildrop). */
int pop3_policy_forget(struct pop3_policy_user *puser,
		       const ARRAY_TYPE(const_string) *guids,
		       const char **error_r);
/* Drop the records of messages no longer in the maildrop: of guids, or
   of every record when guids is NULL (a full sweep, whose time is
   recorded). */
int pop3_policy_sweep(struct pop3_policy_user *puser,
		      const ARRAY_TYPE(const_string) *guids,
		      unsigned int *forgotten_r, const char **error_r);
/* At the end of a POP3 session: a sweep of what its DELEs removed, or
   a full sweep if the last one is a day old. */
void pop3_policy_sweep_at_logout(struct pop3_policy_user *puser);

/* pop3-policy-quota-{23,24}.c */
/* Hook the user's quota chain when quota_purge=yes. -1 with *error_r
   on a configuration error. */
int pop3_policy_quota_user_init(struct pop3_policy_user *puser,
				const char **error_r);

#endif
