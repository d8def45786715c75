#ifndef POP3_POLICY_RECORDS_H
#define POP3_POLICY_RECORDS_H

/* Every record of the policy environment: encoders and bounds-checked
   decoders, plus the pure rules built on them. No LMDB and no
   lib-storage types here, so all of it can be unit-tested alone.

   Every value starts with a version byte (2) and a CRC-32 (big-endian,
   Dovecot's crc32_data()) over the record type, the record's key and the
   value bytes after the CRC: a damaged value or key fails its decoder.
   Integers are big-endian. */

#include "buffer.h"

#define POP3_POLICY_RECORD_VERSION 2
/* schemas 1 and 2: no CRC; read only by pop3_policy_record_upgrade_v1() */
#define POP3_POLICY_RECORD_VERSION_V1 1
/* 1: meta, msgs, uidls. 2: adds the "downloads" index. 3: every value
   version 2 (with its CRC). Older ones are converted on open. */
#define POP3_POLICY_SCHEMA_VERSION 3

/* The record type byte inside the CRC: a value never passes for one of
   another DBI or meta key. */
enum pop3_policy_record_type {
	POP3_POLICY_RECORD_TYPE_SCHEMA = 1,
	POP3_POLICY_RECORD_TYPE_FLAG = 2,
	POP3_POLICY_RECORD_TYPE_SWEEP = 3,
	POP3_POLICY_RECORD_TYPE_MSG = 4,
	POP3_POLICY_RECORD_TYPE_UIDL = 5,
	POP3_POLICY_RECORD_TYPE_DOWNLOAD = 6,
};

/* the keys of the "meta" DBI */
#define POP3_POLICY_META_KEY_SCHEMA "schema"
#define POP3_POLICY_META_KEY_FLAG "deleted-flag"
#define POP3_POLICY_META_KEY_SWEEP "sweep"

/* RFC 1939: a UIDL is 1..70 characters in 0x21..0x7E */
#define POP3_POLICY_UIDL_MAX_LEN 70
/* LMDB keys are at most 511 bytes: longer GUIDs (maildir file names
   can be long) are keyed by a digest instead */
#define POP3_POLICY_GUID_KEY_MAX_LEN 400
#define POP3_POLICY_GUID_MAX_LEN 4096

#define POP3_POLICY_SECS_PER_DAY (24*60*60)

enum pop3_policy_msg_flags {
	/* hidden from POP3 by a keep or mark-read DELE */
	POP3_POLICY_MSG_FLAG_HIDDEN = 0x01,
};

/* "msgs" DBI: key = pop3_policy_msg_key(guid) */
struct pop3_policy_msg_record {
	uint8_t flags;
	/* end of the first complete RETR/TOP read, 0 = never downloaded */
	uint64_t first_download;
	/* the UIDL frozen for this message, "" = none */
	const char *uidl;
	/* the message GUID (the key may be a digest of it) */
	const char *guid;
};

/* "uidls" DBI: key = UIDL. Kept forever, also after the message is gone:
   a POP3 client that hasn't connected since still remembers the UIDL,
   and would skip another message given it. */
struct pop3_policy_uidl_record {
	const char *guid;
};

/* "meta" DBI, key "schema" */
struct pop3_policy_schema_record {
	uint32_t schema_version;
	/* unix time the environment was created */
	uint64_t created;
};

/* "meta" DBI, key "sweep": when records of messages no longer in the
   maildrop were last dropped by a full sweep. */
struct pop3_policy_sweep_record {
	uint64_t last_sweep;
};

/* "meta" DBI, key "deleted-flag": the pop3_deleted_flag keyword last
   seen by a POP3 session, so that lmtp, imap and doveadm, which can't
   see POP3 settings, know what "hidden" means. */
struct pop3_policy_flag_record {
	const char *keyword;
};
/* The longest keyword the decoder accepts; a longer pop3_deleted_flag is
   refused by the settings check, so none is ever written. */
#define POP3_POLICY_FLAG_KEYWORD_MAX_LEN 1024

/* key is the record's key in its DBI: it is inside the CRC. */
void pop3_policy_msg_record_encode(buffer_t *buf, const void *key,
				   size_t key_size,
				   const struct pop3_policy_msg_record *rec);
/* Strings in rec_r are allocated from the data stack. */
bool pop3_policy_msg_record_decode(const void *key, size_t key_size,
				   const void *data, size_t size,
				   struct pop3_policy_msg_record *rec_r,
				   const char **error_r);

void pop3_policy_uidl_record_encode(buffer_t *buf, const void *key,
				    size_t key_size,
				    const struct pop3_policy_uidl_record *rec);
