#ifndef POP3_POLICY_QUOTA_H
#define POP3_POLICY_QUOTA_H

/* quota_purge, between the version-neutral purge (pop3-policy-quota.c)
   and the hook into the quota plugin (pop3-policy-quota-{23,24}.c). */

struct quota_user;

/* pop3-policy-quota.c */
/* The quota plugin's user context, NULL without the quota plugin (it is
   looked up at run time: the plugin must load without quota). */
struct quota_user *pop3_policy_quota_user(struct mail_user *user);
/* Free at least bytes_needed and count_needed from the maildrop. Returns
   1 if freed, 0 if there isn't enough purgeable mail (then nothing is
   removed), -1 on error. */
int pop3_policy_quota_purge(struct pop3_policy_user *puser,
			    uint64_t bytes_needed, uint64_t count_needed,
			    uint64_t *bytes_freed_r, uint64_t *count_freed_r);

/* pop3-policy-quota-{23,24}.c */
/* Does quota count virtual sizes (what a purged message frees)? */
bool pop3_policy_quota_uses_vsizes(struct pop3_policy_user *puser);

#endif
