#ifndef LMDB_RECORDS_H
#define LMDB_RECORDS_H

/* The on-disk record formats of the lmdb storage (docs/schema.md).
   This file and lmdb-records.c are the only place that knows the byte
   layout: every decoder checks every length against the record size, so
   nothing read from disk can make us read out of bounds. No lib-storage
   types here, so the codecs can be unit tested and fuzzed alone. */

#include "guid.h"

/* Version byte that starts every record value. Bump per record type when
   its layout changes; decoders accept every version they know and the
   upgrade-on-open rule (lmdb-env.c) rewrites old ones. */
#define LMDB_RECORD_VERSION 1
/* Version of the whole environment's layout (the set of DBIs and keys). */
#define LMDB_SCHEMA_VERSION 1

#define LMDB_BODY_ID_SIZE 8
#define LMDB_LINK_KEY_SIZE (GUID_128_SIZE + 4)
#define LMDB_CHUNK_KEY_SIZE (LMDB_BODY_ID_SIZE + 4)
#define LMDB_GC_KEY_SIZE (1 + 8 + LMDB_BODY_ID_SIZE)
#define LMDB_CHUNK_HDR_SIZE 8
#define LMDB_SHA256_SIZE 32

/* RFC 1939: a UIDL is 1..70 characters; we accept longer imported ones
   but never more than fits a record comfortably. */
#define LMDB_UIDL_MAX_LEN 255
#define LMDB_KEYWORD_MAX_LEN 255
#define LMDB_KEYWORDS_MAX 1024
#define LMDB_GUID_MAX_LEN 255
#define LMDB_NAME_MAX_LEN 4096

enum lmdb_body_state {
	/* saved, not yet referenced by any link; collected after a grace
	   period if no commit links it (crash, rollback) */
	LMDB_BODY_STATE_PENDING = 1,
	LMDB_BODY_STATE_LINKED = 2,
	/* refcount dropped to zero; freed by purge after a grace period */
	LMDB_BODY_STATE_DEAD = 3,
};

enum lmdb_gc_kind {
	LMDB_GC_KIND_PENDING = 1,
	LMDB_GC_KIND_DEAD = 2,
};

enum lmdb_mailbox_state {
	LMDB_MAILBOX_STATE_ACTIVE = 0,
	LMDB_MAILBOX_STATE_DELETED = 1,
};

/* "meta" DBI, key "env": identity and global counters of the environment */
struct lmdb_env_record {
	uint32_t schema_version;
	/* changes when the environment is replaced (compaction); every
	   process reopens when it sees a new value */
	uint64_t generation;
	uint64_t next_body_id;
	uint64_t created;
	/* exact counters, updated in the transactions that change them */
	uint64_t links;
	uint64_t link_vsize_bytes;
	uint64_t bodies;
	uint64_t body_bytes;
	/* when purge last freed expired bodies */
	uint64_t last_purge;
};

/* "bodies" DBI, key body id (8 bytes big-endian) */
struct lmdb_body_record {
	enum lmdb_body_state state;
	uint32_t refcount;
	/* bytes stored in the chunks */
	uint64_t physical_size;
	/* the message as Dovecot sees it: differs from physical_size when a
	   plugin (zlib, mail_crypt) transforms what is stored */
	uint64_t message_size;
	/* message_size with every LF counted as CRLF */
	uint64_t virtual_size;
	int64_t received_date;
	int64_t save_date;
	/* when the body entered its current state (pending/dead) */
	int64_t state_since;
	uint32_t chunk_count;
	uint32_t chunk_size;
	unsigned char sha256[LMDB_SHA256_SIZE];
	/* mailbox the body was first saved to, for recovering orphans */
	guid_128_t orig_mailbox_guid;
	/* message GUID string as Dovecot sees it (not necessarily hex) */
	const char *guid;
};

/* "links" DBI, key mailbox GUID (16) + UID (4 BE) */
struct lmdb_link_record {
	uint64_t body_id;
	int64_t save_date;
	/* mirror of the index flags (MAIL_ANSWERED..MAIL_DRAFT) */
	uint8_t flags;
	uint32_t pop3_order;
	uint64_t modseq;
	/* "" = none */
	const char *pop3_uidl;
	unsigned int keywords_count;
	const char *const *keywords;
};

/* "mailboxes" DBI, key mailbox GUID (16) */
struct lmdb_mailbox_record {
	enum lmdb_mailbox_state state;
	uint32_t uid_validity;
	uint32_t highest_uid;
	uint64_t highest_modseq;
	int64_t created;
	char hierarchy_sep;
	/* the mailbox's current virtual name */
	const char *name;
};

/* "chunks" DBI value header: version, flags, reserved, CRC32 */
struct lmdb_chunk_header {
	uint32_t crc32;
};

void lmdb_body_id_encode(uint64_t body_id,
			 unsigned char key_r[LMDB_BODY_ID_SIZE]);
bool lmdb_body_id_decode(const void *data, size_t size, uint64_t *body_id_r);

void lmdb_link_key_encode(const guid_128_t mailbox_guid, uint32_t uid,
			  unsigned char key_r[LMDB_LINK_KEY_SIZE]);
bool lmdb_link_key_decode(const void *data, size_t size,
			  guid_128_t mailbox_guid_r, uint32_t *uid_r);

void lmdb_chunk_key_encode(uint64_t body_id, uint32_t chunk_idx,
			   unsigned char key_r[LMDB_CHUNK_KEY_SIZE]);
bool lmdb_chunk_key_decode(const void *data, size_t size,
			   uint64_t *body_id_r, uint32_t *chunk_idx_r);

void lmdb_gc_key_encode(enum lmdb_gc_kind kind, int64_t since,
			uint64_t body_id, unsigned char key_r[LMDB_GC_KEY_SIZE]);
bool lmdb_gc_key_decode(const void *data, size_t size,
			enum lmdb_gc_kind *kind_r, int64_t *since_r,
			uint64_t *body_id_r);

/* Encoders append to buf. Decoders return FALSE with *error_r set when
   the record is malformed; strings are allocated from pool. */
void lmdb_env_record_encode(buffer_t *buf, const struct lmdb_env_record *rec);
bool lmdb_env_record_decode(const void *data, size_t size,
			    struct lmdb_env_record *rec_r,
			    const char **error_r);

void lmdb_body_record_encode(buffer_t *buf, const struct lmdb_body_record *rec);
bool lmdb_body_record_decode(const void *data, size_t size, pool_t pool,
			     struct lmdb_body_record *rec_r,
			     const char **error_r);

void lmdb_link_record_encode(buffer_t *buf, const struct lmdb_link_record *rec);
bool lmdb_link_record_decode(const void *data, size_t size, pool_t pool,
			     struct lmdb_link_record *rec_r,
			     const char **error_r);

void lmdb_mailbox_record_encode(buffer_t *buf,
				const struct lmdb_mailbox_record *rec);
bool lmdb_mailbox_record_decode(const void *data, size_t size, pool_t pool,
				struct lmdb_mailbox_record *rec_r,
				const char **error_r);

/* A chunk value is the header followed by the data. */
void lmdb_chunk_header_encode(unsigned char hdr_r[LMDB_CHUNK_HDR_SIZE],
			      const void *data, size_t size);
bool lmdb_chunk_decode(const void *value, size_t value_size,
		       const void **data_r, size_t *size_r,
		       const char **error_r);

/* Returns TRUE if the UIDL is acceptable to store (RFC 1939 characters,
   non-empty, not too long). */
bool lmdb_uidl_is_valid(const char *uidl);

#endif
