/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "hash.h"
#include "str.h"
#include "hex-binary.h"
#include "sort.h"
#include "ioloop.h"
#include "unlink-directory.h"
#include "test-common.h"
#include "dlmdb-compat.h"
#include "test-rand.h"
#include "test-lmdb-v1.h"
#include "lmdb-records.h"
#include "lmdb-env.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-uidls.h"
#include "lmdb-pagescan.h"
#include "lmdb-salvage.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <openssl/evp.h>

/* lmdb_salvage_build() on an environment made with the project's own
   API, then damaged where a test chooses (pages found with lmdb-pagescan
   on the undamaged file): every record on an undamaged page must come
   through byte-identical (decoded equal), what is lost must be reported,
   and the new environment must open and hold the invariants doveadm
   lmdb verify checks (reference counts = links, counters, gc entries,
   the UIDL index, whole bodies). */

#define PAGE_SIZE_EXPECTED 4096
#define TEST_BODIES 410
/* bodies beyond this are written and never linked: PENDING */
#define TEST_LINKED_BODIES 400
#define TEST_NOW 1700000000

enum test_box { BOX_INBOX, BOX_ARCHIVE, BOX_BULK, BOX_COUNT };
static const char *const box_names[BOX_COUNT] = {
	"INBOX", "Archive", "Bulk"
};
static const guid_128_t box_guids[BOX_COUNT] = {
	{ 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
	{ 0x22, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
	{ 0x33, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
};
static const char *const test_keywords[] = { "$Forwarded", "Work", NULL };

struct test_link {
	enum test_box box;
	uint32_t uid;
	unsigned int body;
	struct lmdb_link_record rec;
};

struct test_body {
	uint64_t id;
	unsigned char *data;
	size_t size;
	/* its record as the fixture has it */
	struct lmdb_body_record rec;
	char *guid;
};

/* the model of what the fixture holds */
static struct test_body bodies[TEST_BODIES];
/* the links' UIDLs, as allocated */
static char *uidl_strings[1300];
static ARRAY(struct test_link) links;
static char fixture_dir[64], work_dir[64], dest_dir[128], data_path[128];
static unsigned char *fixture_data;
static size_t fixture_size;

/* where each record of the undamaged file lives */
struct test_record_pages {
	uint64_t pgno, overflow_pgno;
	unsigned int overflow_pages;
};
static HASH_TABLE(char *, struct test_record_pages *) record_pages;
static pool_t record_pool;

static struct lmdb_env_settings test_env_set(void)
{
	struct lmdb_env_settings set;

	i_zero(&set);
	set.map_size_initial = 16 * 1024 * 1024;
	set.map_size_max = 256 * 1024 * 1024;
	set.map_reserve = 1024 * 1024;
	set.max_readers = 16;
	set.no_sync = TRUE;
	set.mode = 0600;
	return set;
}

static struct lmdb_env *test_env_open(const char *dir)
{
	struct lmdb_env_settings set = test_env_set();
	struct lmdb_env *env;
	const char *error;

	if (lmdb_env_open(dir, &set, &env, &error) < 0)
		i_fatal("lmdb_env_open(%s) failed: %s", dir, error);
	return env;
}

static void test_env_close(struct lmdb_env **env)
{
	lmdb_env_unref(env);
	lmdb_env_deinit();
}

static const char *test_message_id(unsigned int body)
{
	return t_strdup_printf("<m-%u@salvage.test>", body);
}

/* --- the fixture --- */

static void test_body_data(unsigned int i, struct test_body *body)
{
	static const size_t sizes[] = { 200, 3000, 5000, 12000, 40000 };
	string_t *str = t_str_new(256);
	size_t j;

	str_printfa(str, "From: sender%u@example.com\r\nMessage-ID: %s\r\n"
		    "Subject: body %u\r\n\r\n", i, test_message_id(i), i);
	body->size = sizes[i % N_ELEMENTS(sizes)] + i;
	body->data = i_malloc(body->size);
	memcpy(body->data, str_data(str), str_len(str));
	test_rand_seed(i + 1);
	for (j = str_len(str); j < body->size; j++)
		body->data[j] = j % 60 == 59 ? '\n' : 'a' + test_rand64() % 26;
}

static uint64_t test_body_write(struct lmdb_env *env, struct test_body *body)
{
	static const struct lmdb_body_info info = {
		.guid = "salvage-guid",
		.received_date = 1600000000,
		.save_date = 1600000100,
	};
	struct lmdb_body_writer *writer;
	uint64_t body_id, psize, vsize;
	const char *error;

	writer = lmdb_body_writer_init(env);
	if (lmdb_body_writer_append(writer, body->data, body->size,
				    &error) < 0 ||
	    lmdb_body_writer_finish(writer, &info, &body_id, &psize, &vsize,
				    &error) < 0)
		i_fatal("writing a body failed: %s", error);
	lmdb_body_writer_free(&writer);
	return body_id;
}

static void test_add_link(enum test_box box, uint32_t uid, unsigned int body)
{
	struct test_link *link = array_append_space(&links);

	link->box = box;
	link->uid = uid;
	link->body = body;
	link->rec.body_id = bodies[body].id;
	/* what salvage gives a link it makes again */
	link->rec.save_date = 1600000100;
	link->rec.flags = uid % 32 & LMDB_LINK_FLAGS_MASK;
	if (box == BOX_BULK)
		link->rec.pop3_uidl = "";
	else {
		i_assert(array_count(&links) <= N_ELEMENTS(uidl_strings));
		uidl_strings[array_count(&links) - 1] =
			i_strdup_printf("%08x%08x", uid, 1000 + box);
		link->rec.pop3_uidl = uidl_strings[array_count(&links) - 1];
	}
	if (uid % 7 == 0) {
		link->rec.keywords = test_keywords;
		link->rec.keywords_count = 2;
	}
}

struct test_link_ctx {
	struct lmdb_env *env;
	unsigned int first, last;
};

static int test_links_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct test_link_ctx *ctx = context;
	const struct test_link *link;
	uint64_t vsize;
	unsigned int i;
	int ret;

	for (i = ctx->first; i < ctx->last; i++) {
		link = array_idx(&links, i);
		if ((ret = lmdb_link_add(ctx->env, txn, box_guids[link->box],
					 link->uid, &link->rec, error_r)) != 0 ||
		    (ret = lmdb_body_ref(ctx->env, txn, link->rec.body_id, 1,
					 TEST_NOW, &vsize, error_r)) != 0 ||
		    (ret = lmdb_link_count(ctx->env, txn, 1, vsize,
					   error_r)) != 0)
			return ret;
		if (link->rec.pop3_uidl[0] != '\0' &&
		    (ret = lmdb_uidls_set(ctx->env, txn, box_guids[link->box],
					  link->rec.pop3_uidl, link->uid,
					  error_r)) != 0)
			return ret;
	}
	return 0;
}

static int test_boxes_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct test_link_ctx *ctx = context;
	struct lmdb_mailbox_record rec;
	unsigned int i;
	int ret;

	for (i = 0; i < BOX_COUNT; i++) {
		i_zero(&rec);
		rec.state = LMDB_MAILBOX_STATE_ACTIVE;
		rec.uid_validity = 1000 + i;
		rec.highest_uid = 1000;
		rec.hierarchy_sep = '/';
		rec.created = 1600000000;
		/* the last transaction changes INBOX's modseq: a salvage
		   from the previous meta page has the first value */
		rec.highest_modseq = ctx->last;
		rec.name = box_names[i];
		if ((ret = lmdb_mailbox_put(ctx->env, txn, box_guids[i], &rec,
					    error_r)) != 0)
			return ret;
		if (ctx->last == 2)
			break;
	}
	return 0;
}

static void test_fixture_build(void)
{
	struct test_link_ctx ctx;
	struct lmdb_env *env;
	const char *error;
	unsigned int i, n;

	env = test_env_open(fixture_dir);
	for (i = 0; i < TEST_BODIES; i++) T_BEGIN {
		test_body_data(i, &bodies[i]);
		bodies[i].id = test_body_write(env, &bodies[i]);
	} T_END;
	/* INBOX and Archive hold every linked body once, Bulk copies of
	   most of them: bodies with 1 to 3 links */
	i_array_init(&links, 1300);
	for (i = 0; i < 250; i++)
		test_add_link(BOX_INBOX, i + 1, i);
	for (i = 250; i < TEST_LINKED_BODIES; i++)
		test_add_link(BOX_ARCHIVE, i - 249, i);
	for (i = 0, n = 1; i < TEST_LINKED_BODIES; i++) {
		if (i % 3 != 0)
			test_add_link(BOX_BULK, n++, i);
		if (i % 5 == 0)
			test_add_link(BOX_BULK, n++, i);
	}
	ctx.env = env;
	for (ctx.first = 0; ctx.first < array_count(&links);
	     ctx.first = ctx.last) {
		ctx.last = I_MIN(ctx.first + 100, array_count(&links));
		if (lmdb_env_write(env, test_links_txn, &ctx, TRUE, &error) != 0)
			i_fatal("linking failed: %s", error);
	}
	ctx.last = 1;
	if (lmdb_env_write(env, test_boxes_txn, &ctx, TRUE, &error) != 0)
		i_fatal("writing mailboxes failed: %s", error);
	ctx.last = 2;
	if (lmdb_env_write(env, test_boxes_txn, &ctx, TRUE, &error) != 0)
		i_fatal("writing mailboxes failed: %s", error);
	for (i = 0; i < TEST_BODIES; i++) {
		if (lmdb_body_get(env, bodies[i].id, pool_datastack_create(),
				  &bodies[i].rec, &error) != 1)
			i_fatal("reading body %u failed", i);
		bodies[i].guid = i_strdup(bodies[i].rec.guid);
		bodies[i].rec.guid = bodies[i].guid;
	}
	test_env_close(&env);
}

static const char *test_record_key(const char *dbi, const void *key,
				   size_t key_size)
{
	return t_strdup_printf("%s/%s", dbi, binary_to_hex(key, key_size));
}

static int test_map_record(const struct lmdb_pagescan_record *rec,
			   void *context ATTR_UNUSED)
{
	struct test_record_pages *pages;

	if (rec->source != LMDB_PAGESCAN_SOURCE_TREE)
		return 0;
	pages = p_new(record_pool, struct test_record_pages, 1);
	pages->pgno = rec->pgno;
	pages->overflow_pgno = rec->overflow_pgno;
	if (rec->overflow_pgno != LMDB_PAGESCAN_NO_PGNO) {
		pages->overflow_pages = (rec->value_size + 16 +
			PAGE_SIZE_EXPECTED - 1) / PAGE_SIZE_EXPECTED;
	}
	hash_table_insert(record_pages, p_strdup(record_pool,
		test_record_key(rec->dbi_name, rec->key, rec->key_size)),
		pages);
	return 0;
}

static void test_fixture_init(void)
{
	struct lmdb_pagescan *scan;
	const char *error, *path;
	int fd;
	struct stat st;

	ioloop_time = TEST_NOW;
	i_strocpy(fixture_dir, "/tmp/test-lmdb-salvage.XXXXXX",
		  sizeof(fixture_dir));
	i_strocpy(work_dir, "/tmp/test-lmdb-salvage-w.XXXXXX",
		  sizeof(work_dir));
	if (mkdtemp(fixture_dir) == NULL || mkdtemp(work_dir) == NULL)
		i_fatal("mkdtemp() failed: %m");
	test_fixture_build();

	path = t_strconcat(fixture_dir, "/data.mdb", NULL);
	if ((fd = open(path, O_RDONLY)) < 0 || fstat(fd, &st) < 0)
		i_fatal("open(%s) failed: %m", path);
	fixture_size = st.st_size;
	fixture_data = i_malloc(fixture_size);
	if (pread(fd, fixture_data, fixture_size, 0) != (ssize_t)fixture_size)
		i_fatal("pread(%s) failed: %m", path);
	i_close_fd(&fd);

	record_pool = pool_alloconly_create("record pages", 1024 * 256);
	hash_table_create(&record_pages, record_pool, 4096, str_hash, strcmp);
	if (lmdb_pagescan_open(path, &scan, &error) < 0 ||
	    lmdb_pagescan_run(scan, test_map_record, (void *)NULL, &error) < 0)
		i_fatal("scanning the fixture failed: %s", error);
	lmdb_pagescan_close(&scan);
	i_snprintf(data_path, sizeof(data_path), "%s/data.mdb", work_dir);
	i_snprintf(dest_dir, sizeof(dest_dir), "%s/new", work_dir);
}

static void test_fixture_deinit(void)
{
	const char *error;
	unsigned int i;
	struct test_link *link;

	for (i = 0; i < TEST_BODIES; i++) {
		i_free(bodies[i].data);
		i_free(bodies[i].guid);
	}
	array_foreach_modifiable(&links, link) {
		if (link->rec.pop3_uidl[0] != '\0')
			i_free(uidl_strings[link - array_front(&links)]);
	}
	array_free(&links);
	i_free(fixture_data);
	hash_table_destroy(&record_pages);
	pool_unref(&record_pool);
	(void)unlink_directory(fixture_dir, UNLINK_DIRECTORY_FLAG_RMDIR, &error);
	(void)unlink_directory(work_dir, UNLINK_DIRECTORY_FLAG_RMDIR, &error);
}

/* --- damage --- */

struct test_damage {
	size_t offset, size;
};
static ARRAY(struct test_damage) damages;

static void test_damage_reset(void)
{
	if (!array_is_created(&damages))
		i_array_init(&damages, 16);
	array_clear(&damages);
}

static void test_damage_add(size_t offset, size_t size)
{
	struct test_damage *d = array_append_space(&damages);

	d->offset = offset;
	d->size = size;
}

static void test_damage_page(uint64_t pgno)
{
	test_damage_add(pgno * PAGE_SIZE_EXPECTED, PAGE_SIZE_EXPECTED);
}

static bool test_range_damaged(uint64_t pgno, unsigned int pages)
{
	const struct test_damage *d;
	uint64_t start = pgno * PAGE_SIZE_EXPECTED;
	uint64_t end = start + (uint64_t)pages * PAGE_SIZE_EXPECTED;

	array_foreach(&damages, d) {
		if (d->offset < end && d->offset + d->size > start)
			return TRUE;
	}
	return FALSE;
}

/* Is any page the record lives on damaged? */
static bool test_record_damaged(const char *dbi, const void *key,
				size_t key_size)
{
	const struct test_record_pages *pages;

	pages = hash_table_lookup(record_pages,
				  test_record_key(dbi, key, key_size));
	i_assert(pages != NULL);
	return test_range_damaged(pages->pgno, 1) ||
		(pages->overflow_pages > 0 &&
		 test_range_damaged(pages->overflow_pgno,
				    pages->overflow_pages));
}

static bool test_body_damaged(unsigned int body)
{
	unsigned char key[LMDB_CHUNK_KEY_SIZE];
	uint32_t idx, count;

	count = (bodies[body].size + LMDB_BODY_CHUNK_SIZE - 1) /
		LMDB_BODY_CHUNK_SIZE;
	for (idx = 0; idx < count; idx++) {
		lmdb_chunk_key_encode(bodies[body].id, idx, key);
		if (test_record_damaged("chunks", key, sizeof(key)))
			return TRUE;
	}
	return FALSE;
}

static bool test_link_damaged(const struct test_link *link)
{
	unsigned char key[LMDB_LINK_KEY_SIZE];

	lmdb_link_key_encode(box_guids[link->box], link->uid, key);
	return test_record_damaged("links", key, sizeof(key));
}

/* Leaf pages of one DBI's tree ("": every DBI), from the undamaged
   file's records. */
static void test_dbi_leaves(const char *dbi, ARRAY_TYPE(uint64_t) *pgnos)
{
	struct hash_iterate_context *iter;
	struct test_record_pages *pages;
	const uint64_t *p;
	char *key;
	bool seen;

	iter = hash_table_iterate_init(record_pages);
	while (hash_table_iterate(iter, record_pages, &key, &pages)) {
		if (dbi[0] != '\0' &&
		    !dlmdb_str_begins(key, t_strconcat(dbi, "/", NULL)))
			continue;
		seen = FALSE;
		array_foreach(pgnos, p)
			seen = seen || *p == pages->pgno;
		if (!seen)
			array_push_back(pgnos, &pages->pgno);
	}
	hash_table_iterate_deinit(&iter);
	array_sort(pgnos, uint64_cmp);
}

/* A copy of the fixture with the damage applied, in work_dir. */
static void test_damaged_copy(uint64_t seed)
{
	const struct test_damage *d;
	unsigned char *data;
	size_t i;
	int fd;

	data = i_malloc(fixture_size);
	memcpy(data, fixture_data, fixture_size);
	test_rand_seed(seed);
	array_foreach(&damages, d) {
		for (i = d->offset; i < d->offset + d->size &&
			     i < fixture_size; i++)
			data[i] = test_rand64() >> 56;
	}
	fd = open(data_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, data, fixture_size) != (ssize_t)fixture_size)
		i_fatal("write(%s) failed: %m", data_path);
	i_close_fd(&fd);
	i_free(data);
}

