#ifndef POP3_POLICY_ENV_H
#define POP3_POLICY_ENV_H

/* The policy plugin's own LMDB environment: one data file plus its lock
   file (MDB_NOSUBDIR), shared by every user object of the process that
   points at the same file (LMDB forbids opening one environment twice
   in a process). No lib-storage types here. Transactions are short and
   never held across a call back into Dovecot. */

#include <lmdb.h>
#include "pop3-policy-records.h"

/* Files, inside the INBOX namespace's index root (or its mail root).
   Files, not a directory: no mailbox list layout takes a plain file for
   a mailbox (LAYOUT=fs lists every directory). */
#define POP3_POLICY_ENV_FILE_NAME "dovecot-pop3-policy.mdb"
#define POP3_POLICY_ENV_LOCK_SUFFIX "-lock"

struct pop3_policy_env {
	int refcount;
	char *path;
	dev_t dev;
	ino_t ino;
	MDB_env *env;
	uint64_t map_size;
	unsigned int open_txns;

	MDB_dbi dbi_meta, dbi_msgs, dbi_uidls;
};

/* A unit of work inside a write transaction. It may run again after the
   map grew, so it must only touch the transaction and state it resets
   itself. Returns 0 or an LMDB/errno code with *error_r. */
typedef int pop3_policy_env_write_func_t(struct pop3_policy_env *env,
					 MDB_txn *txn, void *context,
					 const char **error_r);

/* Open (or share) the environment in the file at path, creating it with
   mode if needed. */
int pop3_policy_env_open(const char *path, mode_t mode,
			 struct pop3_policy_env **env_r, const char **error_r);
void pop3_policy_env_ref(struct pop3_policy_env *env);
void pop3_policy_env_unref(struct pop3_policy_env **env);
/* Number of environments open in this process (for tests). */
unsigned int pop3_policy_env_open_count(void);

int pop3_policy_env_write(struct pop3_policy_env *env,
			  pop3_policy_env_write_func_t *func, void *context,
			  const char **error_r);
int pop3_policy_env_read_begin(struct pop3_policy_env *env, MDB_txn **txn_r,
			       const char **error_r);
void pop3_policy_env_read_end(struct pop3_policy_env *env, MDB_txn **txn);

/* Lookups return 1 if found, 0 if not, -1 with *error_r on error.
   Strings in the records are on the data stack. */
int pop3_policy_env_msg_get(struct pop3_policy_env *env, MDB_txn *txn,
			    const char *guid,
			    struct pop3_policy_msg_record *rec_r,
			    const char **error_r);
int pop3_policy_env_msg_put(struct pop3_policy_env *env, MDB_txn *txn,
			    const struct pop3_policy_msg_record *rec,
			    const char **error_r);
int pop3_policy_env_uidl_get(struct pop3_policy_env *env, MDB_txn *txn,
			     const char *uidl,
			     struct pop3_policy_uidl_record *rec_r,
			     const char **error_r);
int pop3_policy_env_uidl_put(struct pop3_policy_env *env, MDB_txn *txn,
			     const char *uidl,
			     const struct pop3_policy_uidl_record *rec,
			     const char **error_r);
int pop3_policy_env_flag_get(struct pop3_policy_env *env, MDB_txn *txn,
			     const char **keyword_r, const char **error_r);
int pop3_policy_env_flag_put(struct pop3_policy_env *env, MDB_txn *txn,
			     const char *keyword, const char **error_r);

/* Call func for every message record, in one read transaction: func
   must not call back into Dovecot (collect, then act). Stops at the
   first func returning < 0. Corrupted records are reported to
   func with rec=NULL and error set. */
typedef int pop3_policy_env_msg_iter_func_t(
	const struct pop3_policy_msg_record *rec, const char *error,
	void *context);
int pop3_policy_env_msg_iter(struct pop3_policy_env *env,
			     pop3_policy_env_msg_iter_func_t *func,
			     void *context, const char **error_r);

#endif
