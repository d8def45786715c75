/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* Writes the seed corpus (tests/fuzz/corpus/<target>/) with the
   project's own encoders and storage code: small, real records in each
   target's input format, and data.mdb files of environments made by
   lmdb_env_open(), the body writer and the link, mailbox, uidls and
   quarantine code. Deterministic for a given tree (fixed times and
   contents), so that running it again changes files only when a format
   changed. Run by "tests/fuzz/fuzz corpus". */

#include "lib.h"
#include "buffer.h"
#include "ioloop.h"
#include "sha2.h"
#include "unlink-directory.h"
#include "write-full.h"
#include "lmdb-records.h"
#include "lmdb-env.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-uidls.h"
#include "lmdb-quarantine.h"
#include "pop3-policy-records.h"
#include "test-lmdb-v1.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define NOW 1700000000

static const char *corpus_dir;
static const guid_128_t inbox_guid = {
	0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
	0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01
};
static const guid_128_t archive_guid = {
	0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8,
	0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf, 0xb0
};

static void seed(const char *target, const char *name, const void *data,
		 size_t size)
{
	const char *dir = t_strdup_printf("%s/%s", corpus_dir, target);
	const char *path = t_strdup_printf("%s/%s", dir, name);
	int fd;

	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		i_fatal("mkdir(%s) failed: %m", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd == -1 || write_full(fd, data, size) < 0)
		i_fatal("writing %s failed: %m", path);
	i_close_fd(&fd);
}

static void seed_str(const char *target, const char *name, const char *str)
{
	seed(target, name, str, strlen(str));
}

static void seed_buf(const char *target, const char *name, const buffer_t *buf)
{
	seed(target, name, buf->data, buf->used);
}

static void put_u16(buffer_t *buf, uint16_t v)
{
	buffer_append_c(buf, v >> 8);
	buffer_append_c(buf, v & 0xff);
}

static void put_u32(buffer_t *buf, uint32_t v)
{
	put_u16(buf, v >> 16);
	put_u16(buf, v & 0xffff);
}

static void put_slice(buffer_t *buf, const void *data, size_t size)
{
	put_u16(buf, size);
	buffer_append(buf, data, size);
}

static void put_str(buffer_t *buf, const char *str)
{
	put_slice(buf, str, strlen(str));
}

static void check(bool ok, const char *error)
{
	if (!ok)
		i_fatal("encoding a seed failed: %s", error);
}

/* --- records --- */

static struct lmdb_body_record body_rec(enum lmdb_body_state state,
					uint64_t size, const char *guid)
{
	struct lmdb_body_record rec;
	unsigned int i;

	i_zero(&rec);
	rec.state = state;
	rec.refcount = state == LMDB_BODY_STATE_LINKED ? 2 : 0;
	rec.physical_size = size;
	rec.message_size = size;
	rec.virtual_size = size + size / 40;
	rec.received_date = NOW - 3600;
	rec.save_date = NOW;
	rec.state_since = NOW;
	rec.chunk_size = LMDB_BODY_CHUNK_SIZE;
	rec.chunk_count = (size + LMDB_BODY_CHUNK_SIZE - 1) /
		LMDB_BODY_CHUNK_SIZE;
	for (i = 0; i < LMDB_SHA256_SIZE; i++)
		rec.sha256[i] = i * 7;
	memcpy(rec.orig_mailbox_guid, inbox_guid, GUID_128_SIZE);
	rec.guid = guid;
	return rec;
}