/* --- the index's view, for the lookup --- */

static struct lmdb_salvage_mailbox_info infos[BOX_COUNT];
static uint32_t *info_uids[BOX_COUNT];

static void test_infos_init(void)
{
	const struct test_link *link;
	unsigned int i;

	for (i = 0; i < BOX_COUNT; i++) {
		i_free(info_uids[i]);
		info_uids[i] = i_new(uint32_t, array_count(&links));
		i_zero(&infos[i]);
		memcpy(infos[i].guid, box_guids[i], GUID_128_SIZE);
		infos[i].name = box_names[i];
		infos[i].uid_validity = 1000 + i;
		infos[i].uids = info_uids[i];
	}
	array_foreach(&links, link) {
		info_uids[link->box][infos[link->box].uids_count++] = link->uid;
		infos[link->box].next_uid = link->uid + 1;
	}
}

static const struct test_link *
test_link_find(const guid_128_t guid, uint32_t uid)
{
	const struct test_link *link;

	array_foreach(&links, link) {
		if (link->uid == uid &&
		    guid_128_equals(box_guids[link->box], guid))
			return link;
	}
	return NULL;
}

static bool
test_lookup(const struct lmdb_salvage_mailbox_info *info, uint32_t uid,
	    void *context ATTR_UNUSED,
	    struct lmdb_salvage_index_message *msg_r)
{
	const struct test_link *link = test_link_find(info->guid, uid);

