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

/* The map starts here and doubles when full, up to the maximum, and
   never beyond what the address space limit leaves (pop3-policy-map.h)
   less this margin. */
#define POP3_POLICY_ENV_MAP_INITIAL (8ULL * 1024 * 1024)
#define POP3_POLICY_ENV_MAP_MAX (4ULL * 1024 * 1024 * 1024)
#define POP3_POLICY_ENV_VSZ_MARGIN (32ULL * 1024 * 1024)

struct pop3_policy_env {
	int refcount;
	char *path;
	mode_t mode;
	dev_t dev;
	ino_t ino;
	/* NULL when a failed map resize couldn't open the file again; the
	   next transaction tries */
	MDB_env *env;
	/* what is mapped now */
	uint64_t map_size;
	uint64_t page_size;
	unsigned int open_txns;
	/* opening again after a failed resize */
	bool reopening;

	MDB_dbi dbi_meta, dbi_msgs, dbi_uidls, dbi_downloads;

	/* what the schema conversion of this open did, for the caller to
	   log (this layer has no event) and free; NULL if none ran */
	char *conversion_report;
	/* records the conversion left as they were (they didn't decode) */
	unsigned int conversion_damaged;
};

/* A unit of work inside a write transaction. It may run again after the
   map grew, so it must only touch the transaction and state it resets
   itself. Returns 0 or an LMDB/errno code with *error_r. */
typedef int pop3_policy_env_write_func_t(struct pop3_policy_env *env,
					 MDB_txn *txn, void *context,
					 const char **error_r);

/* Open (or share) the environment in the file at path, creating it with
   mode if needed, and convert an older schema. */
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

/* pop3-policy-env-schema.c: open the DBIs of a freshly opened MDB_env,
   creating or converting them in a write transaction when needed. */
int pop3_policy_env_open_dbis(struct pop3_policy_env *env,
			      const char **error_r);

/* pop3-policy-env-records.c */
/* Lookups return 1 if found, 0 if not, -1 with *error_r on error.
   Strings in the records are on the data stack. */
int pop3_policy_env_msg_get(struct pop3_policy_env *env, MDB_txn *txn,
			    const char *guid,
			    struct pop3_policy_msg_record *rec_r,
			    const char **error_r);
/* The same, but a damaged record (it fails its decoder: its checksum,
   its version, a field) returns 0 with *damage_r set to a description,
   for the callers that carry on as if there were none; -1 only for LMDB
   errors. */
int pop3_policy_env_msg_lookup(struct pop3_policy_env *env, MDB_txn *txn,
			       const char *guid,
			       struct pop3_policy_msg_record *rec_r,
			       const char **damage_r, const char **error_r);
/* Also keeps the "downloads" index in step with rec->first_download. */
int pop3_policy_env_msg_put(struct pop3_policy_env *env, MDB_txn *txn,
			    const struct pop3_policy_msg_record *rec,
			    const char **error_r);
/* Drop the record of guid and its index entry; 0 also if there was
   none. The UIDL reservation stays. */
int pop3_policy_env_msg_del(struct pop3_policy_env *env, MDB_txn *txn,
			    const char *guid, const char **error_r);
int pop3_policy_env_uidl_get(struct pop3_policy_env *env, MDB_txn *txn,
			     const char *uidl,
			     struct pop3_policy_uidl_record *rec_r,
			     const char **error_r);
/* The same, but a damaged reservation returns 0 with *damage_r set
   (its UIDL is taken all the same: it may have been shown). */
int pop3_policy_env_uidl_lookup(struct pop3_policy_env *env, MDB_txn *txn,
				const char *uidl,
				struct pop3_policy_uidl_record *rec_r,
				const char **damage_r, const char **error_r);
int pop3_policy_env_uidl_put(struct pop3_policy_env *env, MDB_txn *txn,
			     const char *uidl,
			     const struct pop3_policy_uidl_record *rec,
			     const char **error_r);
int pop3_policy_env_flag_get(struct pop3_policy_env *env, MDB_txn *txn,
			     const char **keyword_r, const char **error_r);
/* The same, but a damaged record returns 0 with *damage_r set. */
int pop3_policy_env_flag_lookup(struct pop3_policy_env *env, MDB_txn *txn,
				const char **keyword_r, const char **damage_r,
				const char **error_r);
int pop3_policy_env_flag_put(struct pop3_policy_env *env, MDB_txn *txn,
			     const char *keyword, const char **error_r);
/* The "downloads" index entry of a message (msg_key as
   pop3_policy_msg_key() gives it); msg_put and msg_del keep it in step,
   the schema conversion fills it. */
int pop3_policy_env_download_put(struct pop3_policy_env *env, MDB_txn *txn,
				 uint64_t first_download, const char *msg_key,
				 const char **error_r);
int pop3_policy_env_download_del(struct pop3_policy_env *env, MDB_txn *txn,
				 uint64_t first_download, const char *msg_key,
				 const char **error_r);
/* The time of the last full sweep, 0 if never. */
int pop3_policy_env_sweep_get(struct pop3_policy_env *env, MDB_txn *txn,
			      uint64_t *last_sweep_r, const char **error_r);
int pop3_policy_env_sweep_put(struct pop3_policy_env *env, MDB_txn *txn,
			      uint64_t last_sweep, const char **error_r);

/* pop3-policy-env-iter.c */
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
/* The same for the records of messages whose first download is due
   under keep_days at now, oldest first, read from the "downloads"
   index: the cost is the number due, not the number of records.
   Index entries that point at no record (or at one with another
   download time) are reported as errors and dropped afterwards. */
int pop3_policy_env_due_iter(struct pop3_policy_env *env,
			     unsigned int keep_days, time_t now,
			     pop3_policy_env_msg_iter_func_t *func,
			     void *context, const char **error_r);
/* Every UIDL reservation: func gets uidl and its record (or NULL and an
   error for a corrupted one). */
typedef int pop3_policy_env_uidl_iter_func_t(
	const char *uidl, const struct pop3_policy_uidl_record *rec,
	const char *error, void *context);
int pop3_policy_env_uidl_iter(struct pop3_policy_env *env,
			      pop3_policy_env_uidl_iter_func_t *func,
			      void *context, const char **error_r);

#endif