static void seeds_env(void)
{
	struct lmdb_env_record rec;
	buffer_t *buf = t_buffer_create(128);
	const char *error;

	i_zero(&rec);
	rec.schema_version = LMDB_SCHEMA_VERSION;
	rec.generation = 1;
	rec.next_body_id = 1;
	rec.created = NOW;
	buffer_append_c(buf, 0);
	check(lmdb_env_record_encode(buf, &rec, &error), error);
	seed_buf("lmdb-env-record", "new", buf);

	rec.generation = 7;
	rec.next_body_id = 123457;
	rec.links = 4000;
	rec.link_vsize_bytes = 123456789;
	rec.bodies = 3900;
	rec.body_bytes = 120000000;
	rec.last_purge = NOW - 86400;
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0);
	check(lmdb_env_record_encode(buf, &rec, &error), error);
	seed_buf("lmdb-env-record", "counters", buf);

	/* schema 1, for the _v1 decoder (mode bit 1) */
	rec.schema_version = 1;
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 2);
	test_v1_env(buf, &rec);
	seed_buf("lmdb-env-record", "v1", buf);
}

static void seeds_body(void)
{
	static const struct {
		const char *name;
		enum lmdb_body_state state;
		uint64_t size;
		const char *guid;
	} bodies[] = {
		{ "pending", LMDB_BODY_STATE_PENDING, 100, "" },
		{ "linked", LMDB_BODY_STATE_LINKED, 9000,
		  "3c1b7a7e0f3e2b6559d30000a1b2c3d4" },
		{ "dead", LMDB_BODY_STATE_DEAD, 4072, "<m1@example.com>" },
		{ "empty", LMDB_BODY_STATE_LINKED, 0, "x" },
	};
	struct lmdb_body_record rec;
	buffer_t *buf = t_buffer_create(256);
	unsigned char key[LMDB_BODY_ID_SIZE];
	const char *error;
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(bodies); i++) {
		rec = body_rec(bodies[i].state, bodies[i].size, bodies[i].guid);
		lmdb_body_id_encode(1000 + i, key);
		buffer_set_used_size(buf, 0);
		buffer_append_c(buf, 0);
		buffer_append(buf, key, sizeof(key));
		check(lmdb_body_record_encode(buf, 1000 + i, &rec, &error),
		      error);
		seed_buf("lmdb-body-record", bodies[i].name, buf);
	}
	rec = body_rec(LMDB_BODY_STATE_LINKED, 5000, "v1-guid");
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 2);
	buffer_append(buf, key, sizeof(key));
	test_v1_body(buf, &rec);
	seed_buf("lmdb-body-record", "v1", buf);
}

static void seeds_link(void)
{
	static const char *const keywords[] = {
		"$Forwarded", "$Label1", "NonJunk", NULL
	};
	static const char *const bad_keywords[] = { "\\Seen", "ok", NULL };
	struct lmdb_link_record rec;
	buffer_t *buf = t_buffer_create(256);
	unsigned char key[LMDB_LINK_KEY_SIZE];
	const char *error;

	i_zero(&rec);
	rec.body_id = 42;
	rec.save_date = NOW;
	rec.flags = 0x01;
	rec.modseq = 17;
	rec.pop3_uidl = "";
	lmdb_link_key_encode(inbox_guid, 1, key);
	buffer_append_c(buf, 0);
	buffer_append(buf, key, sizeof(key));
	check(lmdb_link_record_encode(buf, inbox_guid, 1, &rec, &error), error);
	seed_buf("lmdb-link-record", "plain", buf);

	rec.pop3_uidl = "UID123.1700000000";
	rec.pop3_order = 3;
	rec.keywords = keywords;
	rec.keywords_count = 3;
	rec.flags = 0x1f;
	lmdb_link_key_encode(inbox_guid, 77, key);
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0);
	buffer_append(buf, key, sizeof(key));
	check(lmdb_link_record_encode(buf, inbox_guid, 77, &rec, &error), error);
	seed_buf("lmdb-link-record", "uidl-keywords", buf);

	/* schema 1 stored outside values as given */
	rec.pop3_uidl = "a UIDL with spaces";
	rec.keywords = bad_keywords;
	rec.keywords_count = 2;
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 2);
	buffer_append(buf, key, sizeof(key));
	test_v1_link(buf, &rec);
	seed_buf("lmdb-link-record", "v1-invalid-uidl", buf);
}

