#ifndef LMDB_RECORDS_H
#define LMDB_RECORDS_H

/* The on-disk record formats of the lmdb storage (docs/schema.md).
   This file and lmdb-records*.c are the only place that knows the byte
   layout: every decoder checks every length against the record size, so
   nothing read from disk can make us read out of bounds. No lib-storage
   types here, so the codecs can be unit tested and fuzzed alone. */

#include "guid.h"

/* Version byte that starts every record value. Version 2 (schema 2)
   follows it with a CRC-32 over the record's type, its key and the rest
   of the value, so that a damaged byte anywhere in a record, key
   included, is detected instead of served. Version 1 (schema 1) had no
   checksum; its decoders exist only for the upgrade (lmdb-upgrade.c).
   Chunks of version 1 stay valid: they always carried a CRC-32 of their
   data. */
#define LMDB_RECORD_VERSION_1 1
#define LMDB_RECORD_VERSION 2
/* Version of the whole environment's layout (the set of DBIs, keys and
   record versions). */
#define LMDB_SCHEMA_VERSION 2
/* version byte + CRC-32 */
#define LMDB_RECORD_HDR_SIZE 5

/* The record type is part of every checksum: a record copied under a key
   of another DBI (or found on a page whose DBI is unknown, by salvage)
   never passes as one of that DBI. */
enum lmdb_record_type {
	LMDB_RECORD_TYPE_ENV = 1,
	LMDB_RECORD_TYPE_BODY = 2,
	LMDB_RECORD_TYPE_LINK = 3,
	LMDB_RECORD_TYPE_MAILBOX = 4,
	LMDB_RECORD_TYPE_GC = 5,
	LMDB_RECORD_TYPE_CHUNK = 6,
	LMDB_RECORD_TYPE_QUARANTINE = 7,
	LMDB_RECORD_TYPE_UIDL = 8,
};

#define LMDB_ENV_RECORD_KEY "env"
#define LMDB_ENV_RECORD_KEY_SIZE 3

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
/* data bytes per chunk: ours are 4,072 (early versions wrote 65,512);
   anything above this is damage, and a reader sizes buffers by it */
#define LMDB_CHUNK_SIZE_MAX (1024 * 1024)

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

/* the system flags a link mirrors: \Answered .. \Draft, never \Recent */
#define LMDB_LINK_FLAGS_MASK 0x1f

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

/* Encoders append the record value for the given key to buf. They
   return FALSE with *error_r, appending nothing, when a field can't be
   stored (a string too long or not valid for its field): the callers
   validate what comes from outside first (lmdb-values.h), so this is a
   last line of defence, never an assertion.

   Decoders verify the checksum (over type, key and value), the version,
   every length and every field's validity, and return FALSE with
   *error_r for a record that is malformed or damaged. Strings are
   allocated from pool. The _v1 decoders read schema-1 records (no
   checksum), for the upgrade only. */
bool lmdb_env_record_encode(buffer_t *buf, const struct lmdb_env_record *rec,
			    const char **error_r);
bool lmdb_env_record_decode(const void *data, size_t size,
			    struct lmdb_env_record *rec_r,
			    const char **error_r);
bool lmdb_env_record_decode_v1(const void *data, size_t size,
			       struct lmdb_env_record *rec_r,
			       const char **error_r);

bool lmdb_body_record_encode(buffer_t *buf, uint64_t body_id,
			     const struct lmdb_body_record *rec,
			     const char **error_r);
bool lmdb_body_record_decode(uint64_t body_id, const void *data, size_t size,
			     pool_t pool, struct lmdb_body_record *rec_r,
			     const char **error_r);
bool lmdb_body_record_decode_v1(const void *data, size_t size, pool_t pool,
				struct lmdb_body_record *rec_r,
				const char **error_r);

bool lmdb_link_record_encode(buffer_t *buf, const guid_128_t mailbox_guid,
			     uint32_t uid, const struct lmdb_link_record *rec,
			     const char **error_r);