	if (link == NULL)
		return FALSE;
	msg_r->message_id_header = t_strdup_printf("Message-ID: %s\r\n",
		test_message_id(link->body));
	msg_r->pop3_uidl = link->rec.pop3_uidl[0] == '\0' ? NULL :
		link->rec.pop3_uidl;
	msg_r->flags = link->rec.flags;
	msg_r->keywords = link->rec.keywords;
	msg_r->keywords_count = link->rec.keywords_count;
	return TRUE;
}

/* --- salvage and the checks --- */

static struct lmdb_salvage_result *
test_salvage(bool with_index, bool expect_ok)
{
	struct lmdb_salvage_settings set;
	struct lmdb_salvage_result *result;
	const char *error;
	int ret;

	(void)unlink_directory(dest_dir, UNLINK_DIRECTORY_FLAG_RMDIR, &error);
	if (mkdir(dest_dir, 0700) < 0)
		i_fatal("mkdir(%s) failed: %m", dest_dir);
	i_zero(&set);
	set.data_path = data_path;
	set.dest_dir = dest_dir;
	set.env_set = test_env_set();
	set.hierarchy_sep = '/';
	set.now = TEST_NOW;
	if (with_index) {
		test_infos_init();
		set.mailboxes = infos;
		set.mailboxes_count = BOX_COUNT;
		set.lookup = test_lookup;
	}
	ret = lmdb_salvage_build(&set, &result, &error);
	test_assert(ret == 0 || !expect_ok);
	if (ret < 0 && expect_ok)
		i_error("lmdb_salvage_build() failed: %s", error);
	return ret < 0 ? NULL : result;
}

static bool
test_message_in(const ARRAY_TYPE(lmdb_salvage_message) *msgs,
		const guid_128_t guid, uint32_t uid)
{
	const struct lmdb_salvage_message *msg;

	array_foreach(msgs, msg) {
		if (msg->uid == uid && guid_128_equals(msg->mailbox_guid, guid))
			return TRUE;
	}
	return FALSE;
}

static bool test_link_equals(const struct lmdb_link_record *a,
			     const struct lmdb_link_record *b)
{
	unsigned int i;

	if (a->body_id != b->body_id || a->save_date != b->save_date ||
	    a->flags != b->flags || a->pop3_order != b->pop3_order ||
	    a->modseq != b->modseq || strcmp(a->pop3_uidl, b->pop3_uidl) != 0 ||
	    a->keywords_count != b->keywords_count)
		return FALSE;
	for (i = 0; i < a->keywords_count; i++) {
		if (strcmp(a->keywords[i], b->keywords[i]) != 0)
			return FALSE;
	}
	return TRUE;
}

/* A body record that came through equals the fixture's, but for its
   reference count and state, which follow the links now. */
static bool test_body_record_equals(const struct lmdb_body_record *a,
				    const struct lmdb_body_record *b)
{
	return a->physical_size == b->physical_size &&
		a->message_size == b->message_size &&
		a->virtual_size == b->virtual_size &&
		a->received_date == b->received_date &&
		a->save_date == b->save_date &&
		a->chunk_count == b->chunk_count &&
		a->chunk_size == b->chunk_size &&
		memcmp(a->sha256, b->sha256, sizeof(a->sha256)) == 0 &&
		guid_128_equals(a->orig_mailbox_guid, b->orig_mailbox_guid) &&
		strcmp(a->guid, b->guid) == 0;
}