static void seeds_mailbox(void)
{
	struct lmdb_mailbox_record rec;
	buffer_t *buf = t_buffer_create(256);
	const char *error;

	i_zero(&rec);
	rec.uid_validity = NOW;
	rec.highest_uid = 12;
	rec.highest_modseq = 30;
	rec.created = NOW;
	rec.hierarchy_sep = '/';
	rec.name = "INBOX";
	buffer_append_c(buf, 0);
	buffer_append(buf, inbox_guid, GUID_128_SIZE);
	check(lmdb_mailbox_record_encode(buf, inbox_guid, &rec, &error), error);
	seed_buf("lmdb-mailbox-record", "inbox", buf);

	rec.state = LMDB_MAILBOX_STATE_DELETED;
	rec.hierarchy_sep = '.';
	rec.name = "Archiv.2024.\xc3\x84pfel";
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0);
	buffer_append(buf, archive_guid, GUID_128_SIZE);
	check(lmdb_mailbox_record_encode(buf, archive_guid, &rec, &error),
	      error);
	seed_buf("lmdb-mailbox-record", "deleted-utf8", buf);

	rec.state = LMDB_MAILBOX_STATE_ACTIVE;
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 2);
	buffer_append(buf, archive_guid, GUID_128_SIZE);
	test_v1_mailbox(buf, &rec);
	seed_buf("lmdb-mailbox-record", "v1", buf);
}

static void seeds_gc_chunk(void)
{
	buffer_t *buf = t_buffer_create(256);
	unsigned char key[LMDB_GC_KEY_SIZE], ckey[LMDB_CHUNK_KEY_SIZE];
	unsigned char hdr[LMDB_CHUNK_HDR_SIZE];
	const char *data = "From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n";

	lmdb_gc_key_encode(LMDB_GC_KIND_PENDING, NOW, 1001, key);
	buffer_append_c(buf, 0);
	buffer_append(buf, key, sizeof(key));
	lmdb_gc_value_encode(buf, key);
	seed_buf("lmdb-gc-value", "pending", buf);
	lmdb_gc_key_encode(LMDB_GC_KIND_DEAD, 0, 7, key);
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0);
	buffer_append(buf, key, sizeof(key));
	lmdb_gc_value_encode(buf, key);
	seed_buf("lmdb-gc-value", "dead", buf);

	lmdb_chunk_key_encode(1001, 0, ckey);
	lmdb_chunk_header_encode(hdr, 1001, 0, data, strlen(data));
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0);
	buffer_append(buf, ckey, sizeof(ckey));
	buffer_append(buf, hdr, sizeof(hdr));
	buffer_append(buf, data, strlen(data));
	seed_buf("lmdb-chunk", "v2", buf);

	lmdb_chunk_key_encode(1001, 3, ckey);
	lmdb_chunk_header_encode(hdr, 1001, 3, "", 0);
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0);
	buffer_append(buf, ckey, sizeof(ckey));
	buffer_append(buf, hdr, sizeof(hdr));
	seed_buf("lmdb-chunk", "v2-empty", buf);

	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0);
	buffer_append(buf, ckey, sizeof(ckey));
	test_v1_chunk(buf, data, strlen(data));
	seed_buf("lmdb-chunk", "v1", buf);
}

static void seeds_quarantine_uidls(void)
{
	struct lmdb_quarantine_record rec;
	buffer_t *buf = t_buffer_create(256), *key = t_buffer_create(64);
	buffer_t *value = t_buffer_create(64);
	unsigned char lkey[LMDB_LINK_KEY_SIZE];
	const char *error;

	lmdb_link_key_encode(inbox_guid, 5, lkey);
	buffer_append(key, "links", 6);
	buffer_append(key, lkey, sizeof(lkey));
	buffer_append(value, "\x02garbage", 8);
	i_zero(&rec);
	rec.since = NOW;
	rec.reason = "damaged, or its body is missing";
	rec.raw = value->data;
	rec.raw_size = value->used;
	buffer_append_c(buf, 0);
	put_slice(buf, key->data, key->used);
	check(lmdb_quarantine_record_encode(buf, key->data, key->used, &rec,
					    &error), error);
	seed_buf("lmdb-quarantine-record", "link", buf);

	buffer_set_used_size(key, 0);
	lmdb_uidls_key_encode(key, inbox_guid, "UID123.1700000000", 77);
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0);
	put_slice(buf, key->data, key->used);
	lmdb_uidls_value_encode(buf, key->data, key->used);
	seed_buf("lmdb-uidls-value", "uid77", buf);
}