bool lmdb_link_record_decode(const guid_128_t mailbox_guid, uint32_t uid,
			     const void *data, size_t size, pool_t pool,
			     struct lmdb_link_record *rec_r,
			     const char **error_r);
bool lmdb_link_record_decode_v1(const void *data, size_t size, pool_t pool,
				struct lmdb_link_record *rec_r,
				const char **error_r);

bool lmdb_mailbox_record_encode(buffer_t *buf, const guid_128_t mailbox_guid,
				const struct lmdb_mailbox_record *rec,
				const char **error_r);
bool lmdb_mailbox_record_decode(const guid_128_t mailbox_guid,
				const void *data, size_t size, pool_t pool,
				struct lmdb_mailbox_record *rec_r,
				const char **error_r);
bool lmdb_mailbox_record_decode_v1(const void *data, size_t size, pool_t pool,
				   struct lmdb_mailbox_record *rec_r,
				   const char **error_r);

/* A gc entry's value: its key's checksum (schema 1 had an empty value). */
void lmdb_gc_value_encode(buffer_t *buf,
			  const unsigned char key[LMDB_GC_KEY_SIZE]);
bool lmdb_gc_value_check(const unsigned char key[LMDB_GC_KEY_SIZE],
			 const void *data, size_t size, const char **error_r);

/* "quarantine" DBI, key: the DBI name the record came from, NUL, its key.
   What doveadm lmdb verify -r took out of the live DBIs because it was
   damaged beyond repair: kept, not served. */
struct lmdb_quarantine_record {
	int64_t since;
	const char *reason;
	const void *raw;
	size_t raw_size;
};
bool lmdb_quarantine_record_encode(buffer_t *buf, const void *key,
				   size_t key_size,
				   const struct lmdb_quarantine_record *rec,
				   const char **error_r);
bool lmdb_quarantine_record_decode(const void *key, size_t key_size,
				   const void *data, size_t size, pool_t pool,
				   struct lmdb_quarantine_record *rec_r,
				   const char **error_r);

/* "uidls" DBI, key: mailbox GUID + the UIDL's bytes + NUL + UID (u32): one
   entry per link that holds a UIDL, so that two links sharing one (from
   before uniqueness was enforced) are both there. A UIDL never holds a
   NUL or anything below 0x21, so a mailbox's entries of one UIDL sort
   together, before those of any longer UIDL it is a prefix of. The value
   is the key's checksum (lmdb-uidls.h). */
#define LMDB_UIDLS_KEY_MAX_SIZE (GUID_128_SIZE + LMDB_UIDL_MAX_LEN + 1 + 4)
void lmdb_uidls_key_encode(buffer_t *buf, const guid_128_t mailbox_guid,
			   const char *uidl, uint32_t uid);
/* The UID of a key whose mailbox and UIDL are guid and uidl, FALSE if the
   key is of another mailbox or UIDL (or malformed). */
bool lmdb_uidls_key_match(const void *key, size_t key_size,
			  const guid_128_t mailbox_guid, const char *uidl,
			  uint32_t *uid_r);
void lmdb_uidls_value_encode(buffer_t *buf, const void *key, size_t key_size);
bool lmdb_uidls_value_check(const void *key, size_t key_size,
			    const void *data, size_t size,
			    const char **error_r);

/* A chunk value is the header followed by the data. Version 2 checksums
   the key with the data, version 1 only the data; both are read. */
void lmdb_chunk_header_encode(unsigned char hdr_r[LMDB_CHUNK_HDR_SIZE],
			      uint64_t body_id, uint32_t chunk_idx,
			      const void *data, size_t size);
bool lmdb_chunk_decode(uint64_t body_id, uint32_t chunk_idx,
		       const void *value, size_t value_size,
		       const void **data_r, size_t *size_r,
		       const char **error_r);

#endif
