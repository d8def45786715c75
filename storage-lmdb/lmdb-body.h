#ifndef LMDB_BODY_H
#define LMDB_BODY_H

/* Message bodies: stored once, in checksummed chunks, with a reference
   count that links (lmdb-link.h) hold. A body is written as PENDING,
   becomes LINKED when the first link commits and DEAD when the last link
   goes; lmdb_body_gc() frees pending and dead bodies after a grace
   period. No lib-storage types here. */

#include "lmdb-records.h"
#include "lmdb-env.h"

/* Chunk data size: a chunk value (header + data) plus LMDB's overflow
   page header fills exactly one 4 KiB page. A single-page overflow can
   take any free page, so pages freed by purge are always reusable; runs
   of several pages would need contiguous free space, which fragments. */
#define LMDB_BODY_CHUNK_SIZE (4096 - 16 - LMDB_CHUNK_HDR_SIZE)

struct lmdb_body_writer;

struct lmdb_body_info {
	const char *guid;
	/* the message's own size and virtual size, when a plugin transformed
	   the stored bytes (0 = same as what was written) */
	uint64_t message_size, virtual_size;
	int64_t received_date;
	int64_t save_date;
	guid_128_t orig_mailbox_guid;
};

struct lmdb_body_writer *lmdb_body_writer_init(struct lmdb_env *env);
/* Buffered: full groups of chunks are written in short unsynced write
   transactions, so a large body never holds the writer long. */
int lmdb_body_writer_append(struct lmdb_body_writer *writer,
			    const void *data, size_t size,
			    const char **error_r);
/* Write what is left and the PENDING body record. */
int lmdb_body_writer_finish(struct lmdb_body_writer *writer,
			    const struct lmdb_body_info *info,
			    uint64_t *body_id_r, uint64_t *physical_size_r,
			    uint64_t *virtual_size_r, const char **error_r);
/* Finish without writing, if nothing was written yet and the body is
   at most max_size bytes: returns 1, and lmdb_body_writer_write_txn()
   writes it later in the transaction that links it (one commit, and one
   flush, less per saved mail). Returns 0 if the body must be finished
   with lmdb_body_writer_finish() instead, -1 on error (a full map is
   refused here, as a written body would be; kept_bytes are the bodies
   already kept for the same transaction). */
int lmdb_body_writer_finish_deferred(struct lmdb_body_writer *writer,
				     const struct lmdb_body_info *info,
				     uint64_t kept_bytes, uint64_t max_size,
				     uint64_t *physical_size_r,
				     uint64_t *virtual_size_r,
				     const char **error_r);
/* Write a deferred body as PENDING in txn; may run again in a new
   transaction after the map grew. */
int lmdb_body_writer_write_txn(struct lmdb_body_writer *writer,
			       MDB_txn *txn, uint64_t *body_id_r,
			       const char **error_r);
/* A deferred body's record (no id yet) and contents, for reading the
   mail before it is committed. */
void lmdb_body_writer_get_record(const struct lmdb_body_writer *writer,
				 struct lmdb_body_record *rec_r);
struct istream *
lmdb_body_writer_open_stream(const struct lmdb_body_writer *writer);
/* The LMDB/errno code of the writer's last failure (0 if none), so that
   a full map can be told from an internal error. */
int lmdb_body_writer_get_last_ret(struct lmdb_body_writer *writer);
/* Drop a PENDING body that will never be linked (rolled back save). */
int lmdb_body_discard(struct lmdb_env *env, uint64_t body_id,
		      const char **error_r);
/* Free the writer. Chunks already written stay until the pending GC,
   unless the body was never finished (then they are deleted now). */
void lmdb_body_writer_free(struct lmdb_body_writer **writer);

/* Returns 1 and the record, 0 if there is no such body, -1 if LMDB
   failed, -2 if the record is damaged (*error_r). txn may be
   read-only. */
int lmdb_body_lookup(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
		     pool_t pool, struct lmdb_body_record *rec_r,
		     const char **error_r);
/* Same in a transaction of its own. */
int lmdb_body_get(struct lmdb_env *env, uint64_t body_id, pool_t pool,
		  struct lmdb_body_record *rec_r, const char **error_r);

/* Check that every chunk is present, has the right size and a matching
   checksum; with full=TRUE also recompute the body's SHA-256. Returns 1
   if the body is whole, 0 if it is damaged (*error_r says how), -1 on
   an LMDB error. */
