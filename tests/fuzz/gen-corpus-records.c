/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* Seeds of the lmdb record, key and value targets (schema 2 by the
   encoders, schema 1 byte by byte as tests/unit/test-lmdb-v1.h writes it)
   and of the body reader (fuzz-lmdb-body-reader.c's input format). */

#include "lib.h"
#include "buffer.h"
#include "lmdb-records.h"
#include "lmdb-body.h"
#include "lmdb-quarantine.h"
#include "test-lmdb-v1.h"
#include "gen-corpus.h"

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

void gen_corpus_records(void)
{
	seeds_env();
	seeds_body();
	seeds_link();
	seeds_mailbox();
	seeds_gc_chunk();
	seeds_quarantine_uidls();
	seeds_keys_values();
	seeds_body_reader();
}