static void seeds_keys_values(void)
{
	buffer_t *buf = t_buffer_create(256);
	unsigned char k[64];
	char long_uidl[257];

	lmdb_link_key_encode(inbox_guid, 1, k);
	lmdb_link_key_encode(inbox_guid, 256, k + LMDB_LINK_KEY_SIZE);
	seed("lmdb-keys", "links", k, 2 * LMDB_LINK_KEY_SIZE);
	lmdb_chunk_key_encode(1001, 1, k);
	lmdb_chunk_key_encode(1001, 0x100, k + LMDB_CHUNK_KEY_SIZE);
	seed("lmdb-keys", "chunks", k, 2 * LMDB_CHUNK_KEY_SIZE);
	lmdb_gc_key_encode(LMDB_GC_KIND_PENDING, NOW, 5, k);
	lmdb_gc_key_encode(LMDB_GC_KIND_DEAD, NOW - 1, 4, k + LMDB_GC_KEY_SIZE);
	seed("lmdb-keys", "gc", k, 2 * LMDB_GC_KEY_SIZE);
	lmdb_body_id_encode(1, k);
	seed("lmdb-keys", "body-id", k, LMDB_BODY_ID_SIZE);
	lmdb_uidls_key_encode(buf, inbox_guid, "UID1", 1);
	seed_buf("lmdb-keys", "uidls", buf);

	seed_str("lmdb-values", "uidl", "UID123.1700000000");
	seed_str("lmdb-values", "keyword", "$Forwarded");
	seed_str("lmdb-values", "guid", "<20240101.abc@example.com>");
	seed_str("lmdb-values", "name", "INBOX/Archiv/\xc3\x84pfel");
	seed_str("lmdb-values", "space", "a b");
	memset(long_uidl, 'u', sizeof(long_uidl));
	seed("lmdb-values", "uidl-255", long_uidl, 255);
	seed("lmdb-values", "uidl-256", long_uidl, 256);
}

/* --- body reader inputs (fuzz-lmdb-body-reader.c's format) --- */

/* a built record of a consistent layout, n chunks in order, each sealed
   as seal says (0 v2, 1 v1, 3 wrong key), the whole read plan */
static void body_reader_seed(const char *name, uint8_t flags, uint8_t flags2,
			     uint16_t chunk_size, uint16_t size,
			     const uint8_t *chunk_flags, unsigned int n)
{
	buffer_t *buf = t_buffer_create(256);
	unsigned int i;

	buffer_append_c(buf, flags);
	buffer_append_c(buf, flags2);
	buffer_append_c(buf, 1);		/* body id 2 */
	buffer_append_c(buf, 1);		/* state: linked */
	buffer_append_c(buf, 1);		/* refcount */
	put_u16(buf, chunk_size);
	put_u16(buf, size);
	buffer_append_c(buf, 3);		/* virtual size + 3 */
	put_u32(buf, NOW);
	buffer_append_c(buf, 9);		/* guid "fuzz-9" */
	buffer_append_c(buf, n);
	for (i = 0; i < n; i++) {
		buffer_append_c(buf, chunk_flags[i]);
		/* a chunk 3 bytes short */
		if ((chunk_flags[i] & 0x40) != 0)
			buffer_append_c(buf, (uint8_t)-3);
	}
	/* direct reads: 4 x (first, count, verify) */
	for (i = 0; i < 4; i++) {
		buffer_append_c(buf, i);
		buffer_append_c(buf, 3);
		buffer_append_c(buf, i & 1);
	}
	put_u32(buf, 5);			/* seek offset */
	seed_buf("lmdb-body-reader", name, buf);
}