int lmdb_body_verify(struct lmdb_env *env, uint64_t body_id,
		     const struct lmdb_body_record *rec, bool full,
		     const char **error_r);

/* Copy chunk idx of the body into dest (appended). Verifies the chunk's
   checksum. Returns 1, 0 if missing/damaged, -1 on LMDB error. */
int lmdb_body_read_chunk(struct lmdb_env *env, uint64_t body_id,
			 uint32_t idx, buffer_t *dest, const char **error_r);
/* The same for up to count consecutive chunks in one read transaction.
   Returns how many were read (>0), 0 if the first is missing/damaged,
   -1 on LMDB error. A later missing/damaged chunk ends the run early;
   the next call reports it. verify=FALSE skips the checksums, for a
   body lmdb_body_verify() has just checked. */
int lmdb_body_read_chunks(struct lmdb_env *env, uint64_t body_id,
			  uint32_t first_idx, uint32_t count, buffer_t *dest,
			  bool verify, const char **error_r);

/* A reader keeps one read snapshot (a pinned transaction) for its whole
   life, so the body can't change or vanish under a stream while other
   processes expunge and free it. Open returns 1 with the body's record,
   0 if there is no such body, -1 if LMDB failed, -2 if the record is
   damaged. */
struct lmdb_body_reader;
int lmdb_body_reader_open(struct lmdb_env *env, uint64_t body_id,
			  pool_t pool, struct lmdb_body_record *rec_r,
			  struct lmdb_body_reader **reader_r,
			  const char **error_r);
/* As lmdb_body_verify(), in the reader's snapshot. */
int lmdb_body_reader_verify(struct lmdb_body_reader *reader, bool full,
			    const char **error_r);
/* As lmdb_body_read_chunks(), in the reader's snapshot, also checking
   each chunk's size against the record's layout. */
int lmdb_body_reader_read(struct lmdb_body_reader *reader, uint32_t first_idx,
			  uint32_t count, buffer_t *dest, bool verify,
			  const char **error_r);
void lmdb_body_reader_close(struct lmdb_body_reader **reader);

/* Inside a write transaction: add delta to the body's reference count,
   moving it between PENDING/LINKED/DEAD. Returns 0, or an LMDB code
   (MDB_NOTFOUND if the body is gone). *virtual_size_r (if not NULL) is
   the body's virtual size, which the caller's counters need. */
int lmdb_body_ref(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
		  int delta, int64_t now, uint64_t *virtual_size_r,
		  const char **error_r);

/* Inside a write transaction: drop one reference (a link was expunged).
   The last reference frees the body at once: a reader still streaming
   it has its own snapshot. Returns 0, or an LMDB code (MDB_NOTFOUND if
   the body is gone, MDB_CORRUPTED if its record is damaged: then nothing
   changed). *virtual_size_r is the body's virtual size. */
int lmdb_body_release(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
		      int64_t now, uint64_t *virtual_size_r,
		      const char **error_r);

/* Inside a write transaction: write a new record for a body whose record
   is damaged, from its chunks, if they are all there and whole: sizes
   and SHA-256 from the data, refcount as given (LINKED, or DEAD with a
   gc entry at 0), dates now, and a new message GUID (the old one was
   only in the record). A plugin-transformed body (zlib, mail_crypt) gets
   its stored size as message size: Dovecot corrects the sizes it caches
   when it parses the mail. Returns 1 if rebuilt, 0 if the chunks don't
   allow it (*error_r says why), -1 on LMDB failure. */
int lmdb_body_rebuild(struct lmdb_env *env, MDB_txn *txn, uint64_t body_id,
		      uint32_t refcount, int64_t now, const char **error_r);

/* Inside a write transaction: (re)write the gc entry of a PENDING or
   DEAD body, whose own entry was damaged and removed. Returns 0 or an
   LMDB code. */
int lmdb_body_restore_gc_entry(struct lmdb_env *env, MDB_txn *txn,
			       uint64_t body_id, const char **error_r);

/* Free PENDING bodies older than pending_grace seconds and DEAD ones
   older than dead_grace, at most max_bodies of them. A body whose record
   is damaged is left with its gc entry (for verify -r): *damaged_r says
   how many, *damage_r what the first one was. */
int lmdb_body_gc(struct lmdb_env *env, int64_t now,
		 unsigned int pending_grace, unsigned int dead_grace,
		 unsigned int max_bodies, unsigned int *freed_r,
		 unsigned int *damaged_r, const char **damage_r,
		 const char **error_r);

#endif