static bool test_body_record_damaged(unsigned int body)
{
	unsigned char key[LMDB_BODY_ID_SIZE];

	lmdb_body_id_encode(bodies[body].id, key);
	return test_record_damaged("bodies", key, sizeof(key));
}

/* The body's content in the new environment equals the model's. */
static bool test_body_content(struct lmdb_env *env, unsigned int body)
{
	struct lmdb_body_record rec;
	buffer_t *buf;
	const char *error;
	bool ok;

	if (lmdb_body_get(env, bodies[body].id, pool_datastack_create(),
			  &rec, &error) <= 0)
		return FALSE;
	buf = t_buffer_create(bodies[body].size);
	ok = rec.chunk_count == 0 ||
		lmdb_body_read_chunks(env, bodies[body].id, 0, rec.chunk_count,
				      buf, TRUE, &error) == (int)rec.chunk_count;
	return ok && buf->used == bodies[body].size &&
		memcmp(buf->data, bodies[body].data, buf->used) == 0;
}

/* What doveadm lmdb verify checks, on the new environment. */
static void test_check_invariants(struct lmdb_env *env)
{
	HASH_TABLE(void *, void *) refs;
	struct lmdb_env_record env_rec;
	struct lmdb_body_record body;
	struct lmdb_link_record link;
	struct lmdb_mailbox_record mbox;
	unsigned char gc_key[LMDB_GC_KEY_SIZE];
	uint64_t id, max_id = 0, nlinks = 0, vsize = 0, nbodies = 0;
	uint64_t body_bytes = 0, nuidls = 0, nholders = 0;
	uint32_t uid, idx;
	const char *error;
	MDB_cursor *cursor;
	MDB_val key, val;
	MDB_txn *txn;
	guid_128_t guid;
	pool_t pool = pool_alloconly_create("invariants", 4096);
	int ret;

	hash_table_create_direct(&refs, pool, 1024);
	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("%s", error);
	test_assert(lmdb_env_record_get(env, txn, &env_rec, &error) == 0);
	test_assert(env_rec.schema_version == LMDB_SCHEMA_VERSION);

	/* links: their bodies exist, their mailboxes too */
	test_assert(mdb_cursor_open(txn, env->dbi_links, &cursor) == 0);
	while (mdb_cursor_get(cursor, &key, &val, MDB_NEXT) == 0) T_BEGIN {
		test_assert(lmdb_link_key_decode(key.mv_data, key.mv_size,
						 guid, &uid));
		test_assert(lmdb_link_record_decode(guid, uid, val.mv_data,
			val.mv_size, pool_datastack_create(), &link, &error));
		test_assert(lmdb_body_lookup(env, txn, link.body_id,
			pool_datastack_create(), &body, &error) == 1);
		vsize += body.virtual_size;
		nlinks++;
		hash_table_update(refs, POINTER_CAST(link.body_id),
			POINTER_CAST(POINTER_CAST_TO(hash_table_lookup(refs,
				POINTER_CAST(link.body_id)), uintptr_t) + 1));
		test_assert(lmdb_mailbox_get(env, txn, guid,
			pool_datastack_create(), &mbox, &error) == 1);
		test_assert(mbox.highest_uid >= uid);
		if (link.pop3_uidl[0] != '\0') {
			ARRAY_TYPE(lmdb_uid) holders;
			const uint32_t *holder;
			bool found = FALSE;

			/* one entry per link that holds a UIDL */
			nholders++;
			t_array_init(&holders, 4);
			test_assert(lmdb_uidls_holders(env, txn, guid,
				link.pop3_uidl, &holders, &error) == 0);
			array_foreach(&holders, holder)
				found = found || *holder == uid;
			test_assert_idx(found, uid);
		}
	} T_END;
	mdb_cursor_close(cursor);

	/* bodies: reference counts are the links, LINKED ones whole,
	   others have their gc entries */
	test_assert(mdb_cursor_open(txn, env->dbi_bodies, &cursor) == 0);
	while (mdb_cursor_get(cursor, &key, &val, MDB_NEXT) == 0) T_BEGIN {
		uintptr_t n;

		test_assert(lmdb_body_id_decode(key.mv_data, key.mv_size, &id));
		test_assert(lmdb_body_record_decode(id, val.mv_data,
			val.mv_size, pool_datastack_create(), &body, &error));
		max_id = I_MAX(max_id, id);
		nbodies++;
		body_bytes += body.physical_size;
		n = POINTER_CAST_TO(hash_table_lookup(refs, POINTER_CAST(id)),
				    uintptr_t);
		test_assert_idx(body.refcount == n, id);
		test_assert_idx((body.state == LMDB_BODY_STATE_LINKED) ==
				(n > 0), id);
		test_assert_idx(lmdb_body_verify(env, id, &body, TRUE,
						 &error) == 1, id);
		if (body.state != LMDB_BODY_STATE_LINKED) {
			lmdb_gc_key_encode(body.state == LMDB_BODY_STATE_PENDING ?
					   LMDB_GC_KIND_PENDING :
					   LMDB_GC_KIND_DEAD,
					   body.state_since, id, gc_key);
			key.mv_data = gc_key;
			key.mv_size = sizeof(gc_key);
			test_assert_idx(mdb_get(txn, env->dbi_gc, &key,
						&val) == 0, id);
		}
	} T_END;
	mdb_cursor_close(cursor);

	/* chunks: none without a body record */
	test_assert(mdb_cursor_open(txn, env->dbi_chunks, &cursor) == 0);
	while (mdb_cursor_get(cursor, &key, &val, MDB_NEXT) == 0) T_BEGIN {
		test_assert(lmdb_chunk_key_decode(key.mv_data, key.mv_size,
						  &id, &idx));
		test_assert_idx(lmdb_body_lookup(env, txn, id,
			pool_datastack_create(), &body, &error) == 1, id);
		max_id = I_MAX(max_id, id);
	} T_END;
	mdb_cursor_close(cursor);

	/* the UIDL index: nothing but those entries */
	test_assert(mdb_cursor_open(txn, env->dbi_uidls, &cursor) == 0);
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0)
		nuidls++;
	mdb_cursor_close(cursor);
	test_assert(nuidls == nholders);

	test_assert(env_rec.links == nlinks);
	test_assert(env_rec.link_vsize_bytes == vsize);
	test_assert(env_rec.bodies == nbodies);
	test_assert(env_rec.body_bytes == body_bytes);
	test_assert(env_rec.next_body_id > max_id);
	lmdb_env_read_end(env, &txn);
	hash_table_destroy(&refs);
	pool_unref(&pool);
}

enum test_expect {
	/* every link and body is there */
	EXPECT_ALL = 0x01,
	/* with the index, no link is lost whose body is whole */
	EXPECT_RESTORED = 0x02,
};

/* Every link on undamaged pages whose body's chunks are undamaged is in
   the new environment, decoded equal, with its body's content; every
   link that is not there is reported lost (with the index: exactly
   those). Returns the number of links missing. */
