#ifndef LMDB_SALVAGE_H
#define LMDB_SALVAGE_H

/* Salvage: build a fresh environment from whatever is still readable in
   a damaged data.mdb (doveadm lmdb salvage). The damaged file is read
   only by lmdb-pagescan, never by LMDB's own code, and every record
   found is kept only if its checksum holds; the new environment is
   written with the normal LMDB API and the project's encoders. No
   lib-storage types here: what the caller knows from Dovecot's index
   (mailbox names, UIDs) comes in as plain data.

   What is kept, and how (the details are in lmdb-salvage.c and
   lmdb-salvage-resolve.c):
   - every record and chunk whose checksum holds: TREE records (reached
     from the meta page's trees) first, then ORPHAN ones (valid leaf
     pages no tree reached) for keys no TREE record had. An ORPHAN's DBI
     is unknown: the record type inside its checksum says what it is.
     A TREE record that fails its DBI's decoder is tried as every other
     type too (a damaged pointer can attach a page to the wrong DBI).
   - a body record lost but whose chunks are whole is rebuilt from them,
     if they prove where the body ends (its last chunk is short: after a
     full one, a later chunk may have been lost too, and the body is lost
     rather than rebuilt shorter);
     a body whose chunks are damaged or missing is dropped, and so is
     every link to it (reported lost);
   - reference counts are the surviving links; gc entries, the UIDL index
     and the env record's counters are made anew;
   - a UID the mailbox's index has but whose link was lost is linked
     again to its body when the body is whole and the index's cache names
     it unambiguously (its Message-ID is that body's, and that body lost
     exactly as many links as UIDs name it): the message comes back with
     its UID, and with its flags once the index is rebuilt;
   - a body that was LINKED (or rebuilt: bodies are freed at their last
     expunge, so a whole body without record and links lost them) but
     lost links no UID could be matched to is linked again in a mailbox
     of its own ("Recovered<sep>Unlinked"), so no whole message is
     dropped; it is reported with its new UID;
   - a mailbox with links (or an index) but no readable record gets one,
     named as its index says, else "Recovered<sep><GUID>".
   Schema-1 files (records without checksums) are read with the schema-1
   decoders, and the result says that those records were not verified. */

#include "guid.h"
#include "lmdb-env.h"
#include "lmdb-pagescan.h"

/* A mailbox as the caller knows it from the mailbox list and the
   mailbox's index (the "lmdb-hdr" extension holds its GUID). */
struct lmdb_salvage_mailbox_info {
	guid_128_t guid;
	const char *name;
	uint32_t uid_validity;
	uint32_t next_uid;
	/* the UIDs the index has, ascending */
	const uint32_t *uids;
	unsigned int uids_count;
};

/* What a mailbox's index knows of one of its UIDs. */
struct lmdb_salvage_index_message {
	/* the cached Message-ID header (a header block), or NULL */
	const char *message_id_header;
	/* the cached POP3 UIDL, or NULL */
	const char *pop3_uidl;
	/* MAIL_ANSWERED..MAIL_DRAFT */
	uint8_t flags;
	unsigned int keywords_count;
	const char *const *keywords;
};

/* Fill *msg_r for a UID of the mailbox whose link was lost (returns
   FALSE if the index doesn't have it). Called mailbox by mailbox; the
   strings must stay valid until the next call. */
typedef bool lmdb_salvage_lookup_func_t(const struct lmdb_salvage_mailbox_info *info,
					uint32_t uid, void *context,
					struct lmdb_salvage_index_message *msg_r);

struct lmdb_salvage_settings {
	/* the damaged file */
	const char *data_path;
	/* an empty directory: the new environment goes there */
	const char *dest_dir;
	/* for the new environment (no_sync is forced during the build; the
	   result is synced to disk once at the end) */
	struct lmdb_env_settings env_set;
	/* the namespace's hierarchy separator, for new mailbox names */
	char hierarchy_sep;
	int64_t now;
	const struct lmdb_salvage_mailbox_info *mailboxes;
	unsigned int mailboxes_count;
	/* may be NULL */
	lmdb_salvage_lookup_func_t *lookup;
	void *lookup_context;
};