static void seeds_body_reader(void)
{
	static const uint8_t v2[] = { 0, 0, 0, 0 }, v1[] = { 1, 1, 1, 1 };
	static const uint8_t mixed[] = { 0, 1, 3, 0 }, short_[] = { 0, 0x40 };
	struct lmdb_body_record rec;
	buffer_t *buf = t_buffer_create(256), *value = t_buffer_create(256);
	const char *error;

	/* F_VERIFY|F_FULL_VERIFY|F_SEEK|F_DIRECT, F2_SHA_RIGHT|F2_PLAIN_VERIFY */
	body_reader_seed("whole-v2", 0x3c, 0x09, 16, 60, v2, 4);
	body_reader_seed("whole-v1", 0x3c, 0x09, 16, 64, v1, 4);
	body_reader_seed("damaged", 0x3c, 0x09, 16, 60, mixed, 4);
	body_reader_seed("short-chunk", 0x3c, 0x01, 100, 150, short_, 2);
	body_reader_seed("empty", 0x3c, 0x09, 4072, 0, v2, 0);
	body_reader_seed("no-verify", 0x30, 0x01, 7, 20, v2, 3);

	/* a raw record, sealed by the harness (F_RAW_BODY|F_SEAL_BODY) */
	rec = body_rec(LMDB_BODY_STATE_LINKED, 20, "raw");
	rec.chunk_size = 16;
	rec.chunk_count = 2;
	check(lmdb_body_record_encode(value, 2, &rec, &error), error);
	buffer_append_c(buf, 0x07);
	buffer_append_c(buf, 0);
	buffer_append_c(buf, 1);
	put_slice(buf, value->data, value->used);
	/* two chunks with data from the input (C_DATA_INPUT) */
	buffer_append_c(buf, 2);
	buffer_append_c(buf, 0x20);
	put_slice(buf, "0123456789abcdef", 16);
	buffer_append_c(buf, 0x20);
	put_slice(buf, "wxyz", 4);
	seed_buf("lmdb-body-reader", "raw-record", buf);
}

/* --- pop3_policy --- */