static unsigned int test_check_links(struct lmdb_env *env,
				     const struct lmdb_salvage_result *result,
				     bool with_index, enum test_expect expect)
{
	const struct test_link *link;
	struct lmdb_link_record rec;
	const char *error;
	unsigned int missing = 0;
	MDB_txn *txn;
	int ret;

	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("%s", error);
	array_foreach(&links, link) T_BEGIN {
		bool whole = !test_body_damaged(link->body);

		ret = lmdb_link_get(env, txn, box_guids[link->box], link->uid,
				    pool_datastack_create(), &rec, &error);
		if (ret == 1) {
			struct lmdb_body_record body;

			test_assert_idx(test_link_equals(&rec, &link->rec),
					link->uid);
			test_assert_idx(test_body_content(env, link->body),
					link->body);
			test_assert(lmdb_body_lookup(env, txn, rec.body_id,
				pool_datastack_create(), &body, &error) == 1);
			test_assert_idx(test_body_record_damaged(link->body) ||
				test_body_record_equals(&body,
					&bodies[link->body].rec), link->body);
			test_assert(!test_message_in(&result->lost,
				box_guids[link->box], link->uid));
		} else {
			missing++;
			test_assert_idx(ret == 0, link->uid);
			if ((expect & EXPECT_ALL) != 0 ||
			    (whole && !test_link_damaged(link)))
				test_out_quiet(t_strdup_printf(
					"link %s/%u missing (body %u%s%s)",
					box_names[link->box], link->uid, link->body,
					whole ? "" : ", damaged",
					test_link_damaged(link) ? ", link damaged" : ""), FALSE);
			if ((expect & EXPECT_RESTORED) != 0 && whole)
				test_out_quiet(t_strdup_printf(
					"link %s/%u not restored",
					box_names[link->box], link->uid), FALSE);
			/* the index knows every UID: each one is reported;
			   without it, those whose link record was found */
			test_assert_idx(!with_index ||
				test_message_in(&result->lost,
					box_guids[link->box], link->uid),
				link->uid);
		}
	} T_END;
	lmdb_env_read_end(env, &txn);
	test_assert(!with_index || array_count(&result->lost) == missing);
	return missing;
}

static struct lmdb_env *test_check(const struct lmdb_salvage_result *result,
				   bool with_index, enum test_expect expect,
				   unsigned int *missing_r)
{
	struct lmdb_env *env = test_env_open(dest_dir);
	unsigned int missing;

	test_check_invariants(env);
	missing = test_check_links(env, result, with_index, expect);
	if (missing_r != NULL)
		*missing_r = missing;
	return env;
}

/* --- the tests --- */

static void test_salvage_undamaged(void)
{
	struct lmdb_salvage_result *result;
	struct lmdb_env *env;
	unsigned int i;

	test_begin("salvage: undamaged environment");
	test_damage_reset();
	test_damaged_copy(1);
	result = test_salvage(TRUE, TRUE);
	env = test_check(result, TRUE, EXPECT_ALL, NULL);
	test_assert(array_count(&result->lost) == 0);
	test_assert(array_count(&result->restored) == 0);
	test_assert(array_count(&result->relinked) == 0);
	test_assert(array_count(&result->mailboxes) == 0);
	test_assert(result->records_damaged == 0);
	test_assert(result->records_orphan == 0);
	test_assert(result->records_unverified == 0);
	test_assert(result->links == array_count(&links));
	/* the unlinked bodies stay pending */
	test_assert(result->bodies == TEST_BODIES);
	test_assert(result->bodies_unlinked == TEST_BODIES - TEST_LINKED_BODIES);
	for (i = 0; i < TEST_BODIES; i++) T_BEGIN {
		struct lmdb_body_record rec;
		const char *error;

		test_assert_idx(test_body_content(env, i), i);
		test_assert_idx(lmdb_body_get(env, bodies[i].id,
			pool_datastack_create(), &rec, &error) == 1 &&
			test_body_record_equals(&rec, &bodies[i].rec) &&
			rec.refcount == bodies[i].rec.refcount &&
			rec.state == bodies[i].rec.state &&
			rec.state_since == bodies[i].rec.state_since, i);
	} T_END;
	test_env_close(&env);
	lmdb_salvage_result_free(&result);
	test_end();
}

/* A leaf page of links: without the index the links are lost (those
   found whose bodies lost every link are re-linked in the recovery
   mailbox); with it they come back under their UIDs. */
static void test_salvage_links_leaf(void)
{
	ARRAY_TYPE(uint64_t) leaves;
	struct lmdb_salvage_result *result;
	const struct lmdb_salvage_message *msg;
	const struct lmdb_salvage_mailbox_note *note;
	struct lmdb_env *env;
	unsigned int missing;

	test_begin("salvage: a leaf page of links");
	t_array_init(&leaves, 64);
	test_dbi_leaves("links", &leaves);
	test_assert(array_count(&leaves) > 10);
	test_damage_reset();
	test_damage_page(array_idx_elem(&leaves, 3));
	test_damage_page(array_idx_elem(&leaves, array_count(&leaves) - 2));
	test_damaged_copy(2);

	result = test_salvage(FALSE, TRUE);
	env = test_check(result, FALSE, 0, &missing);
	test_assert(missing > 0);
	/* nothing says which UIDs they were */
	test_assert(array_count(&result->lost) == 0);
	test_assert(array_count(&result->relinked) > 0);
	test_assert(array_count(&result->mailboxes) == 1);
	note = array_idx(&result->mailboxes, 0);
	test_assert(note->fate == LMDB_SALVAGE_MAILBOX_RECOVERY &&
		    strcmp(note->name, "Recovered/Unlinked") == 0);
	array_foreach(&result->relinked, msg) {
		/* a whole body of a lost link, found by its first chunk */
		test_assert(msg->message_id != NULL &&
			    dlmdb_str_begins(msg->message_id, "<m-"));
		test_assert(strcmp(msg->mailbox_name, "Recovered/Unlinked") == 0);
	}
	test_env_close(&env);
	lmdb_salvage_result_free(&result);

	result = test_salvage(TRUE, TRUE);
	env = test_check(result, TRUE, EXPECT_ALL | EXPECT_RESTORED, &missing);
	test_assert(missing == 0);
	test_assert(array_count(&result->restored) > 0);
	test_assert(array_count(&result->relinked) == 0);
	test_env_close(&env);
	lmdb_salvage_result_free(&result);
	test_end();
}

static int test_stop_scan(const struct lmdb_pagescan_record *rec ATTR_UNUSED,
			  void *context ATTR_UNUSED)
{
	return -1;
}

/* The roots of the trees deeper than one page. */
static void test_dbi_roots(ARRAY_TYPE(uint64_t) *roots)
{
	const struct lmdb_pagescan_dbi *dbis;
	struct lmdb_pagescan *scan;
	const char *error;
	unsigned int i, count;

	if (lmdb_pagescan_open(t_strconcat(fixture_dir, "/data.mdb", NULL),
			       &scan, &error) < 0)
		i_fatal("%s", error);
	/* stopped at the first record: the trees are walked by then */
	(void)lmdb_pagescan_run(scan, test_stop_scan, (void *)NULL, &error);
	dbis = lmdb_pagescan_get_dbis(scan, &count);
	for (i = 0; i < count; i++) {
		if (dbis[i].depth >= 2)
			array_push_back(roots, &dbis[i].root_pgno);
	}
	lmdb_pagescan_close(&scan);
}