/* One message of the report: a lost one (its index UID, or its link
   whose body was not whole), a restored one (its index UID, linked to
   its body again) or a re-linked one (its new UID). */
struct lmdb_salvage_message {
	guid_128_t mailbox_guid;
	/* the mailbox's name in the new environment or the index */
	const char *mailbox_name;
	uint32_t uid;
	/* 0 if unknown (the link was lost) */
	uint64_t body_id;
	/* parsed from the body's first chunk, else from the index's cache;
	   NULL if neither has it */
	const char *message_id;
	const char *reason;
};

ARRAY_DEFINE_TYPE(lmdb_salvage_message, struct lmdb_salvage_message);

enum lmdb_salvage_mailbox_fate {
	/* its record was lost: rebuilt with the name its index has */
	LMDB_SALVAGE_MAILBOX_FROM_INDEX,
	/* its record was lost and no index names it: a new name */
	LMDB_SALVAGE_MAILBOX_NAME_LOST,
	/* made for the bodies that lost all their links */
	LMDB_SALVAGE_MAILBOX_RECOVERY,
};

struct lmdb_salvage_mailbox_note {
	guid_128_t guid;
	const char *name;
	enum lmdb_salvage_mailbox_fate fate;
	/* links it holds in the new environment */
	unsigned int links;
};

struct lmdb_salvage_result {
	pool_t pool;
	/* the scan of the damaged file */
	struct lmdb_pagescan_stats scan;
	/* the newest meta page was not used: why */
	const char *meta_fallback_reason;

	/* records (chunks included) written to the new environment */
	uint64_t records_tree, records_orphan;
	/* TREE records no decoder accepted */
	uint64_t records_damaged;
	/* ORPHAN records no decoder accepted (damaged, or not ours: free
	   list or main DB leaves) */
	uint64_t orphans_unreadable;
	/* ORPHAN records whose key was already kept */
	uint64_t records_duplicate;
	/* ORPHAN links whose UID the mailbox's index says was expunged */
	uint64_t records_stale;
	/* TREE records that decoded as another DBI's type */
	uint64_t records_misplaced;
	/* schema-1 records, kept without a checksum to check */
	uint64_t records_unverified;
	/* gc entries and UIDL index entries read (both are made anew) */
	uint64_t records_regenerated;

	/* the new environment */
	uint64_t links, bodies, chunks;
	uint64_t bodies_rebuilt, bodies_lost;
	/* whole bodies without links: pending (a save that never
	   committed) or dead, freed by purge */
	uint64_t bodies_unlinked;

	ARRAY_TYPE(lmdb_salvage_message) lost;
	ARRAY_TYPE(lmdb_salvage_message) restored;
	ARRAY_TYPE(lmdb_salvage_message) relinked;
	ARRAY(struct lmdb_salvage_mailbox_note) mailboxes;
};

/* Build the new environment in set->dest_dir from set->data_path. Returns
   0 with *result_r (also when much was lost: the result says what), or
   -1 with *error_r when the damaged file can't be read at all or the new
   environment can't be written (dest_dir is then in an undefined state:
   the caller removes it). */
int lmdb_salvage_build(const struct lmdb_salvage_settings *set,
		       struct lmdb_salvage_result **result_r,
		       const char **error_r);
void lmdb_salvage_result_free(struct lmdb_salvage_result **result);

/* The Message-ID header of a message's first bytes (a header block or a
   whole message), with line folding undone and anything but printable
   ASCII left out; at most 255 characters. Returns NULL if there is none.
   Allocated from the data stack. */
const char *lmdb_salvage_parse_message_id(const void *data, size_t size);

#endif