static void seeds_pop3_policy(void)
{
	struct pop3_policy_msg_record msg;
	struct pop3_policy_uidl_record uidl;
	struct pop3_policy_schema_record schema;
	struct pop3_policy_flag_record flag;
	struct pop3_policy_sweep_record sweep;
	buffer_t *buf = t_buffer_create(256);
	char long_guid[600];

	i_zero(&msg);
	msg.flags = POP3_POLICY_MSG_FLAG_HIDDEN;
	msg.first_download = NOW;
	msg.uidl = "00000001.1700000000";
	msg.guid = "3c1b7a7e0f3e2b6559d30000a1b2c3d4";
	buffer_append_c(buf, 0);
	pop3_policy_msg_record_encode(buf, &msg);
	seed_buf("pop3-policy-records", "msg", buf);

	uidl.guid = msg.guid;
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 1);
	pop3_policy_uidl_record_encode(buf, &uidl);
	seed_buf("pop3-policy-records", "uidl", buf);

	schema.schema_version = POP3_POLICY_SCHEMA_VERSION;
	schema.created = NOW;
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 2);
	pop3_policy_schema_record_encode(buf, &schema);
	seed_buf("pop3-policy-records", "schema", buf);

	flag.keyword = "$POP3Deleted";
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 3);
	pop3_policy_flag_record_encode(buf, &flag);
	seed_buf("pop3-policy-records", "flag", buf);

	sweep.last_sweep = NOW;
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 4);
	pop3_policy_sweep_record_encode(buf, &sweep);
	seed_buf("pop3-policy-records", "sweep", buf);

	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 5);
	pop3_policy_download_key_encode(buf, NOW, msg.guid);
	seed_buf("pop3-policy-records", "download-key", buf);

	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 6);
	pop3_policy_download_value_encode(buf);
	seed_buf("pop3-policy-records", "download-value", buf);

	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 7);
	buffer_append(buf, "UID with space", 14);
	seed_buf("pop3-policy-records", "uidl-rules", buf);
	memset(long_guid, 'g', sizeof(long_guid));
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 7);
	buffer_append(buf, long_guid, sizeof(long_guid));
	seed_buf("pop3-policy-records", "long-guid", buf);

	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 8);
	buffer_append(buf, "\0\0\0\0\x65\x53\xf1\x00\0\0\0\x07\0\0\0\0\x66\0\0\0", 20);
	seed_buf("pop3-policy-records", "keep-days", buf);
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 9);
	buffer_append(buf, "\0\0\0\0\0\x10\0\0" "\0\0\0\0\0\0\x10\0"
		      "\0\0\0\0\0\0\0\x01" "\0\0\0\0\0\x40\0\0"
		      "\0\0\0\0\0\0\x40\0" "\0\0\0\0\0\0\0\0"
		      "\0\0\0\0\0\0\0\0", 56);
	seed_buf("pop3-policy-records", "quota", buf);

	/* the environment: schema 1 with messages (converted at open), and
	   schema 2 with stale index entries */
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0x17);		/* meta, msgs, uidls, schema */
	buffer_append_c(buf, 1);		/* version 1 */
	put_u32(buf, NOW);
	buffer_append_c(buf, 3);
	buffer_append_c(buf, 1 | 0x20);		/* msg without index entry */
	buffer_append_c(buf, 0);
	put_u32(buf, NOW - 8 * 86400);
	put_str(buf, "UID1");
	put_str(buf, "guid-one");
	buffer_append_c(buf, 1 | 0x20);
	buffer_append_c(buf, 1);
	put_u32(buf, NOW - 86400);
	put_str(buf, "");
	put_str(buf, "guid-two");
	buffer_append_c(buf, 2);		/* uidl reservation */
	put_str(buf, "guid-one");
	put_str(buf, "UID1");
	put_u16(buf, 7);			/* keep_days */
	put_u32(buf, NOW);
	seed_buf("pop3-policy-env", "schema1", buf);

	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0x1f);		/* every DBI, schema */
	buffer_append_c(buf, 2);
	put_u32(buf, NOW);
	buffer_append_c(buf, 3);
	buffer_append_c(buf, 1);		/* msg with index entry */
	buffer_append_c(buf, 0);
	put_u32(buf, NOW - 8 * 86400);
	put_str(buf, "UID2");
	put_str(buf, "guid-three");
	buffer_append_c(buf, 3);		/* index entry, no record */
	put_str(buf, "guid-gone");
	put_u32(buf, NOW - 9 * 86400);
	buffer_append_c(buf, 0x30);		/* raw downloads record */
	put_slice(buf, "\0\0\0\0\0\0\0\x01x", 9);
	put_str(buf, "\x01");
	put_u16(buf, 7);
	put_u32(buf, NOW);
	seed_buf("pop3-policy-env", "schema2-stale", buf);

	seed_str("lmdb-settings", "defaults", "");
	seed_str("lmdb-settings", "all", "64M\n32G\n16M\n36h\n1d\n512\n1h\n");
	seed_str("lmdb-settings", "bad-reserve", "1M\n2M\n2M\n");
	seed_str("pop3-policy-settings", "keep", "keep\n7\nyes\n10s\n");
	seed_str("pop3-policy-settings", "move", "move:Trash\n0\nno\n5\n");
	seed_str("pop3-policy-settings", "mark-read", "mark-read\n\n\n1 min\n");
}

/* --- data.mdb files --- */

struct env_fill {
	uint64_t body_ids[8];
	unsigned int links, quarantine, delete_from, delete_to;
};

