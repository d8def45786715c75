#ifndef LMDB_ENV_H
#define LMDB_ENV_H

/* One LMDB environment per user storage root, shared by every storage of
   the process that points at the same directory (LMDB forbids opening
   one environment twice in a process). Transactions are short: a write
   transaction runs inside lmdb_env_write(), which retries after growing
   the map, and nobody keeps one across a call back into Dovecot. */

#include <lmdb.h>

struct lmdb_env_record;

struct lmdb_env_settings {
	/* first map size, grown by doubling up to map_size_max */
	uint64_t map_size_initial;
	uint64_t map_size_max;
	/* space kept free below map_size_max for expunges and flag
	   changes: new bodies are refused once they would eat into it */
	uint64_t map_reserve;
	unsigned int max_readers;
	/* mail_fsync = never */
	bool no_sync;
	/* file mode for data.mdb / lock.mdb */
	mode_t mode;
};

/* A read transaction kept across calls: a stream's snapshot of the body
   it reads, so that the body's pages stay valid while other processes
   expunge and free it. Pinned transactions don't block map resizes:
   before this process resizes its map or reopens the environment, they
   are dropped, and the owner gets a new snapshot at its next read
   (renewed: it must check that what it reads still exists). */
struct lmdb_env_pin {
	struct lmdb_env_pin *prev, *next;
	MDB_txn *txn;
	bool linked;
	bool dropped;
};

struct lmdb_env {
	int refcount;
	char *path;
	dev_t dev;
	ino_t ino;
	/* the identity the files were opened with (LMTP switches it per
	   recipient) */
	uid_t euid;
	gid_t egid;
	MDB_env *env;
	struct lmdb_env_settings set;
	uint64_t map_size;
	unsigned int page_size;
	unsigned int open_txns;

	/* generation of the files we have open; a different value in the
	   env record means a compaction replaced them */
	uint64_t generation;
	/* last read snapshot whose generation was checked */
	size_t checked_txnid;
	/* a reset read transaction kept for mdb_txn_renew() */
	MDB_txn *idle_read_txn;
	/* pinned read transactions (streams) */
	struct lmdb_env_pin *pins;
	/* the storage warned that the data near what may be mapped */
	bool headroom_warned;

	MDB_dbi dbi_meta, dbi_bodies, dbi_chunks, dbi_links;
	MDB_dbi dbi_mailboxes, dbi_gc, dbi_quarantine, dbi_uidls;
};

/* A unit of work run inside a write transaction. It may run more than
   once (after the map grew), so it must only touch the transaction and
   state it resets itself. Returns 0, or an LMDB/errno code with *error_r. */
typedef int lmdb_write_func_t(MDB_txn *txn, void *context,
			      const char **error_r);

/* Open (or share) the environment in directory path, creating it if
   needed. Returns 0 or -1 with *error_r. *temp_error_r is TRUE when the
   failure is worth retrying (compaction in progress, out of space). */
int lmdb_env_open(const char *path, const struct lmdb_env_settings *set,
		  struct lmdb_env **env_r, const char **error_r);
/* The last reference keeps the environment open until another one is
   opened or lmdb_env_deinit(). */
void lmdb_env_unref(struct lmdb_env **env);
/* Close what lmdb_env_unref() kept open (at module unload). */
void lmdb_env_deinit(void);

/* Run func in a write transaction and commit it. sync=FALSE flushes the
   transaction's pages but not the meta page that makes it current: a
   crash may undo it (never corrupt the file) until the next synced
   commit or lmdb_env_sync(). */
int lmdb_env_write(struct lmdb_env *env, lmdb_write_func_t *func,
		   void *context, bool sync, const char **error_r);

int lmdb_env_read_begin(struct lmdb_env *env, MDB_txn **txn_r,
			const char **error_r);
void lmdb_env_read_end(struct lmdb_env *env, MDB_txn **txn);

/* The pin's read transaction, begun if it has none (first use, or
   dropped since). *renewed_r is TRUE when an earlier snapshot was
   dropped. Returns 0 or -1 with *error_r. */
