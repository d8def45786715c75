/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "str.h"
#include "ioloop.h"
#include "unlink-directory.h"
#include "test-common.h"
#include "lmdb-records.h"
#include "lmdb-env.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-values.h"
#include "test-rand.h"
#include "test-lmdb-v1.h"

#include <unistd.h>
#include <openssl/evp.h>

/* lmdb_schema_init() as lmdb_env_open() runs it: a schema-1 environment,
   written here with LMDB itself from docs/schema.md's layout, is
   converted in place; a damaged env record is rebuilt; a newer schema is
   refused. */

#define MB (1024ULL * 1024)
#define CHUNK LMDB_BODY_CHUNK_SIZE

static char test_dir[64];

static bool test_str_contains(const char *str, const char *substr)
{
	return str != NULL && strstr(str, substr) != NULL;
}

/* The module's environment */

static void test_dir_init(void)
{
	i_strocpy(test_dir, "/tmp/test-lmdb-schema.XXXXXX", sizeof(test_dir));
	if (mkdtemp(test_dir) == NULL)
		i_fatal("mkdtemp(%s) failed: %m", test_dir);
	ioloop_time = 1000000;
}

static void test_dir_deinit(void)
{
	const char *error;

	lmdb_env_deinit();
	if (unlink_directory(test_dir, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0)
		i_error("unlink_directory(%s) failed: %s", test_dir, error);
}

static int test_env_open_max(uint64_t map_initial, uint64_t map_max,
			     struct lmdb_env **env_r, const char **error_r)
{
	struct lmdb_env_settings set;

	i_zero(&set);
	set.map_size_initial = map_initial;
	set.map_size_max = map_max;
	set.map_reserve = map_initial / 4;
	set.max_readers = 16;
	set.no_sync = TRUE;
	set.mode = 0600;
	return lmdb_env_open(test_dir, &set, env_r, error_r);
}

static struct lmdb_env *test_env_open(void)
{
	struct lmdb_env *env;
	const char *error;

	if (test_env_open_max(4 * MB, 256 * MB, &env, &error) < 0)
		i_fatal("lmdb_env_open(%s) failed: %s", test_dir, error);
	return env;
}

/* Closed for good (not kept idle): LMDB allows one handle on the files
   per process, and the raw access below needs it. */
static void test_env_close(struct lmdb_env **env)
{
	lmdb_env_unref(env);
	lmdb_env_deinit();
}

static struct lmdb_env_record test_env_record(struct lmdb_env *env)
{
	struct lmdb_env_record rec;
	const char *error;
	MDB_txn *txn;

	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("lmdb_env_read_begin() failed: %s", error);
	if (lmdb_env_record_get(env, txn, &rec, &error) != 0)
		i_fatal("lmdb_env_record_get() failed: %s", error);
	lmdb_env_read_end(env, &txn);
	return rec;
}

/* Raw LMDB, with the module's environment closed */

enum test_dbi {
	TEST_DBI_META,
	TEST_DBI_BODIES,
	TEST_DBI_CHUNKS,
	TEST_DBI_LINKS,
	TEST_DBI_MAILBOXES,
	TEST_DBI_GC,

	TEST_DBI_COUNT
};
static const char *const test_dbi_names[TEST_DBI_COUNT] = {
	"meta", "bodies", "chunks", "links", "mailboxes", "gc"
};

struct test_raw {
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi[TEST_DBI_COUNT];
};

/* map_size 0 keeps the environment's own */
static void test_raw_begin(struct test_raw *raw, bool write, size_t map_size)
{
	unsigned int i;
	int ret;

	if ((ret = mdb_env_create(&raw->env)) != 0 ||
	    (ret = mdb_env_set_maxdbs(raw->env, 8)) != 0 ||
	    (map_size != 0 &&
	     (ret = mdb_env_set_mapsize(raw->env, map_size)) != 0) ||
	    (ret = mdb_env_open(raw->env, test_dir, MDB_NOTLS, 0600)) != 0 ||
	    (ret = mdb_txn_begin(raw->env, NULL, write ? 0 : MDB_RDONLY,
				 &raw->txn)) != 0)
		i_fatal("raw LMDB open failed: %s", mdb_strerror(ret));
	for (i = 0; i < TEST_DBI_COUNT; i++) {
		if ((ret = mdb_dbi_open(raw->txn, test_dbi_names[i],
					write ? MDB_CREATE : 0,
					&raw->dbi[i])) != 0)
			i_fatal("mdb_dbi_open(%s) failed: %s",
				test_dbi_names[i], mdb_strerror(ret));
	}
}

static void test_raw_end(struct test_raw *raw)
{
	int ret;

	if ((ret = mdb_txn_commit(raw->txn)) != 0)
		i_fatal("mdb_txn_commit() failed: %s", mdb_strerror(ret));
	mdb_env_close(raw->env);
}

static void test_raw_put(struct test_raw *raw, enum test_dbi dbi,
			 const void *key_data, size_t key_size,
			 const void *data, size_t size)
{
	MDB_val key, val;
	int ret;

	key.mv_data = (void *)key_data;
	key.mv_size = key_size;
	val.mv_data = (void *)data;
	val.mv_size = size;
	if ((ret = mdb_put(raw->txn, raw->dbi[dbi], &key, &val, 0)) != 0)
		i_fatal("mdb_put(%s) failed: %s", test_dbi_names[dbi],
			mdb_strerror(ret));
}

/* The value under key, copied to the data stack; NULL if none */
static buffer_t *test_raw_get(MDB_txn *txn, MDB_dbi dbi,
			      const void *key_data, size_t key_size)
{
	MDB_val key, val;
	buffer_t *buf;

	key.mv_data = (void *)key_data;
	key.mv_size = key_size;
	if (mdb_get(txn, dbi, &key, &val) != 0)
		return NULL;
	buf = t_buffer_create(val.mv_size + 1);
	buffer_append(buf, val.mv_data, val.mv_size);
	return buf;
}

static size_t test_last_txnid(MDB_env *env)
{
	MDB_envinfo info;

	if (mdb_env_info(env, &info) != 0)
		i_fatal("mdb_env_info() failed");
	return info.me_last_txnid;
}

/* The schema-1 fixture */

#define TEST_BULK_LINKS 3000
#define TEST_BODIES 4

static const guid_128_t test_inbox = {
	0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
	0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11
};
static const guid_128_t test_archive = {
	0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
	0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22
};
static const guid_128_t test_bulk = {
	0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33,
	0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33
};
static const char *const test_kw_two[] = { "$Forwarded", "Work", NULL };

struct test_link {
	const unsigned char *mailbox;
	uint32_t uid;
	struct lmdb_link_record rec;
};

struct test_fixture {
	struct lmdb_env_record env;
	struct lmdb_body_record bodies[TEST_BODIES];
	unsigned char *data[TEST_BODIES];
	/* the links of INBOX and Archive; Bulk's follow a rule */
	struct test_link links[4];
	struct lmdb_mailbox_record mailboxes[3];
	const unsigned char *mailbox_guids[3];
	/* two malformed schema-1 links in INBOX, if damaged */
	bool damaged;
	buffer_t *many_kw_link, *short_link;
};

static struct test_fixture fx;

static void test_bulk_link(uint32_t uid, struct lmdb_link_record *rec_r)
{
	static const char *kw[2];

	i_zero(rec_r);
	rec_r->body_id = 2;
	rec_r->save_date = 990000 + uid;
	rec_r->flags = uid % 32;
	rec_r->pop3_order = uid;
	rec_r->modseq = uid * 3;
	rec_r->pop3_uidl = t_strdup_printf("bulk-%u", uid);
	kw[0] = t_strdup_printf("k%u", uid % 7);
	rec_r->keywords = kw;
	rec_r->keywords_count = uid % 2;
}

static void test_fixture_init(bool damaged)
{
	static const size_t sizes[TEST_BODIES] = { 300, 2 * CHUNK + 123, CHUNK, 0 };
	static const enum lmdb_body_state states[TEST_BODIES] = {
		LMDB_BODY_STATE_LINKED, LMDB_BODY_STATE_LINKED,
		LMDB_BODY_STATE_DEAD, LMDB_BODY_STATE_PENDING
	};
	static const char *const guids[TEST_BODIES] = {
		"0123456789abcdef0123456789abcdef", "guid-2",
		"<id 3@example.com>", ""
	};
	static const uint32_t refcounts[TEST_BODIES] = {
		3, 2 + TEST_BULK_LINKS, 0, 0
	};
	struct lmdb_link_record link;
	unsigned int i, len;
	size_t j;

	i_zero(&fx);
	fx.damaged = damaged;
	fx.env.schema_version = 1;
	fx.env.generation = 77;
	fx.env.next_body_id = TEST_BODIES + 1;
	fx.env.created = 900000;
	fx.env.links = 4 + 2 + TEST_BULK_LINKS;
	fx.env.link_vsize_bytes = 123456789;
	fx.env.bodies = TEST_BODIES;
	fx.env.last_purge = 950000;

	test_rand_seed(1234);
	for (i = 0; i < TEST_BODIES; i++) {
		struct lmdb_body_record *rec = &fx.bodies[i];

		fx.data[i] = i_malloc(sizes[i] + 1);
		for (j = 0; j < sizes[i]; j++)
			fx.data[i][j] = test_rand64() >> 56;
		rec->state = states[i];
		rec->refcount = refcounts[i];
		rec->physical_size = sizes[i];
		rec->message_size = sizes[i];
		rec->virtual_size = sizes[i] + 10 * i;
		rec->received_date = 800000 + i;
		rec->save_date = 810000 + i;
		rec->state_since = i == 2 ? 999000 : (i == 3 ? 999500 : 0);
		rec->chunk_size = CHUNK;
		rec->chunk_count = (sizes[i] + CHUNK - 1) / CHUNK;
		if (EVP_Digest(fx.data[i], sizes[i], rec->sha256, &len,
			       EVP_sha256(), NULL) != 1)
			i_fatal("EVP_Digest() failed");
		memcpy(rec->orig_mailbox_guid, test_inbox, GUID_128_SIZE);
		rec->guid = guids[i];
		fx.env.body_bytes += sizes[i];
	}

	fx.links[0].mailbox = test_inbox;
	fx.links[0].uid = 1;
	fx.links[0].rec.body_id = 1;
	fx.links[0].rec.save_date = 810000;
	fx.links[0].rec.flags = 0x08 | 0x02;
	fx.links[0].rec.pop3_order = 1;
	fx.links[0].rec.modseq = 5;
	fx.links[0].rec.pop3_uidl = "00000001abc";
	fx.links[0].rec.keywords = test_kw_two;
	fx.links[0].rec.keywords_count = 2;

	fx.links[1].mailbox = test_inbox;
	fx.links[1].uid = 2;
	fx.links[1].rec.body_id = 2;
	fx.links[1].rec.flags = 0x01;
	fx.links[1].rec.modseq = 6;
	fx.links[1].rec.pop3_uidl = "";

	fx.links[2].mailbox = test_inbox;
	fx.links[2].uid = 5;
	fx.links[2].rec.body_id = 1;
	fx.links[2].rec.save_date = -1;
	fx.links[2].rec.flags = LMDB_LINK_FLAGS_MASK;
	fx.links[2].rec.pop3_order = UINT32_MAX;
	fx.links[2].rec.modseq = UINT64_MAX;
	fx.links[2].rec.pop3_uidl = "~";

	fx.links[3].mailbox = test_archive;
	fx.links[3].uid = 1;
	fx.links[3].rec.body_id = 1;
	fx.links[3].rec.modseq = 1;
	fx.links[3].rec.pop3_uidl = "";

	/* more keywords than schema 1 allowed (it refused to read that
	   record too) */
	fx.many_kw_link = buffer_create_dynamic(default_pool, 64);
	link = fx.links[1].rec;
	link.keywords_count = 0;
	test_v1_link(fx.many_kw_link, &link);
	buffer_set_used_size(fx.many_kw_link, fx.many_kw_link->used - 2);
	test_v1_u16(fx.many_kw_link, LMDB_KEYWORDS_MAX + 1);
	for (i = 0; i <= LMDB_KEYWORDS_MAX; i++)
		buffer_append(fx.many_kw_link, "\x01k", 2);
	/* and one cut short */
	fx.short_link = buffer_create_dynamic(default_pool, 64);
	test_v1_link(fx.short_link, &fx.links[0].rec);
	buffer_set_used_size(fx.short_link, 20);

	for (i = 0; i < N_ELEMENTS(fx.mailboxes); i++) {
		struct lmdb_mailbox_record *rec = &fx.mailboxes[i];

		rec->state = LMDB_MAILBOX_STATE_ACTIVE;
		rec->uid_validity = 1700000000 + i;
		rec->highest_modseq = 50 + i;
		rec->created = 900000 + i;
		rec->hierarchy_sep = '/';
	}
	fx.mailbox_guids[0] = test_inbox;
	fx.mailboxes[0].name = "INBOX";
	fx.mailboxes[0].highest_uid = 5;
	fx.mailbox_guids[1] = test_archive;
	fx.mailboxes[1].name = "Archive";
	fx.mailboxes[1].highest_uid = 1;
	fx.mailbox_guids[2] = test_bulk;
	fx.mailboxes[2].name = "Bulk/\xc3\xa4";
	fx.mailboxes[2].highest_uid = TEST_BULK_LINKS;
	fx.mailboxes[2].state = LMDB_MAILBOX_STATE_DELETED;
}

static void test_fixture_deinit(void)
{
	unsigned int i;

	for (i = 0; i < TEST_BODIES; i++)
		i_free(fx.data[i]);
	buffer_free(&fx.many_kw_link);
	buffer_free(&fx.short_link);
}

static void test_fixture_gc_key(unsigned int body_idx,
				unsigned char key_r[LMDB_GC_KEY_SIZE])
{
	const struct lmdb_body_record *rec = &fx.bodies[body_idx];

	lmdb_gc_key_encode(rec->state == LMDB_BODY_STATE_DEAD ?
			   LMDB_GC_KIND_DEAD : LMDB_GC_KIND_PENDING,
			   rec->state_since, body_idx + 1, key_r);
}

static void test_v1_put_link(struct test_raw *raw, const unsigned char *mailbox,
			     uint32_t uid, const buffer_t *value)
{
	unsigned char key[LMDB_LINK_KEY_SIZE];

	lmdb_link_key_encode(mailbox, uid, key);
	test_raw_put(raw, TEST_DBI_LINKS, key, sizeof(key), value->data,
		     value->used);
}

/* Write the fixture as the schema-1 module left it, in a map of
   map_size bytes. */
static void test_fixture_write(size_t map_size)
{
	unsigned char key[LMDB_GC_KEY_SIZE + LMDB_LINK_KEY_SIZE];
	struct lmdb_link_record link;
	struct test_raw raw;
	unsigned int i;
	uint32_t idx, uid;

	test_raw_begin(&raw, TRUE, map_size);
	T_BEGIN {
		buffer_t *buf = t_buffer_create(256);

		test_v1_env(buf, &fx.env);
		test_raw_put(&raw, TEST_DBI_META, LMDB_ENV_RECORD_KEY,
			     LMDB_ENV_RECORD_KEY_SIZE, buf->data, buf->used);
		for (i = 0; i < TEST_BODIES; i++) {
			const struct lmdb_body_record *rec = &fx.bodies[i];

			buffer_set_used_size(buf, 0);
			test_v1_body(buf, rec);
			lmdb_body_id_encode(i + 1, key);
			test_raw_put(&raw, TEST_DBI_BODIES, key,
				     LMDB_BODY_ID_SIZE, buf->data, buf->used);
			for (idx = 0; idx < rec->chunk_count; idx++) {
				size_t off = (size_t)idx * CHUNK;

				buffer_set_used_size(buf, 0);
				test_v1_chunk(buf, fx.data[i] + off,
					I_MIN(CHUNK, rec->physical_size - off));
				lmdb_chunk_key_encode(i + 1, idx, key);
				test_raw_put(&raw, TEST_DBI_CHUNKS, key,
					     LMDB_CHUNK_KEY_SIZE, buf->data,
					     buf->used);
			}
			if (rec->state != LMDB_BODY_STATE_LINKED) {
				/* schema 1's gc entries had no value */
				test_fixture_gc_key(i, key);
				test_raw_put(&raw, TEST_DBI_GC, key,
					     LMDB_GC_KEY_SIZE, "", 0);
			}
		}
		for (i = 0; i < N_ELEMENTS(fx.links); i++) {
			buffer_set_used_size(buf, 0);
			test_v1_link(buf, &fx.links[i].rec);
			test_v1_put_link(&raw, fx.links[i].mailbox,
					 fx.links[i].uid, buf);
		}
		if (fx.damaged) {
			test_v1_put_link(&raw, test_inbox, 3, fx.many_kw_link);
			test_v1_put_link(&raw, test_inbox, 4, fx.short_link);
		}
		for (uid = 1; uid <= TEST_BULK_LINKS; uid++) {
			buffer_set_used_size(buf, 0);
			test_bulk_link(uid, &link);
			test_v1_link(buf, &link);
			test_v1_put_link(&raw, test_bulk, uid, buf);
		}
		for (i = 0; i < N_ELEMENTS(fx.mailboxes); i++) {
			buffer_set_used_size(buf, 0);
			test_v1_mailbox(buf, &fx.mailboxes[i]);
			test_raw_put(&raw, TEST_DBI_MAILBOXES,
				     fx.mailbox_guids[i], GUID_128_SIZE,
				     buf->data, buf->used);
		}
	} T_END;
	test_raw_end(&raw);
}

/* Comparisons */

static bool test_env_equals(const struct lmdb_env_record *a,
			    const struct lmdb_env_record *b)
{
	return a->schema_version == b->schema_version &&
		a->generation == b->generation &&
		a->next_body_id == b->next_body_id &&
		a->created == b->created && a->links == b->links &&
		a->link_vsize_bytes == b->link_vsize_bytes &&
		a->bodies == b->bodies && a->body_bytes == b->body_bytes &&
		a->last_purge == b->last_purge;
}

static bool test_body_equals(const struct lmdb_body_record *a,
			     const struct lmdb_body_record *b)
{
	return a->state == b->state && a->refcount == b->refcount &&
		a->physical_size == b->physical_size &&
		a->message_size == b->message_size &&
		a->virtual_size == b->virtual_size &&
		a->received_date == b->received_date &&
		a->save_date == b->save_date &&
		a->state_since == b->state_since &&
		a->chunk_count == b->chunk_count &&
		a->chunk_size == b->chunk_size &&
		memcmp(a->sha256, b->sha256, sizeof(a->sha256)) == 0 &&
		guid_128_equals(a->orig_mailbox_guid, b->orig_mailbox_guid) &&
		strcmp(a->guid, b->guid) == 0;
}

static bool test_link_equals(const struct lmdb_link_record *a,
			     const struct lmdb_link_record *b)
{
	unsigned int i;

	if (a->body_id != b->body_id || a->save_date != b->save_date ||
	    a->flags != b->flags || a->pop3_order != b->pop3_order ||
	    a->modseq != b->modseq ||
	    strcmp(a->pop3_uidl, b->pop3_uidl) != 0 ||
	    a->keywords_count != b->keywords_count)
		return FALSE;
	for (i = 0; i < a->keywords_count; i++) {
		if (strcmp(a->keywords[i], b->keywords[i]) != 0)
			return FALSE;
	}
	return TRUE;
}

static bool test_mailbox_equals(const struct lmdb_mailbox_record *a,
				const struct lmdb_mailbox_record *b)
{
	return a->state == b->state && a->uid_validity == b->uid_validity &&
		a->highest_uid == b->highest_uid &&
		a->highest_modseq == b->highest_modseq &&
		a->created == b->created &&
		a->hierarchy_sep == b->hierarchy_sep &&
		strcmp(a->name, b->name) == 0;
}

/* Every value of a DBI starts with version (the chunks': all 1, never
   rewritten), but for the values of the keys in skip. */
static unsigned int test_dbi_versions(MDB_txn *txn, MDB_dbi dbi,
				      uint8_t version, const buffer_t *skip1,
				      const buffer_t *skip2)
{
	MDB_cursor *cursor;
	MDB_val key, val;
	unsigned int wrong = 0;

	if (mdb_cursor_open(txn, dbi, &cursor) != 0)
		i_fatal("mdb_cursor_open() failed");
	while (mdb_cursor_get(cursor, &key, &val, MDB_NEXT) == 0) {
		if ((skip1 != NULL && key.mv_size == skip1->used &&
		     memcmp(key.mv_data, skip1->data, key.mv_size) == 0) ||
		    (skip2 != NULL && key.mv_size == skip2->used &&
		     memcmp(key.mv_data, skip2->data, key.mv_size) == 0))
			continue;
		if (val.mv_size == 0 ||
		    ((const uint8_t *)val.mv_data)[0] != version)
			wrong++;
	}
	mdb_cursor_close(cursor);
	return wrong;
}

static void test_fixture_check_bodies(struct lmdb_env *env, MDB_txn *txn)
{
	struct lmdb_body_record rec;
	unsigned char key[LMDB_GC_KEY_SIZE];
	const char *error;
	unsigned int i;
	buffer_t *value, *chunk;

	for (i = 0; i < TEST_BODIES; i++) {
		test_assert_idx(lmdb_body_lookup(env, txn, i + 1,
						 pool_datastack_create(), &rec,
						 &error) == 1, i);
		test_assert_idx(test_body_equals(&rec, &fx.bodies[i]), i);
		/* the chunks are schema 1's, untouched, and read */
		test_assert_idx(lmdb_body_verify(env, i + 1, &rec, TRUE,
						 &error) == 1, i);
		if (rec.chunk_count > 0) {
			chunk = t_buffer_create(CHUNK);
			test_assert_idx(lmdb_body_read_chunk(env, i + 1, 0,
							     chunk, &error) == 1, i);
			test_assert_idx(memcmp(chunk->data, fx.data[i],
					I_MIN(CHUNK, rec.physical_size)) == 0, i);
			lmdb_chunk_key_encode(i + 1, 0, key);
			value = test_raw_get(txn, env->dbi_chunks, key,
					     LMDB_CHUNK_KEY_SIZE);
			buffer_set_used_size(chunk, 0);
			test_v1_chunk(chunk, fx.data[i],
				      I_MIN(CHUNK, rec.physical_size));
			test_assert_idx(value != NULL && buffer_cmp(value, chunk), i);
		}
		if (rec.state == LMDB_BODY_STATE_LINKED)
			continue;
		test_fixture_gc_key(i, key);
		value = test_raw_get(txn, env->dbi_gc, key, LMDB_GC_KEY_SIZE);
		test_assert_idx(value != NULL &&
				lmdb_gc_value_check(key, value->data,
						    value->used, &error), i);
	}
}

static void test_fixture_check_links(struct lmdb_env *env, MDB_txn *txn)
{
	struct lmdb_link_record rec, expected;
	struct lmdb_link_iter *iter;
	unsigned char key[LMDB_LINK_KEY_SIZE];
	string_t *str = t_str_new(64);
	const char *error;
	buffer_t *value;
	unsigned int i, count = 0, wrong = 0;
	uint32_t uid;
	int ret;

	for (i = 0; i < N_ELEMENTS(fx.links); i++) {
		test_assert_idx(lmdb_link_get(env, txn, fx.links[i].mailbox,
					      fx.links[i].uid,
					      pool_datastack_create(), &rec,
					      &error) == 1, i);
		test_assert_idx(test_link_equals(&rec, &fx.links[i].rec), i);
	}
	/* the malformed ones are as they were, and reported */
	for (uid = 3; uid <= 4 && fx.damaged; uid++) {
		test_assert_idx(lmdb_link_get(env, txn, test_inbox, uid,
					      pool_datastack_create(), &rec,
					      &error) < 0, uid);
		test_assert_idx(test_str_contains(error, "damaged"), uid);
		lmdb_link_key_encode(test_inbox, uid, key);
		value = test_raw_get(txn, env->dbi_links, key, sizeof(key));
		test_assert_idx(value != NULL &&
				buffer_cmp(value, uid == 3 ? fx.many_kw_link :
					   fx.short_link), uid);
	}
	iter = lmdb_link_iter_init(env, txn, test_inbox, 0);
	while ((ret = lmdb_link_iter_next(iter, pool_datastack_create(),
					  &uid, &rec)) > 0)
		str_printfa(str, "%s%u", ret == 2 ? "!" : "", uid);
	test_assert(strcmp(str_c(str), fx.damaged ? "12!3!45" : "125") == 0);
	test_assert(lmdb_link_iter_get_damaged(iter) == (fx.damaged ? 2 : 0));
	test_assert(lmdb_link_iter_deinit(&iter, &error) == 0 && ret == 0);

	/* enough links that converting them split pages: none skipped,
	   none converted twice */
	iter = lmdb_link_iter_init(env, txn, test_bulk, 0);
	while ((ret = lmdb_link_iter_next(iter, pool_datastack_create(),
					  &uid, &rec)) > 0) T_BEGIN {
		count++;
		test_bulk_link(uid, &expected);
		if (ret != 1 || uid != count || !test_link_equals(&rec, &expected))
			wrong++;
	} T_END;
	test_assert(lmdb_link_iter_deinit(&iter, &error) == 0 && ret == 0);
	test_assert(count == TEST_BULK_LINKS && wrong == 0);
}

/* Everything the fixture holds reads back through the module as
   version 2 with the fields it was written with (the env record's
   unless it had to be rebuilt). */
static void test_fixture_check(struct lmdb_env *env, bool env_rebuilt)
{
	struct lmdb_env_record env_rec, expected = fx.env;
	struct lmdb_mailbox_record mailbox;
	const char *error;
	unsigned int i;
	MDB_txn *txn;

	env_rec = test_env_record(env);
	expected.schema_version = LMDB_SCHEMA_VERSION;
	if (!env_rebuilt) {
		test_assert(test_env_equals(&env_rec, &expected));
		test_assert(env->generation == fx.env.generation);
	} else {
		test_assert(env_rec.schema_version == LMDB_SCHEMA_VERSION);
		test_assert(env_rec.next_body_id == fx.env.next_body_id);
		test_assert(env_rec.bodies == fx.env.bodies);
		test_assert(env_rec.body_bytes == fx.env.body_bytes);
	}

	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("%s", error);
	T_BEGIN {
		unsigned char key[LMDB_LINK_KEY_SIZE];
		buffer_t *skip1 = t_buffer_create(LMDB_LINK_KEY_SIZE);
		buffer_t *skip2 = t_buffer_create(LMDB_LINK_KEY_SIZE);

		test_fixture_check_bodies(env, txn);
		test_fixture_check_links(env, txn);
		for (i = 0; i < N_ELEMENTS(fx.mailboxes); i++) {
			test_assert_idx(lmdb_mailbox_get(env, txn,
					fx.mailbox_guids[i],
					pool_datastack_create(), &mailbox,
					&error) == 1, i);
			test_assert_idx(test_mailbox_equals(&mailbox,
						&fx.mailboxes[i]), i);
		}
		lmdb_link_key_encode(test_inbox, 3, key);
		buffer_append(skip1, key, sizeof(key));
		lmdb_link_key_encode(test_inbox, 4, key);
		buffer_append(skip2, key, sizeof(key));
		test_assert(test_dbi_versions(txn, env->dbi_bodies, 2,
					      NULL, NULL) == 0);
		test_assert(test_dbi_versions(txn, env->dbi_links, 2,
					      skip1, skip2) == 0);
		test_assert(test_dbi_versions(txn, env->dbi_mailboxes, 2,
					      NULL, NULL) == 0);
		test_assert(test_dbi_versions(txn, env->dbi_gc, 2,
					      NULL, NULL) == 0);
		test_assert(test_dbi_versions(txn, env->dbi_chunks, 1,
					      NULL, NULL) == 0);
	} T_END;
	lmdb_env_read_end(env, &txn);
}

/* Every key and value of every DBI, in order */
static buffer_t *test_dump(struct lmdb_env *env)
{
	const MDB_dbi dbis[] = {
		env->dbi_meta, env->dbi_bodies, env->dbi_chunks,
		env->dbi_links, env->dbi_mailboxes, env->dbi_gc
	};
	buffer_t *dump = t_buffer_create(1024 * 512);
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	MDB_txn *txn;
	unsigned int i;

	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("%s", error);
	for (i = 0; i < N_ELEMENTS(dbis); i++) {
		if (mdb_cursor_open(txn, dbis[i], &cursor) != 0)
			i_fatal("mdb_cursor_open() failed");
		while (mdb_cursor_get(cursor, &key, &val, MDB_NEXT) == 0) {
			buffer_append(dump, &key.mv_size, sizeof(key.mv_size));
			buffer_append(dump, key.mv_data, key.mv_size);
			buffer_append(dump, &val.mv_size, sizeof(val.mv_size));
			buffer_append(dump, val.mv_data, val.mv_size);
		}
		mdb_cursor_close(cursor);
		buffer_append_c(dump, '|');
	}
	lmdb_env_read_end(env, &txn);
	return dump;
}

/* Tests */

static void test_schema_upgrade_v1(void)
{
	struct lmdb_env *env;
	size_t txnid;

	test_begin("schema 1 is upgraded in place");
	test_dir_init();
	test_fixture_init(TRUE);
	test_fixture_write(64 * MB);
	test_expect_error_string_n_times("left a damaged links record", 2);
	env = test_env_open();
	test_expect_no_more_errors();
	test_fixture_check(env, FALSE);

	/* opened again, nothing changes: not a byte, not a commit */
	T_BEGIN {
		buffer_t *before = test_dump(env);

		txnid = test_last_txnid(env->env);
		test_env_close(&env);
		env = test_env_open();
		test_assert(test_last_txnid(env->env) == txnid);
		test_assert(buffer_cmp(before, test_dump(env)));
	} T_END;
	test_fixture_check(env, FALSE);
	test_env_close(&env);
	test_fixture_deinit();
	test_dir_deinit();
	test_end();
}

/* Bodies written through the module, and two links */

static const struct lmdb_body_info test_info = {
	.guid = "test-guid",
	.received_date = 1600000000,
	.save_date = 1600000100,
};

static uint64_t test_body_write(struct lmdb_env *env, const void *data,
				size_t size)
{
	struct lmdb_body_writer *writer;
	uint64_t body_id, psize, vsize;
	const char *error;

	writer = lmdb_body_writer_init(env);
	if (lmdb_body_writer_append(writer, data, size, &error) < 0 ||
	    lmdb_body_writer_finish(writer, &test_info, &body_id, &psize,
				    &vsize, &error) < 0)
		i_fatal("writing a body failed: %s", error);
	lmdb_body_writer_free(&writer);
	return body_id;
}

static int test_links_put_txn(MDB_txn *txn, void *context,
			      const char **error_r)
{
	struct lmdb_env *env = context;
	struct lmdb_link_record rec;
	uint32_t uid;
	int ret;

	i_zero(&rec);
	rec.pop3_uidl = "";
	for (uid = 1; uid <= 2; uid++) {
		rec.body_id = uid;
		if ((ret = lmdb_link_add(env, txn, test_inbox, uid, &rec,
					 error_r)) != 0 ||
		    (ret = lmdb_link_count(env, txn, 1, 100, error_r)) != 0)
			return ret;
	}
	return 0;
}

/* Damage the env record the way test_damage says, in raw LMDB. */
enum test_damage {
	TEST_DAMAGE_FLIP,
	TEST_DAMAGE_DELETE,
	TEST_DAMAGE_SCHEMA_3,
};

static void test_env_record_damage(struct test_raw *raw,
				   enum test_damage damage)
{
	struct lmdb_env_record rec;
	MDB_val key;
	const char *error;
	buffer_t *value;

	value = test_raw_get(raw->txn, raw->dbi[TEST_DBI_META],
			     LMDB_ENV_RECORD_KEY, LMDB_ENV_RECORD_KEY_SIZE);
	i_assert(value != NULL);
	switch (damage) {
	case TEST_DAMAGE_FLIP:
		/* a bit of created: only the checksum can tell */
		*(unsigned char *)buffer_get_space_unsafe(value, 30, 1) ^= 0x10;
		break;
	case TEST_DAMAGE_DELETE:
		key.mv_data = (void *)LMDB_ENV_RECORD_KEY;
		key.mv_size = LMDB_ENV_RECORD_KEY_SIZE;
		if (mdb_del(raw->txn, raw->dbi[TEST_DBI_META], &key, NULL) != 0)
			i_fatal("mdb_del(env) failed");
		return;
	case TEST_DAMAGE_SCHEMA_3:
		if (!lmdb_env_record_decode(value->data, value->used, &rec,
					    &error))
			i_fatal("%s", error);
		rec.schema_version = 3;
		buffer_set_used_size(value, 0);
		if (!lmdb_env_record_encode(value, &rec, &error))
			i_fatal("%s", error);
		break;
	}
	test_raw_put(raw, TEST_DBI_META, LMDB_ENV_RECORD_KEY,
		     LMDB_ENV_RECORD_KEY_SIZE, value->data, value->used);
}

static void test_raw_put_body(struct test_raw *raw, uint64_t body_id,
			      const struct lmdb_body_record *rec)
{
	unsigned char key[LMDB_BODY_ID_SIZE];
	buffer_t *buf = t_buffer_create(128);
	const char *error;

	if (!lmdb_body_record_encode(buf, body_id, rec, &error))
		i_fatal("%s", error);
	lmdb_body_id_encode(body_id, key);
	test_raw_put(raw, TEST_DBI_BODIES, key, sizeof(key), buf->data,
		     buf->used);
}

static void test_schema_env_record_rebuilt(void)
{
	struct lmdb_env_record before, after;
	struct lmdb_body_record body;
	struct lmdb_env *env;
	struct test_raw raw;
	unsigned char key[LMDB_CHUNK_KEY_SIZE], hdr[LMDB_CHUNK_HDR_SIZE];
	unsigned char *big;
	const char *error;

	test_begin("a damaged or missing env record is rebuilt");
	test_dir_init();
	env = test_env_open();
	/* a new environment */
	after = test_env_record(env);
	test_assert(after.schema_version == LMDB_SCHEMA_VERSION &&
		    after.generation == 1 && after.next_body_id == 1 &&
		    after.created == (uint64_t)ioloop_time &&
		    after.links == 0 && after.bodies == 0);
	big = i_malloc(2 * CHUNK + 5);
	memset(big, 'x', 2 * CHUNK + 5);
	test_assert(test_body_write(env, "one", 3) == 1);
	test_assert(test_body_write(env, big, 2 * CHUNK + 5) == 2);
	test_assert(test_body_write(env, "", 0) == 3);
	i_free(big);
	if (lmdb_env_write(env, test_links_put_txn, env, TRUE, &error) != 0)
		i_fatal("%s", error);
	before = test_env_record(env);
	test_assert(before.bodies == 3 && before.links == 2 &&
		    before.body_bytes == 3 + 2 * CHUNK + 5 &&
		    before.next_body_id == 4);
	test_env_close(&env);

	/* a writer that crashed after its first chunks left body 9's
	   chunks without a record: the rebuilt sequence must pass it */
	test_raw_begin(&raw, TRUE, 0);
	lmdb_chunk_key_encode(9, 0, key);
	lmdb_chunk_header_encode(hdr, 9, 0, "data", 4);
	T_BEGIN {
		buffer_t *value = t_buffer_create(16);

		buffer_append(value, hdr, sizeof(hdr));
		buffer_append(value, "data", 4);
		test_raw_put(&raw, TEST_DBI_CHUNKS, key, sizeof(key),
			     value->data, value->used);
		test_env_record_damage(&raw, TEST_DAMAGE_FLIP);
	} T_END;
	test_raw_end(&raw);

	test_expect_error_string("env record is damaged");
	env = test_env_open();
	test_expect_no_more_errors();
	after = test_env_record(env);
	test_assert(after.schema_version == LMDB_SCHEMA_VERSION);
	test_assert(after.next_body_id == 10);
	test_assert(after.bodies == before.bodies);
	test_assert(after.body_bytes == before.body_bytes);
	test_assert(after.links == before.links);
	/* processes that had the old one open reopen */
	test_assert(after.generation != before.generation &&
		    env->generation == after.generation);
	/* and new bodies go above */
	test_assert(test_body_write(env, "ten", 3) == 10);
	before = test_env_record(env);
	test_env_close(&env);

	/* a missing env record; the highest body id is a damaged
	   record's: it is not counted, but not given out again either */
	test_raw_begin(&raw, TRUE, 0);
	T_BEGIN {
		i_zero(&body);
		body.state = LMDB_BODY_STATE_LINKED;
		body.chunk_size = CHUNK;
		body.guid = "";
		test_raw_put_body(&raw, 12, &body);
		/* a crashed writer's interim record: never counted */
		body.state = LMDB_BODY_STATE_PENDING;
		body.chunk_size = 0;
		test_raw_put_body(&raw, 15, &body);
		lmdb_body_id_encode(20, key);
		test_raw_put(&raw, TEST_DBI_BODIES, key, LMDB_BODY_ID_SIZE,
			     "\x02garbage", 8);
		test_env_record_damage(&raw, TEST_DAMAGE_DELETE);
	} T_END;
	test_raw_end(&raw);
	test_expect_error_string("env record is missing");
	env = test_env_open();
	test_expect_no_more_errors();
	after = test_env_record(env);
	test_assert(after.schema_version == LMDB_SCHEMA_VERSION);
	test_assert(after.next_body_id == 21);
	test_assert(after.bodies == before.bodies + 1);
	test_assert(after.body_bytes == before.body_bytes);
	test_assert(after.links == 2);
	test_env_close(&env);
	test_dir_deinit();
	test_end();
}

static void test_schema_newer_refused(void)
{
	struct lmdb_env *env;
	struct test_raw raw;
	const char *error = NULL;
	buffer_t *value;
	size_t txnid;

	test_begin("a newer schema is refused and left alone");
	test_dir_init();
	env = test_env_open();
	test_assert(test_body_write(env, "one", 3) == 1);
	test_env_close(&env);
	test_raw_begin(&raw, TRUE, 0);
	test_env_record_damage(&raw, TEST_DAMAGE_SCHEMA_3);
	test_raw_end(&raw);

	T_BEGIN {
		test_raw_begin(&raw, FALSE, 0);
		txnid = test_last_txnid(raw.env);
		value = test_raw_get(raw.txn, raw.dbi[TEST_DBI_META],
				     LMDB_ENV_RECORD_KEY,
				     LMDB_ENV_RECORD_KEY_SIZE);
		test_raw_end(&raw);

		test_assert(test_env_open_max(4 * MB, 256 * MB, &env,
					      &error) < 0);
		test_assert(test_str_contains(error, "schema version 3"));
		test_assert(test_str_contains(error, "upgrade the module"));
		lmdb_env_deinit();

		/* not a byte written */
		test_raw_begin(&raw, FALSE, 0);
		test_assert(test_last_txnid(raw.env) == txnid);
		test_assert(buffer_cmp(value, test_raw_get(raw.txn,
				raw.dbi[TEST_DBI_META], LMDB_ENV_RECORD_KEY,
				LMDB_ENV_RECORD_KEY_SIZE)));
		test_raw_end(&raw);
	} T_END;
	test_dir_deinit();
	test_end();
}

/* Reported bugs */

static void test_error_ignore(const struct failure_context *ctx ATTR_UNUSED,
			      const char *format ATTR_UNUSED,
			      va_list args ATTR_UNUSED)
{
}

/* Open while ignoring what is logged: not under test in these. */
static struct lmdb_env *test_env_open_quiet(void)
{
	failure_callback_t *fatal_handler, *error_handler, *info_handler;
	failure_callback_t *debug_handler;
	struct lmdb_env *env;

	i_get_failure_handlers(&fatal_handler, &error_handler, &info_handler,
			       &debug_handler);
	i_set_error_handler(test_error_ignore);
	env = test_env_open();
	i_set_error_handler(error_handler);
	return env;
}

/* The upgrade rewrites every record in one transaction: in a map with
   no room left it must grow the map as any write does (lmdb_env_write()
   grows it on MDB_MAP_FULL), not fail the open. */
static void test_schema_upgrade_map_full_bug(void)
{
	struct lmdb_env *env;
	const char *error = NULL;

	test_begin("schema upgrade in a full map grows the map");
	test_dir_init();
	test_fixture_init(FALSE);
	test_fixture_write(64 * MB);
	/* LMDB makes the map as big as the data it holds, no more */
	if (test_env_open_max(64 * 1024, 256 * MB, &env, &error) < 0) {
		test_assert(FALSE);
		i_error("lmdb_env_open() failed: %s", error);
	} else {
		test_fixture_check(env, FALSE);
		test_env_close(&env);
	}
	test_fixture_deinit();
	test_dir_deinit();
	test_end();
}

/* A schema-1 environment whose env record is gone or unreadable is
   still a schema-1 environment: its records must be upgraded along with
   the rebuilt env record, or they all read as damaged from then on
   (the rebuilt record says schema 2, so the upgrade never runs). */
static void test_schema_v1_env_record_damaged_bug(void)
{
	struct lmdb_env *env;
	struct test_raw raw;
	unsigned int i;
	buffer_t *value;

	test_begin("schema 1 with a damaged env record is upgraded");
	for (i = 0; i < 2; i++) {
		test_dir_init();
		test_fixture_init(FALSE);
		test_fixture_write(64 * MB);
		test_raw_begin(&raw, TRUE, 0);
		T_BEGIN {
			/* missing, or cut short */
			if (i == 0)
				test_env_record_damage(&raw, TEST_DAMAGE_DELETE);
			else {
				value = test_raw_get(raw.txn,
					raw.dbi[TEST_DBI_META],
					LMDB_ENV_RECORD_KEY,
					LMDB_ENV_RECORD_KEY_SIZE);
				test_raw_put(&raw, TEST_DBI_META,
					     LMDB_ENV_RECORD_KEY,
					     LMDB_ENV_RECORD_KEY_SIZE,
					     value->data, value->used - 1);
			}
		} T_END;
		test_raw_end(&raw);
		env = test_env_open_quiet();
		test_fixture_check(env, TRUE);
		test_env_close(&env);
		test_fixture_deinit();
		test_dir_deinit();
	}
	test_end();
}

/* Schema 1 stored the POP3 UIDL a save was given (dsync, a migration)
   without checking it. A link whose only fault under the new rules is
   such a UIDL is a message the user has: the upgrade must keep it (with
   the UIDL replaced, e.g. by lmdb_value_digest(), or dropped), not leave
   the whole link unreadable. */
static void test_schema_upgrade_keeps_invalid_uidl_bug(void)
{
	static const char *const uidls[] = { "two words", "tab\there" };
	struct lmdb_link_record link, expected;
	struct lmdb_env *env;
	struct test_raw raw;
	const char *error;
	MDB_txn *txn;
	unsigned int i;

	test_begin("schema upgrade keeps a link with a UIDL it now refuses");
	test_dir_init();
	test_fixture_init(FALSE);
	test_fixture_write(64 * MB);
	test_raw_begin(&raw, TRUE, 0);
	T_BEGIN {
		buffer_t *buf = t_buffer_create(128);

		for (i = 0; i < N_ELEMENTS(uidls); i++) {
			expected = fx.links[0].rec;
			expected.pop3_uidl = uidls[i];
			buffer_set_used_size(buf, 0);
			test_v1_link(buf, &expected);
			test_v1_put_link(&raw, test_archive, 10 + i, buf);
		}
	} T_END;
	test_raw_end(&raw);
	env = test_env_open_quiet();
	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("%s", error);
	for (i = 0; i < N_ELEMENTS(uidls); i++) T_BEGIN {
		test_assert_idx(lmdb_link_get(env, txn, test_archive, 10 + i,
					      pool_datastack_create(), &link,
					      &error) == 1, i);
		expected = fx.links[0].rec;
		expected.pop3_uidl = link.pop3_uidl;
		test_assert_idx(test_link_equals(&link, &expected), i);
		test_assert_idx(link.pop3_uidl[0] == '\0' ||
				strcmp(link.pop3_uidl,
				       lmdb_value_digest(uidls[i])) == 0, i);
	} T_END;
	lmdb_env_read_end(env, &txn);
	test_env_close(&env);
	test_fixture_deinit();
	test_dir_deinit();
	test_end();
}

int main(void)
{
	static void (*const tests[])(void) = {
		test_schema_upgrade_v1,
		test_schema_env_record_rebuilt,
		test_schema_newer_refused,
		test_schema_upgrade_map_full_bug,
		test_schema_v1_env_record_damaged_bug,
		test_schema_upgrade_keeps_invalid_uidl_bug,
		NULL
	};
	return test_run(tests);
}
