#ifndef POP3_POLICY_QUOTA_H
#define POP3_POLICY_QUOTA_H

/* quota_purge, between the version-neutral purge (pop3-policy-quota.c)
   and the hook into the quota plugin (pop3-policy-quota-{23,24}.c). */

struct quota;
struct pop3_policy_quota_state;

/* One save the quota plugin found over quota, as the version's hook sees
   it: what the transaction has used and may use, how to credit what a
   purge freed, and how to ask the quota plugin again. */
struct pop3_policy_quota_alloc {
	uoff_t size;
	void (*get_state)(struct pop3_policy_quota_alloc *alloc,
			  struct pop3_policy_quota_state *state_r);
	void (*credit)(struct pop3_policy_quota_alloc *alloc,
		       uint64_t bytes_freed, uint64_t count_freed);
	/* returns an enum quota_alloc_result */
	int (*retest)(struct pop3_policy_quota_alloc *alloc);
	/* Does every quota root that counts the save's mailbox also count
	   INBOX? Else the root that is over may be one the purge doesn't
	   relieve: INBOX mail would go for nothing. */
	bool (*inbox_counts)(struct pop3_policy_quota_alloc *alloc);
};

/* pop3-policy-quota.c */
/* The quota whose saves may purge the user's maildrop. Returns 1 with
   *quota_r, 0 if this service must not purge (quota-status only asks),
   -1 without the quota plugin (it is looked up at run time: the plugin
   must load without quota). */
int pop3_policy_quota_user_quota(struct pop3_policy_user *puser,
				 struct quota **quota_r, const char **error_r);
/* ret is the quota plugin's answer to a save into box. If it is "over
   quota" and box has a transaction open (a save or copy: checks at RCPT
   time have none and must not delete anything), purge what the maildrop
   needs and ask again, a few times at most. Returns the last answer. */
int pop3_policy_quota_alloc_retry(struct pop3_policy_user *puser,
				  struct mailbox *box, int ret,
				  struct pop3_policy_quota_alloc *alloc);

/* pop3-policy-quota-{23,24}.c */
/* Does quota count virtual sizes (what a purged message frees)? */
bool pop3_policy_quota_uses_vsizes(struct pop3_policy_user *puser);

#endif