static int fill_txn(MDB_txn *txn, void *context, const char **error_r);

static struct lmdb_env *env_open(const char *dir)
{
	struct lmdb_env_settings set;
	struct lmdb_env *env;
	const char *error;

	i_zero(&set);
	set.map_size_initial = 4 * 1024 * 1024;
	set.map_size_max = 64 * 1024 * 1024;
	set.map_reserve = 1024 * 1024;
	set.max_readers = 16;
	set.no_sync = TRUE;
	set.mode = 0600;
	if (lmdb_env_open(dir, &set, &env, &error) < 0)
		i_fatal("lmdb_env_open(%s) failed: %s", dir, error);
	return env;
}

static uint64_t write_body(struct lmdb_env *env, size_t size, unsigned int n)
{
	struct lmdb_body_writer *writer = lmdb_body_writer_init(env);
	struct lmdb_body_info info;
	unsigned char *data = t_malloc_no0(size + 1);
	uint64_t body_id, psize, vsize;
	const char *error;
	size_t i;

	for (i = 0; i < size; i++)
		data[i] = i % 61 == 60 ? '\n' : 'a' + (i + n) % 26;
	i_zero(&info);
	info.guid = t_strdup_printf("seed-%u", n);
	info.received_date = NOW - n;
	info.save_date = NOW;
	memcpy(info.orig_mailbox_guid, inbox_guid, GUID_128_SIZE);
	if (lmdb_body_writer_append(writer, data, size, &error) < 0 ||
	    lmdb_body_writer_finish(writer, &info, &body_id, &psize, &vsize,
				    &error) < 0)
		i_fatal("writing a body failed: %s", error);
	lmdb_body_writer_free(&writer);
	return body_id;
}

static struct lmdb_env *fill_env;

static int fill_txn(MDB_txn *txn, void *context, const char **error_r)
{
	static const char *const keywords[] = { "$Forwarded", "NonJunk" };
	struct env_fill *fill = context;
	struct lmdb_env *env = fill_env;
	struct lmdb_mailbox_record mbox;
	struct lmdb_link_record rec;
	unsigned char key[LMDB_LINK_KEY_SIZE];
	unsigned int i;
	int ret;

	i_zero(&mbox);
	mbox.uid_validity = NOW;
	mbox.highest_uid = fill->links;
	mbox.created = NOW;
	mbox.hierarchy_sep = '/';
	mbox.name = "INBOX";
	if ((ret = lmdb_mailbox_put(env, txn, inbox_guid, &mbox, error_r)) != 0)
		return ret;
	mbox.name = "Archive/\xc3\x84pfel";
	mbox.highest_uid = 0;
	if ((ret = lmdb_mailbox_put(env, txn, archive_guid, &mbox,
				    error_r)) != 0)
		return ret;
	for (i = 1; i <= fill->links; i++) {
		i_zero(&rec);
		rec.body_id = fill->body_ids[i % 3];
		rec.save_date = NOW;
		rec.flags = i % 32;
		rec.pop3_order = i;
		rec.modseq = i;
		rec.pop3_uidl = t_strdup_printf("UID%u.%u", i, NOW);
		rec.keywords = keywords;
		rec.keywords_count = i % 3;
		if ((ret = lmdb_link_add(env, txn, inbox_guid, i, &rec,
					 error_r)) != 0 ||
		    (ret = lmdb_body_ref(env, txn, rec.body_id, 1, NOW, NULL,
					 error_r)) != 0 ||
		    (ret = lmdb_uidls_set(env, txn, inbox_guid, rec.pop3_uidl,
					  i, error_r)) != 0)
			return ret;
	}
	for (i = 0; i < fill->quarantine; i++) {
		lmdb_link_key_encode(inbox_guid, 1 + i, key);
		if ((ret = lmdb_quarantine_move(env, txn, env->dbi_links,
						"links", key, sizeof(key),
						"seed", NOW, error_r)) != 0)
			return ret;
	}
	return 0;
}