/* The links tree's root: its leaves are found as orphans, whole. */
static void test_salvage_branch(void)
{
	const struct lmdb_pagescan_dbi *dbis;
	struct lmdb_pagescan *scan;
	struct lmdb_salvage_result *result;
	struct lmdb_env *env;
	const char *error;
	uint64_t root = 0;
	unsigned int i, count;

	test_begin("salvage: a branch page");
	if (lmdb_pagescan_open(t_strconcat(fixture_dir, "/data.mdb", NULL),
			       &scan, &error) < 0)
		i_fatal("%s", error);
	/* stopped at the first record: the trees are walked by then */
	(void)lmdb_pagescan_run(scan, test_stop_scan, (void *)NULL, &error);
	dbis = lmdb_pagescan_get_dbis(scan, &count);
	for (i = 0; i < count; i++) {
		if (strcmp(dbis[i].name, "links") == 0) {
			test_assert(dbis[i].depth >= 2);
			root = dbis[i].root_pgno;
		}
	}
	lmdb_pagescan_close(&scan);
	test_damage_reset();
	test_damage_page(root);
	test_damaged_copy(3);
	result = test_salvage(TRUE, TRUE);
	env = test_check(result, TRUE, EXPECT_ALL, NULL);
	test_assert(result->records_orphan >= array_count(&links));
	test_assert(array_count(&result->lost) == 0);
	test_env_close(&env);
	lmdb_salvage_result_free(&result);
	test_end();
}

/* Bytes of one value, found in the undamaged file. */
static size_t test_value_offset(const char *dbi, const void *key,
				size_t key_size, size_t skip)
{
	const struct test_record_pages *pages;
	const unsigned char *page;
	uint16_t lower, ofs, ksize;
	unsigned int i;

	pages = hash_table_lookup(record_pages,
				  test_record_key(dbi, key, key_size));
	i_assert(pages != NULL);
	if (pages->overflow_pages > 0)
		return pages->overflow_pgno * PAGE_SIZE_EXPECTED + 16 + skip;
	/* in the leaf: the node with the key (page header: pgno, pad,
	   flags, lower, upper; then the nodes' offsets) */
	page = fixture_data + pages->pgno * PAGE_SIZE_EXPECTED;
	memcpy(&lower, page + 12, sizeof(lower));
	for (i = 0; 16 + i * 2 < lower; i++) {
		memcpy(&ofs, page + 16 + i * 2, sizeof(ofs));
		memcpy(&ksize, page + ofs + 6, sizeof(ksize));
		if (ksize == key_size && memcmp(page + ofs + 8, key, ksize) == 0)
			return pages->pgno * PAGE_SIZE_EXPECTED + ofs + 8 +
				ksize + skip;
	}
	i_unreached();
}

/* One body record's bytes: it is rebuilt from its chunks, its links
   stay. */
static void test_salvage_body_record(void)
{
	struct lmdb_salvage_result *result;
	struct lmdb_body_record rec;
	struct lmdb_env *env;
	unsigned char key[LMDB_BODY_ID_SIZE];
	const char *error;

	test_begin("salvage: a body record");
	lmdb_body_id_encode(bodies[17].id, key);
	test_damage_reset();
	test_damage_add(test_value_offset("bodies", key, sizeof(key), 20), 4);
	test_damaged_copy(4);
	result = test_salvage(TRUE, TRUE);
	env = test_check(result, TRUE, EXPECT_ALL, NULL);
	test_assert(result->records_damaged == 1);
	test_assert(result->bodies_rebuilt == 1);
	test_assert(lmdb_body_get(env, bodies[17].id, pool_datastack_create(),
				  &rec, &error) == 1);
	test_assert(rec.physical_size == bodies[17].size);
	test_env_close(&env);
	lmdb_salvage_result_free(&result);
	test_end();
}

/* Chunk data: the body is lost, and so are its links, reported with
   the Message-ID of its first chunk. */
static void test_salvage_chunk(void)
{
	struct lmdb_salvage_result *result;
	const struct lmdb_salvage_message *msg;
	const struct test_link *link;
	struct lmdb_env *env;
	unsigned char key[LMDB_CHUNK_KEY_SIZE];
	unsigned int body = 4, nlinks = 0;

	test_begin("salvage: chunk data");
	/* a body of several chunks, with links in INBOX and Bulk */
	i_assert(bodies[body].size > 2 * LMDB_BODY_CHUNK_SIZE);
	lmdb_chunk_key_encode(bodies[body].id, 1, key);
	test_damage_reset();
	test_damage_add(test_value_offset("chunks", key, sizeof(key), 100), 1);
	test_damaged_copy(5);
	result = test_salvage(TRUE, TRUE);
	env = test_check(result, TRUE, 0, NULL);
	array_foreach(&links, link)
		nlinks += link->body == body ? 1 : 0;
	test_assert(nlinks == 2);
	test_assert(array_count(&result->lost) == nlinks);
	test_assert(result->bodies_lost == 1);
	array_foreach(&result->lost, msg) {
		test_assert(msg->body_id == bodies[body].id);
		test_assert(msg->message_id != NULL &&
			    strcmp(msg->message_id, test_message_id(body)) == 0);
		test_assert(strstr(msg->reason, "chunks are readable") != NULL);
	}
	test_env_close(&env);
	lmdb_salvage_result_free(&result);
	test_end();
}

/* The env record: made anew, body ids still above every id. */
/* A lost body record and the body's last chunk: the chunks left end in a
   full one, so nothing tells that one more was there. The body must be
   lost, not rebuilt shorter (the random damage found this). */
static void test_salvage_body_tail(void)
{
	struct lmdb_salvage_result *result;
	const struct lmdb_salvage_message *msg;
	const struct test_link *link;
	struct lmdb_env *env;
	unsigned char key[LMDB_BODY_ID_SIZE], ckey[LMDB_CHUNK_KEY_SIZE];
	unsigned int body = 4, nlinks = 0;
	uint32_t last;

	test_begin("salvage: a body record and its last chunk");
	i_assert(bodies[body].size > 2 * LMDB_BODY_CHUNK_SIZE);
	last = (bodies[body].size - 1) / LMDB_BODY_CHUNK_SIZE;
	lmdb_body_id_encode(bodies[body].id, key);
	lmdb_chunk_key_encode(bodies[body].id, last, ckey);
	test_damage_reset();
	test_damage_add(test_value_offset("bodies", key, sizeof(key), 20), 4);
	test_damage_add(test_value_offset("chunks", ckey, sizeof(ckey), 100), 4);
	test_damaged_copy(8);
	result = test_salvage(TRUE, TRUE);
	env = test_check(result, TRUE, 0, NULL);
	array_foreach(&links, link)
		nlinks += link->body == body ? 1 : 0;
	test_assert(result->records_damaged == 2);
	test_assert(result->bodies_rebuilt == 0);
	test_assert(result->bodies_lost == 1);
	test_assert(array_count(&result->lost) == nlinks);
	array_foreach(&result->lost, msg) {
		test_assert(msg->body_id == bodies[body].id);
		test_assert(strstr(msg->reason, "a later one may be lost") != NULL);
	}
	test_env_close(&env);
	lmdb_salvage_result_free(&result);
	test_end();
}