bool pop3_policy_uidl_record_decode(const void *key, size_t key_size,
				    const void *data, size_t size,
				    struct pop3_policy_uidl_record *rec_r,
				    const char **error_r);

void pop3_policy_schema_record_encode(buffer_t *buf,
				      const struct pop3_policy_schema_record *rec);
bool pop3_policy_schema_record_decode(const void *data, size_t size,
				      struct pop3_policy_schema_record *rec_r,
				      const char **error_r);
/* The schema record of an environment of schema 1 or 2 (version 1, no
   CRC), for the conversion on open. */
bool pop3_policy_schema_record_decode_v1(const void *data, size_t size,
					 struct pop3_policy_schema_record *rec_r,
					 const char **error_r);

void pop3_policy_flag_record_encode(buffer_t *buf,
				    const struct pop3_policy_flag_record *rec);
bool pop3_policy_flag_record_decode(const void *data, size_t size,
				    struct pop3_policy_flag_record *rec_r,
				    const char **error_r);

void pop3_policy_sweep_record_encode(buffer_t *buf,
				     const struct pop3_policy_sweep_record *rec);
bool pop3_policy_sweep_record_decode(const void *data, size_t size,
				     struct pop3_policy_sweep_record *rec_r,
				     const char **error_r);

/* The key of a message GUID in the "msgs" DBI (data stack). */
const char *pop3_policy_msg_key(const char *guid);

/* "downloads" DBI, the index of messages by first download: key = u64
   first download (big-endian, so keys sort by time) + the message's
   "msgs" key; value = u8 version + the CRC of the key (no fields). The
   keep_days pass reads it from the
   start and stops at the first entry not due, so it costs what is due,
   not the whole history. */
void pop3_policy_download_key_encode(buffer_t *buf, uint64_t first_download,
				     const char *msg_key);
/* msg_key_r is on the data stack. */
bool pop3_policy_download_key_decode(const void *data, size_t size,
				     uint64_t *first_download_r,
				     const char **msg_key_r,
				     const char **error_r);
void pop3_policy_download_value_encode(buffer_t *buf, const void *key,
				       size_t key_size);
bool pop3_policy_download_value_decode(const void *key, size_t key_size,
				       const void *data, size_t size,
				       const char **error_r);

/* Schema conversion: append to out the version-2 form of a version-1
   value of the given type under key. FALSE with *error_r if data is no
   valid version-1 record of that type (it is then left as it is). */
bool pop3_policy_record_upgrade_v1(enum pop3_policy_record_type type,
				   const void *key, size_t key_size,
				   const void *data, size_t size,
				   buffer_t *out, const char **error_r);

/* TRUE if str is a valid RFC 1939 unique-id. */
bool pop3_policy_uidl_is_valid(const char *str);
/* The n-th alternative of base when base is taken: n=0 is base itself,
   n>0 appends "-n", shortening base so the result stays within 70
   characters and differs from base. base must be valid. */
const char *pop3_policy_uidl_candidate(const char *base, unsigned int n);
/* A valid UIDL derived from a computed one that isn't valid (too long,
   bad characters, empty): a hex digest of it. */
const char *pop3_policy_uidl_sanitize(const char *uidl);

/* The UIDL shown for a message whose frozen UIDL can't be had (the
   environment can't be opened or read): a fixed prefix and the hex SHA1
   of its GUID (62 characters), the same in every session while the
   failure lasts. No UIDL the plugin freezes has the prefix. */
#define POP3_POLICY_UIDL_FALLBACK_PREFIX "~pop3-policy-unfrozen~"
const char *pop3_policy_uidl_fallback(const char *guid);
bool pop3_policy_uidl_is_fallback(const char *uidl);

/* Is a message first downloaded at first_download due for removal at
   now under keep_days? Never for keep_days=0 or never-downloaded mail. */
bool pop3_policy_keep_days_due(uint64_t first_download,
			       unsigned int keep_days, time_t now);

/* How much must be freed for an allocation of size more bytes (and one
   more message) to fit, given the quota transaction's state. */
struct pop3_policy_quota_state {
	int64_t bytes_used, count_used;
	uint64_t bytes_ceil, count_ceil;
	uint64_t bytes_over, count_over;
};
void pop3_policy_quota_needed(const struct pop3_policy_quota_state *state,
			      uint64_t size, uint64_t *bytes_needed_r,
			      uint64_t *count_needed_r);
/* Credit freed space to the state, as if it had been free from the
   start. */
void pop3_policy_quota_credit(struct pop3_policy_quota_state *state,
			      uint64_t bytes_freed, uint64_t count_freed);

#endif