static int delete_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct env_fill *fill = context;
	unsigned int i;
	int ret;

	for (i = fill->delete_from; i < fill->delete_to; i++) {
		if ((ret = lmdb_link_delete(fill_env, txn, inbox_guid, i,
					    error_r)) != 0 && ret != MDB_NOTFOUND)
			return ret;
	}
	return 0;
}

/* compact: the file as mdb_env_copy2(MDB_CP_COMPACT) writes it (no free
   pages, no old page versions): fewer pages for the fuzzer to read */
static void seed_env(const char *name, unsigned int links,
		     unsigned int delete_to, bool compact)
{
	char dir[] = "/tmp/gen-corpus.XXXXXX";
	const char *copy_dir;
	struct env_fill fill;
	struct lmdb_env *env;
	const char *error, *path;
	buffer_t *data;
	struct stat st;
	int fd;

	if (mkdtemp(dir) == NULL)
		i_fatal("mkdtemp() failed: %m");
	env = env_open(dir);
	i_zero(&fill);
	if (links > 0) {
		fill.body_ids[0] = write_body(env, 200, 0);
		fill.body_ids[1] = write_body(env, 5000, 1);
		fill.body_ids[2] = write_body(env, 0, 2);
		/* stays pending: a gc entry */
		(void)write_body(env, 30, 3);
		fill.links = links;
		fill.quarantine = 1;
		fill_env = env;
		if (lmdb_env_write(env, fill_txn, &fill, TRUE, &error) != 0)
			i_fatal("filling %s failed: %s", dir, error);
		if (delete_to > 0) {
			/* frees pages: the free list has entries */
			fill.delete_from = 2;
			fill.delete_to = delete_to;
			if (lmdb_env_write(env, delete_txn, &fill, TRUE,
					   &error) != 0)
				i_fatal("deleting in %s failed: %s", dir, error);
		}
	}
	copy_dir = t_strdup_printf("%s/copy", dir);
	if (compact) {
		if (mkdir(copy_dir, 0700) < 0)
			i_fatal("mkdir(%s) failed: %m", copy_dir);
		if (mdb_env_copy2(env->env, copy_dir, MDB_CP_COMPACT) != 0)
			i_fatal("mdb_env_copy2(%s) failed", copy_dir);
	}
	lmdb_env_unref(&env);
	lmdb_env_deinit();

	path = t_strdup_printf("%s/data.mdb", compact ? copy_dir : dir);
	fd = open(path, O_RDONLY);
	if (fd == -1 || fstat(fd, &st) < 0)
		i_fatal("open(%s) failed: %m", path);
	data = t_buffer_create(st.st_size);
	if (read(fd, buffer_append_space_unsafe(data, st.st_size),
		 st.st_size) != st.st_size)
		i_fatal("read(%s) failed", path);
	i_close_fd(&fd);
	seed_buf("lmdb-pagescan", name, data);
	if (unlink_directory(dir, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0)
		i_fatal("unlink_directory(%s) failed: %s", dir, error);
}

int main(int argc, char *argv[])
{
	lib_init();
	if (argc != 2)
		i_fatal("Usage: gen-corpus <corpus dir>");
	corpus_dir = argv[1];
	ioloop_time = NOW;
	ioloop_timeval.tv_sec = NOW;
	T_BEGIN {
		seeds_env();
		seeds_body();
		seeds_link();
		seeds_mailbox();
		seeds_gc_chunk();
		seeds_quarantine_uidls();
		seeds_keys_values();
		seeds_body_reader();
		seeds_pop3_policy();
		seed_env("empty.mdb", 0, 0, FALSE);
		seed_env("small.mdb", 6, 0, TRUE);
		seed_env("branches.mdb", 80, 0, TRUE);
		seed_env("freelist.mdb", 80, 60, FALSE);
	} T_END;
	lib_deinit();
	return 0;
}