int lmdb_env_pin_txn(struct lmdb_env *env, struct lmdb_env_pin *pin,
		     MDB_txn **txn_r, bool *renewed_r, const char **error_r);
void lmdb_env_pin_release(struct lmdb_env *env, struct lmdb_env_pin *pin);
/* Abort every pinned transaction (before a remap). */
void lmdb_env_drop_pins(struct lmdb_env *env);
/* Another reference to an open environment (a stream outliving the
   call that opened it). */
void lmdb_env_ref(struct lmdb_env *env);

/* The "env" record of the meta DBI: counters and the body id sequence.
   Both return 0 or an LMDB code with *error_r. */
int lmdb_env_record_get(struct lmdb_env *env, MDB_txn *txn,
			struct lmdb_env_record *rec_r, const char **error_r);
int lmdb_env_record_put(struct lmdb_env *env, MDB_txn *txn,
			const struct lmdb_env_record *rec,
			const char **error_r);

/* Add to the env record's counters (links, their virtual bytes, bodies,
   body bytes). A counter never goes below zero: a wrong count is fixed by
   verify, not made worse. Returns 0 or an LMDB code. */
int lmdb_env_add_counters(struct lmdb_env *env, MDB_txn *txn,
			  int64_t links, int64_t link_vsize_bytes,
			  int64_t bodies, int64_t body_bytes,
			  const char **error_r);

/* Bytes in use (pages below the high-water mark that are not free). */
int lmdb_env_get_used_bytes(struct lmdb_env *env, uint64_t *used_r,
			    uint64_t *free_pages_r, const char **error_r);
/* The bytes the environment's data reach (what a map must cover to
   read anything) and the most this process may map (its address-space
   limit, Dovecot's vsz_limit, less what else it has mapped; UINT64_MAX
   without a limit). Returns 0 or -1. */
int lmdb_env_get_headroom(struct lmdb_env *env, uint64_t *used_r,
			  uint64_t *limit_r);
/* Would storing size more bytes of new mail eat into the reserve? */
int lmdb_env_check_space(struct lmdb_env *env, uint64_t size,
			 const char **error_r);

/* Replace the record under the cursor with value, in place when it
   keeps its size; key_data is the caller's copy of the key. Returns an
   LMDB code. */
int lmdb_env_cursor_put_current(MDB_cursor *cursor, const void *key_data,
				size_t key_size, const buffer_t *value);

/* Flush every commit so far to disk (after unsynced commits). A no-op
   with no_sync. Returns 0 or -1 with *error_r. */
int lmdb_env_sync(struct lmdb_env *env, const char **error_r);

/* open(path) and fsync() it: a file's data, or a directory's names.
   Returns 0, or -1 with *error_r. */
int lmdb_env_fsync_path(const char *path, const char **error_r);

/* Rewrite the environment compactly: copy it while holding the writer,
   retire the old files (a new generation committed into them, so every
   process reopens at its next transaction), then swap in the copy.
   Opens wait during the retirement and the swap. A failure or a crash
   at any step leaves a usable environment (see lmdb-env-compact.c). */
int lmdb_env_compact(struct lmdb_env *env, uint64_t *old_size_r,
		     uint64_t *new_size_r, const char **error_r);

/* The lock that opens share and compaction takes exclusively while it
   swaps the files (lock_type F_RDLCK or F_WRLCK), taken by directory:
   salvage holds it without opening the damaged environment. Returns 0,
   or -1 with *error_r (also after timeout_secs). */
struct file_lock;
int lmdb_env_swap_lock_dir(const char *dir, mode_t mode, int lock_type,
			   unsigned int timeout_secs,
			   struct file_lock **lock_r, const char **error_r);

/* Returns TRUE if an LMDB/errno code means "no space": map full at the
   ceiling, or the filesystem is full. Such failures are temporary. */
bool lmdb_env_error_is_space(int ret);

const char *lmdb_env_strerror(int ret);

#endif