static void test_salvage_env_record(void)
{
	struct lmdb_salvage_result *result;
	struct lmdb_env *env;

	test_begin("salvage: the env record");
	test_damage_reset();
	test_damage_add(test_value_offset("meta", LMDB_ENV_RECORD_KEY,
					  LMDB_ENV_RECORD_KEY_SIZE, 10), 8);
	test_damaged_copy(6);
	result = test_salvage(TRUE, TRUE);
	env = test_check(result, TRUE, EXPECT_ALL, NULL);
	test_assert(result->records_damaged == 1);
	test_env_close(&env);
	lmdb_salvage_result_free(&result);
	test_end();
}

/* The newest meta page: the previous transaction's trees, which lack
   only the last change (INBOX's modseq 2). */
static void test_salvage_meta(void)
{
	struct lmdb_salvage_result *result;
	struct lmdb_mailbox_record rec;
	struct lmdb_env *env;
	const char *error;
	MDB_txn *txn;
	uint64_t txnid0, txnid1;

	test_begin("salvage: the newest meta page");
	/* MDB_meta's txnid: page header, magic, version, address, map
	   size, two MDB_dbs, last page */
	memcpy(&txnid0, fixture_data + 16 + 128, sizeof(txnid0));
	memcpy(&txnid1, fixture_data + PAGE_SIZE_EXPECTED + 16 + 128,
	       sizeof(txnid1));
	test_damage_reset();
	test_damage_add((txnid1 > txnid0 ? PAGE_SIZE_EXPECTED : 0) + 16, 64);
	test_damaged_copy(7);
	result = test_salvage(TRUE, TRUE);
	env = test_check(result, TRUE, EXPECT_ALL, NULL);
	test_assert(result->meta_fallback_reason != NULL);
	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("%s", error);
	test_assert(lmdb_mailbox_get(env, txn, box_guids[BOX_INBOX],
				     pool_datastack_create(), &rec,
				     &error) == 1);
	test_assert(rec.highest_modseq == 1);
	lmdb_env_read_end(env, &txn);
	test_env_close(&env);
	lmdb_salvage_result_free(&result);
	test_end();
}

/* Random bytes at random offsets, many times: the invariants hold, and
   whatever was on undamaged pages is there. */
static void test_salvage_random(void)
{
	struct lmdb_salvage_result *result;
	struct lmdb_env *env;
	unsigned int round, i, missing, total_missing = 0;
	uint64_t pages = fixture_size / PAGE_SIZE_EXPECTED;
	uint64_t damaged = 0, orphans = 0, lost = 0, rebuilt = 0;
	ARRAY_TYPE(uint64_t) leaves, roots;

	test_begin("salvage: random damage");
	t_array_init(&leaves, 256);
	test_dbi_leaves("", &leaves);
	t_array_init(&roots, 8);
	test_dbi_roots(&roots);
	for (round = 0; round < 40; round++) T_BEGIN {
		test_damage_reset();
		test_rand_seed(0x5a1 + round);
		for (i = 0; i < 6; i++) {
			/* anywhere past the meta pages (they have a test of
			   their own, and an older meta page's trees lack
			   links made later), or in a B-tree leaf: most of
			   the file is mail */
			uint64_t pgno = i % 2 == 0 ?
				2 + test_rand64() % (pages - 2) :
				array_idx_elem(&leaves, test_rand64() %
					       array_count(&leaves));
			/* one draw per statement: the order of a call's
			   arguments is unspecified, and the damage must be
			   the same with every compiler (this is clang's
			   order, whose round 29 found a body cut short) */
			uint64_t offset = test_rand64() % PAGE_SIZE_EXPECTED;
			uint64_t size = 1 + test_rand64() % 64;

			test_damage_add(pgno * PAGE_SIZE_EXPECTED + offset,
					size);
		}
		/* and now and then a tree's root */
		if (round % 4 == 1) {
			test_damage_page(array_idx_elem(&roots,
				test_rand64() % array_count(&roots)));
		}
		test_damaged_copy(100 + round);
		result = test_salvage(round % 2 == 0, TRUE);
		if (result != NULL) {
			env = test_check(result, round % 2 == 0, 0, &missing);
			total_missing += missing;
			damaged += result->records_damaged +
				result->scan.pages_unreadable;
			orphans += result->records_orphan;
			lost += result->bodies_lost;
			rebuilt += result->bodies_rebuilt;
			test_env_close(&env);
			lmdb_salvage_result_free(&result);
		}
	} T_END;
	/* the damage did reach records, pages and bodies */
	test_assert(damaged > 0 && orphans > 0 && lost > 0 && rebuilt > 0);
	test_assert(total_missing > 0);
	if (getenv("TEST_SALVAGE_VERBOSE") != NULL) {
		printf("random: %"PRIu64" damaged, %"PRIu64" orphan records, "
		       "%"PRIu64" bodies lost, %"PRIu64" rebuilt, %u links "
		       "missing\n", damaged, orphans, lost, rebuilt,
		       total_missing);
	}
	test_end();
}

/* A schema-1 environment (records without checksums): salvaged with the
   schema-1 decoders, said to be unverified. */
/* Put one hand-made record of a schema-1 environment. */
static void test_put(MDB_txn *txn, MDB_dbi dbi, const void *key,
		     size_t key_size, const buffer_t *value)
{
	MDB_val k, v;

	k.mv_data = (void *)key;
	k.mv_size = key_size;
	v.mv_data = (void *)value->data;
	v.mv_size = value->used;
	test_assert(mdb_put(txn, dbi, &k, &v, 0) == 0);
}

static void test_salvage_schema1(void)
{
	struct lmdb_salvage_result *result;
	struct lmdb_env_record env_rec;
	struct lmdb_body_record body;
	struct lmdb_link_record link;
	struct lmdb_mailbox_record mbox;
	struct lmdb_env *env;
	MDB_env *raw;
	MDB_txn *txn;
	MDB_dbi dbi[5];
	const char *const names[] = { "meta", "bodies", "chunks", "links",
				      "mailboxes" };
	unsigned char key[LMDB_LINK_KEY_SIZE], ckey[LMDB_CHUNK_KEY_SIZE];
	const char *data = "Message-ID: <v1@salvage.test>\r\n\r\nold\r\n";
	const char *other = "Message-ID: <v1@salvage.test>\r\n\r\nOLD\r\n";
	const char *error;
	buffer_t *buf = t_buffer_create(256);
	unsigned int i;

	test_begin("salvage: schema 1");
	if (unlink(data_path) < 0)
		i_fatal("preparing %s failed: %m", work_dir);
	if (mdb_env_create(&raw) != 0 || mdb_env_set_maxdbs(raw, 8) != 0 ||
	    mdb_env_open(raw, work_dir, MDB_NOTLS, 0600) != 0 ||
	    mdb_txn_begin(raw, NULL, 0, &txn) != 0)
		i_fatal("raw LMDB open failed");
	for (i = 0; i < N_ELEMENTS(names); i++) {
		if (mdb_dbi_open(txn, names[i], MDB_CREATE, &dbi[i]) != 0)
			i_fatal("mdb_dbi_open() failed");
	}
	i_zero(&env_rec);
	env_rec.schema_version = 1;
	env_rec.generation = 1;
	env_rec.next_body_id = 3;
	test_v1_env(buf, &env_rec);
	test_put(txn, dbi[0], LMDB_ENV_RECORD_KEY, LMDB_ENV_RECORD_KEY_SIZE,
		 buf);

	i_zero(&body);
	body.state = LMDB_BODY_STATE_LINKED;
	body.refcount = 1;
	body.physical_size = body.message_size = strlen(data);
	body.virtual_size = strlen(data);
	body.chunk_count = 1;
	body.chunk_size = LMDB_BODY_CHUNK_SIZE;
	body.guid = "v1-guid";
	if (EVP_Digest(data, strlen(data), body.sha256, NULL, EVP_sha256(),
		       NULL) != 1)
		i_fatal("EVP_Digest() failed");
	buffer_set_used_size(buf, 0);
	test_v1_body(buf, &body);
	lmdb_body_id_encode(1, key);
	test_put(txn, dbi[1], key, LMDB_BODY_ID_SIZE, buf);

	buffer_set_used_size(buf, 0);
	test_v1_chunk(buf, data, strlen(data));
	lmdb_chunk_key_encode(1, 0, ckey);
	test_put(txn, dbi[2], ckey, sizeof(ckey), buf);

	/* body 2: a chunk of the same size whose data is another
	   message's, as if a damaged key had put it there; a schema-1
	   chunk's checksum covers only its data, so only the body's
	   SHA-256 tells */
	body.guid = "v1-guid-2";
	if (EVP_Digest(data, strlen(data), body.sha256, NULL, EVP_sha256(),
		       NULL) != 1)
		i_fatal("EVP_Digest() failed");
	buffer_set_used_size(buf, 0);
	test_v1_body(buf, &body);
	lmdb_body_id_encode(2, key);
	test_put(txn, dbi[1], key, LMDB_BODY_ID_SIZE, buf);
	buffer_set_used_size(buf, 0);
	test_v1_chunk(buf, other, strlen(other));
	lmdb_chunk_key_encode(2, 0, ckey);
	test_put(txn, dbi[2], ckey, sizeof(ckey), buf);

	i_zero(&link);
	link.body_id = 1;
	link.flags = 0x08;
	link.pop3_uidl = "v1-uidl";
	buffer_set_used_size(buf, 0);
	test_v1_link(buf, &link);
	lmdb_link_key_encode(box_guids[0], 7, key);
	test_put(txn, dbi[3], key, LMDB_LINK_KEY_SIZE, buf);
	link.body_id = 2;
	link.pop3_uidl = "v1-uidl-2";
	buffer_set_used_size(buf, 0);
	test_v1_link(buf, &link);
	lmdb_link_key_encode(box_guids[0], 8, key);
	test_put(txn, dbi[3], key, LMDB_LINK_KEY_SIZE, buf);

	i_zero(&mbox);
	mbox.uid_validity = 77;
	mbox.highest_uid = 8;
	mbox.name = "INBOX";
	mbox.hierarchy_sep = '/';
	buffer_set_used_size(buf, 0);
	test_v1_mailbox(buf, &mbox);
	test_put(txn, dbi[4], box_guids[0], GUID_128_SIZE, buf);
	test_assert(mdb_txn_commit(txn) == 0);
	mdb_env_close(raw);
	i_unlink(t_strconcat(work_dir, "/lock.mdb", NULL));

	result = test_salvage(FALSE, TRUE);
	/* bodies, links and mailbox; the chunks have their checksums */
	test_assert(result->records_unverified == 5);
	test_assert(result->links == 1 && result->bodies == 1);
	/* body 2 and its link: reported, not handed back as the other
	   message */
	test_assert(array_count(&result->lost) == 1);
	env = test_env_open(dest_dir);
	test_check_invariants(env);
	if (lmdb_env_read_begin(env, &txn, &error) < 0)
		i_fatal("%s", error);
	test_assert(lmdb_link_get(env, txn, box_guids[0], 7,
				  pool_datastack_create(), &link, &error) == 1);
	test_assert(link.flags == 0x08 && strcmp(link.pop3_uidl, "v1-uidl") == 0);
	test_assert(lmdb_link_get(env, txn, box_guids[0], 8,
				  pool_datastack_create(), &link, &error) == 0);
	test_assert(lmdb_mailbox_get(env, txn, box_guids[0],
				     pool_datastack_create(), &mbox,
				     &error) == 1);
	test_assert(mbox.uid_validity == 77 && strcmp(mbox.name, "INBOX") == 0);
	lmdb_env_read_end(env, &txn);
	test_env_close(&env);
	lmdb_salvage_result_free(&result);
	test_end();
}

/* A file that is no LMDB environment at all: refused, nothing made. */
static void test_salvage_garbage(void)
{
	struct lmdb_salvage_result *result;
	int fd;

	test_begin("salvage: not an environment");
	fd = open(data_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "garbage", 7) != 7)
		i_fatal("write(%s) failed: %m", data_path);
	i_close_fd(&fd);
	test_damage_reset();
	result = test_salvage(FALSE, FALSE);
	test_assert(result == NULL);
	test_end();
}

static void test_parse_message_id(void)
{
	static const struct {
		const char *input, *output;
	} tests[] = {
		{ "Message-ID: <a@b>\r\n\r\nbody", "<a@b>" },
		{ "Subject: x\nmessage-id:\n  <folded@b>\n\n", "<folded@b>" },
		{ "Message-Id:<c@d>", "<c@d>" },
		{ "Subject: x\r\n\r\nMessage-ID: <in-body@b>\r\n", NULL },
		{ "Message-IDx: <no@b>\r\n", NULL },
		{ "Message-ID: \x01<ctl\t@b>\x7f\r\n", "<ctl@b>" },
		{ "Message-ID:\r\n", NULL },
		{ "", NULL },
	};
	const char *long_id;
	string_t *str;
	unsigned int i;

	test_begin("salvage: Message-ID parsing");
	for (i = 0; i < N_ELEMENTS(tests); i++) {
		const char *mid = lmdb_salvage_parse_message_id(
			tests[i].input, strlen(tests[i].input));

		test_assert_idx(null_strcmp(mid, tests[i].output) == 0, i);
	}
	str = t_str_new(1100);
	str_append(str, "Message-ID: <");
	for (i = 0; i < 1000; i++)
		str_append_c(str, 'x');
	str_append(str, ">\r\n");
	long_id = str_c(str);
	test_assert(strlen(lmdb_salvage_parse_message_id(long_id,
		strlen(long_id))) == 255);
	test_end();
}

int main(void)
{
	static void (*const tests[])(void) = {
		test_parse_message_id,
		test_fixture_init,
		test_salvage_undamaged,
		test_salvage_links_leaf,
		test_salvage_branch,
		test_salvage_body_record,
		test_salvage_chunk,
		test_salvage_body_tail,
		test_salvage_env_record,
		test_salvage_meta,
		test_salvage_random,
		test_salvage_schema1,
		test_salvage_garbage,
		test_fixture_deinit,
		NULL
	};
	int ret;

	if (sizeof(size_t) != 8 || getpagesize() != PAGE_SIZE_EXPECTED) {
		/* the damage is placed with this host's layout */
		printf("test-lmdb-salvage: skipped (needs 64-bit, 4 KiB pages)\n");
		return 0;
	}
	ret = test_run(tests);
	if (array_is_created(&damages))
		array_free(&damages);
	for (unsigned int i = 0; i < BOX_COUNT; i++)
		i_free(info_uids[i]);
	return ret;
}
