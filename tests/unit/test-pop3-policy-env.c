/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "unlink-directory.h"
#include "test-common.h"
#include "pop3-policy-env.h"
#include "test-pop3-policy-v1.h"

#include <stdlib.h>
#include <unistd.h>
#include <sys/stat.h>

static void *test_memdup(const void *data, size_t size)
{
	void *copy = t_malloc_no0(size == 0 ? 1 : size);

	memcpy(copy, data, size);
	return copy;
}

static const char *test_dir;

static const char *test_path(const char *name)
{
	return t_strconcat(test_dir, "/", name, NULL);
}

struct test_write_ctx {
	const char *guid, *uidl;
	uint64_t download;
};

static int test_write(struct pop3_policy_env *env, MDB_txn *txn,
		      void *context, const char **error_r)
{
	struct test_write_ctx *ctx = context;
	struct pop3_policy_msg_record rec = {
		.guid = ctx->guid,
		.uidl = ctx->uidl,
		.first_download = ctx->download,
	};
	struct pop3_policy_uidl_record urec = { .guid = ctx->guid };
	int ret;

	if ((ret = pop3_policy_env_msg_put(env, txn, &rec, error_r)) != 0)
		return ret;
	return pop3_policy_env_uidl_put(env, txn, ctx->uidl, &urec, error_r);
}

static int test_count_iter(const struct pop3_policy_msg_record *rec,
			   const char *error, void *context)
{
	unsigned int *count = context;

	if (rec != NULL)
		(*count)++;
	return 0;
}

static void test_env_open_share(void)
{
	struct pop3_policy_env *env1, *env2, *env3;
	const char *path = test_path("a.mdb"), *error;
	struct stat st;

	test_begin("pop3 policy env: shared per file, files only");
	test_assert(pop3_policy_env_open(path, 0600, &env1, &error) == 0);
	test_assert(pop3_policy_env_open(path, 0600, &env2, &error) == 0);
	/* LMDB forbids a second open of one environment in a process */
	test_assert(env1 == env2);
	test_assert(pop3_policy_env_open_count() == 1);
	/* another name for the same file is the same environment */
	test_assert(symlink(path, test_path("link.mdb")) == 0);
	test_assert(pop3_policy_env_open(test_path("link.mdb"), 0600,
					 &env3, &error) == 0);
	test_assert(env3 == env1);
	pop3_policy_env_unref(&env3);

	test_assert(stat(path, &st) == 0 && S_ISREG(st.st_mode));
	test_assert((st.st_mode & 0777) == 0600);
	test_assert(stat(t_strconcat(path, POP3_POLICY_ENV_LOCK_SUFFIX, NULL),
			 &st) == 0 && S_ISREG(st.st_mode));
	pop3_policy_env_unref(&env1);
	test_assert(pop3_policy_env_open_count() == 1);
	pop3_policy_env_unref(&env2);
	test_assert(env2 == NULL);
	test_assert(pop3_policy_env_open_count() == 0);
	test_end();
}

static void test_env_records(void)
{
	struct pop3_policy_env *env;
	struct pop3_policy_msg_record rec;
	struct pop3_policy_uidl_record urec;
	struct test_write_ctx wctx = {
		.guid = "guid-1", .uidl = "uidl-1", .download = 1700000000,
	};
	const char *path = test_path("b.mdb"), *error, *keyword;
	unsigned int count = 0;
	MDB_txn *txn;

	test_begin("pop3 policy env: records");
	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);
	test_assert(pop3_policy_env_write(env, test_write, &wctx,
					  &error) == 0);
	wctx.guid = "guid-2";
	wctx.uidl = "uidl-2";
	wctx.download = 0;
	test_assert(pop3_policy_env_write(env, test_write, &wctx,
					  &error) == 0);

	test_assert(pop3_policy_env_read_begin(env, &txn, &error) == 0);
	test_assert(pop3_policy_env_msg_get(env, txn, "guid-1", &rec,
					    &error) == 1);
	test_assert_strcmp(rec.uidl, "uidl-1");
	test_assert(rec.first_download == 1700000000);
	test_assert(pop3_policy_env_msg_get(env, txn, "nope", &rec,
					    &error) == 0);
	test_assert(pop3_policy_env_uidl_get(env, txn, "uidl-2", &urec,
					     &error) == 1);
	test_assert_strcmp(urec.guid, "guid-2");
	test_assert(pop3_policy_env_flag_get(env, txn, &keyword,
					     &error) == 0);
	/* a read and an iteration can overlap (MDB_NOTLS) */
	test_assert(pop3_policy_env_msg_iter(env, test_count_iter, &count,
					     &error) == 0);
	test_assert(count == 2);
	pop3_policy_env_read_end(env, &txn);
	test_assert(env->open_txns == 0);
	pop3_policy_env_unref(&env);

	/* reopened from disk */
	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);
	test_assert(pop3_policy_env_read_begin(env, &txn, &error) == 0);
	test_assert(pop3_policy_env_msg_get(env, txn, "guid-2", &rec,
					    &error) == 1);
	test_assert(rec.first_download == 0);
	pop3_policy_env_read_end(env, &txn);
	pop3_policy_env_unref(&env);
	test_end();
}

struct test_bulk_ctx {
	unsigned int start, count;
};

static int test_bulk_write(struct pop3_policy_env *env, MDB_txn *txn,
			   void *context, const char **error_r)
{
	struct test_bulk_ctx *ctx = context;
	struct pop3_policy_msg_record rec;
	unsigned int i;
	int ret = 0;

	for (i = 0; i < ctx->count && ret == 0; i++) T_BEGIN {
		i_zero(&rec);
		rec.guid = t_strdup_printf("%0200u", ctx->start + i);
		rec.uidl = t_strdup_printf("u%u", ctx->start + i);
		ret = pop3_policy_env_msg_put(env, txn, &rec, error_r);
	} T_END_PASS_STR_IF(ret != 0, error_r);
	return ret;
}

static void test_env_growth(void)
{
	struct pop3_policy_env *env;
	struct test_bulk_ctx ctx = { .count = 20000 };
	const char *path = test_path("c.mdb"), *error;
	unsigned int count = 0;
	uint64_t initial;

	test_begin("pop3 policy env: map grows when full");
	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);
	initial = env->map_size;
	/* 20,000 records of ~230 bytes in one transaction: over 8 MiB
	   with the B-tree overhead */
	for (ctx.start = 0; ctx.start < 60000; ctx.start += ctx.count) {
		test_assert(pop3_policy_env_write(env, test_bulk_write, &ctx,
						  &error) == 0);
	}
	test_assert(env->map_size > initial);
	test_assert(pop3_policy_env_msg_iter(env, test_count_iter, &count,
					     &error) == 0);
	test_assert(count == 60000);
	pop3_policy_env_unref(&env);
	test_end();
}

/* --- the "downloads" index and forgetting --- */

struct test_due_ctx {
	unsigned int calls, errors;
	uint64_t last;
	bool ordered;
	/* copies: the records live only as long as the callback */
	char guids[8][512];
};

static int test_due_iter(const struct pop3_policy_msg_record *rec,
			 const char *error, void *context)
{
	struct test_due_ctx *ctx = context;

	if (rec == NULL) {
		ctx->errors++;
		return 0;
	}
	if (rec->first_download < ctx->last)
		ctx->ordered = FALSE;
	ctx->last = rec->first_download;
	if (ctx->calls < N_ELEMENTS(ctx->guids))
		i_strocpy(ctx->guids[ctx->calls], rec->guid,
			  sizeof(ctx->guids[0]));
	ctx->calls++;
	return 0;
}

static unsigned int
test_due(struct pop3_policy_env *env, unsigned int keep_days, time_t now,
	 struct test_due_ctx *ctx_r)
{
	const char *error;

	i_zero(ctx_r);
	ctx_r->ordered = TRUE;
	test_assert(pop3_policy_env_due_iter(env, keep_days, now,
					     test_due_iter, ctx_r,
					     &error) == 0);
	return ctx_r->calls;
}

#define TEST_T0 1700000000ULL
#define TEST_DAY ((uint64_t)POP3_POLICY_SECS_PER_DAY)

/* 5000 records, download times spread over 5000 days in an order that
   isn't the key order, every third never downloaded */
static int test_history_write(struct pop3_policy_env *env, MDB_txn *txn,
			      void *context ATTR_UNUSED,
			      const char **error_r)
{
	struct pop3_policy_msg_record rec;
	unsigned int i;
	int ret = 0;

	for (i = 0; i < 5000 && ret == 0; i++) T_BEGIN {
		i_zero(&rec);
		rec.guid = t_strdup_printf("guid-%05u", i);
		rec.uidl = "";
		rec.first_download = i % 3 == 0 ? 0 :
			TEST_T0 + (uint64_t)((i * 7919) % 5000) * TEST_DAY;
		ret = pop3_policy_env_msg_put(env, txn, &rec, error_r);
	} T_END_PASS_STR_IF(ret != 0, error_r);
	return ret;
}

struct test_del_ctx {
	const char *guid;
	uint64_t new_download;
	bool del;
};

static int test_change_write(struct pop3_policy_env *env, MDB_txn *txn,
			     void *context, const char **error_r)
{
	struct test_del_ctx *ctx = context;
	struct pop3_policy_msg_record rec;
	int ret;

	if (ctx->del)
		return pop3_policy_env_msg_del(env, txn, ctx->guid, error_r);
	ret = pop3_policy_env_msg_get(env, txn, ctx->guid, &rec, error_r);
	if (ret <= 0)
		return MDB_NOTFOUND;
	rec.first_download = ctx->new_download;
	return pop3_policy_env_msg_put(env, txn, &rec, error_r);
}

static void test_env_due_index(void)
{
	struct pop3_policy_env *env;
	struct test_due_ctx due;
	struct test_del_ctx change;
	const char *path = test_path("due.mdb"), *error;
	unsigned int days;
	MDB_txn *txn;
	MDB_val key, val;
	buffer_t *buf, *vbuf;

	test_begin("pop3 policy env: keep_days reads only what is due");
	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);
	test_assert(pop3_policy_env_write(env, test_history_write, NULL,
					  &error) == 0);
	/* nothing due: no record is visited, however many there are */
	test_assert(test_due(env, 30, TEST_T0 + 29 * TEST_DAY, &due) == 0);
	test_assert(test_due(env, 0, TEST_T0 + 9999 * TEST_DAY, &due) == 0);
	/* downloads at T0 + d days for d in 0..4999 (downloaded ones
	   only): with keep_days=30 at T0 + 32 days, d <= 2 are due */
	days = test_due(env, 30, TEST_T0 + 32 * TEST_DAY, &due);
	test_assert(days >= 1 && days <= 3);
	test_assert(due.ordered && due.errors == 0);
	/* everything downloaded: 2/3 of 5000, in time order */
	test_assert(test_due(env, 1, TEST_T0 + 6000 * TEST_DAY, &due) ==
		    5000 - 1667);
	test_assert(due.ordered);

	/* drop one due message: its index entry goes with it */
	test_assert(test_due(env, 30, TEST_T0 + 32 * TEST_DAY, &due) == days);
	i_zero(&change);
	change.guid = t_strdup(due.guids[0]);
	change.del = TRUE;
	test_assert(pop3_policy_env_write(env, test_change_write, &change,
					  &error) == 0);
	test_assert(test_due(env, 30, TEST_T0 + 32 * TEST_DAY, &due) ==
		    days - 1);
	/* a changed download time moves the entry */
	if (days > 1) {
		change.guid = t_strdup(due.guids[0]);
		change.del = FALSE;
		change.new_download = TEST_T0 + 9000 * TEST_DAY;
		test_assert(pop3_policy_env_write(env, test_change_write,
						  &change, &error) == 0);
		test_assert(test_due(env, 30, TEST_T0 + 32 * TEST_DAY,
				     &due) == days - 2);
		test_assert(test_due(env, 1, TEST_T0 + 9001 * TEST_DAY,
				     &due) == 5000 - 1667 - 1);
		test_assert(strcmp(due.guids[0], change.guid) != 0);
	}

	/* an index entry without its record (a damaged file) is reported
	   and dropped, and doesn't stop the pass */
	buf = t_buffer_create(64);
	pop3_policy_download_key_encode(buf, TEST_T0 - TEST_DAY, "nosuch");
	vbuf = t_buffer_create(8);
	pop3_policy_download_value_encode(vbuf, buf->data, buf->used);
	test_assert(mdb_txn_begin(env->env, NULL, 0, &txn) == 0);
	key.mv_data = (void *)buf->data;
	key.mv_size = buf->used;
	val.mv_data = (void *)vbuf->data;
	val.mv_size = vbuf->used;
	test_assert(mdb_put(txn, env->dbi_downloads, &key, &val, 0) == 0);
	test_assert(mdb_txn_commit(txn) == 0);
	test_assert(test_due(env, 30, TEST_T0 + 32 * TEST_DAY, &due) ==
		    days - 2 + (days > 1 ? 0 : 1));
	test_assert(due.errors == 1);
	(void)test_due(env, 30, TEST_T0 + 32 * TEST_DAY, &due);
	test_assert(due.errors == 0);
	test_assert(env->open_txns == 0);
	pop3_policy_env_unref(&env);
	test_end();
}

/* --- schema 1, as the module before the "downloads" index wrote it --- */

static void test_v1_put(MDB_txn *txn, MDB_dbi dbi, const void *key,
			size_t key_size, const buffer_t *buf)
{
	MDB_val k, v;

	k.mv_data = (void *)key;
	k.mv_size = key_size;
	v.mv_data = (void *)buf->data;
	v.mv_size = buf->used;
	test_assert(mdb_put(txn, dbi, &k, &v, 0) == 0);
}

/* What pop3-policy-env.c of schemas 1 and 2 wrote, with version-1
   values from test-pop3-policy-v1.h (no CRC): MDB_NOTLS | MDB_NOSUBDIR,
   an 8 MiB map, DBIs meta, msgs and uidls (schema 2: and downloads, the
   index, and the meta keys sweep and deleted-flag). */
static void test_write_v1_env(const char *path, uint32_t schema_version)
{
	struct pop3_policy_msg_record rec;
	MDB_env *menv;
	MDB_txn *txn;
	MDB_dbi meta, msgs, uidls, downloads = 0;
	const char *key;
	buffer_t *buf = t_buffer_create(128), *dkey = t_buffer_create(64);
	unsigned int i;

	test_assert(mdb_env_create(&menv) == 0);
	(void)mdb_env_set_maxdbs(menv, 4);
	(void)mdb_env_set_mapsize(menv, 8 * 1024 * 1024);
	test_assert(mdb_env_open(menv, path, MDB_NOTLS | MDB_NOSUBDIR,
				 0600) == 0);
	test_assert(mdb_txn_begin(menv, NULL, 0, &txn) == 0);
	test_assert(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta) == 0);
	test_assert(mdb_dbi_open(txn, "msgs", MDB_CREATE, &msgs) == 0);
	test_assert(mdb_dbi_open(txn, "uidls", MDB_CREATE, &uidls) == 0);
	if (schema_version >= 2) {
		test_assert(mdb_dbi_open(txn, "downloads", MDB_CREATE,
					 &downloads) == 0);
	}
	test_v1_schema_encode(buf, schema_version, 1600000000);
	test_v1_put(txn, meta, "schema", 6, buf);
	if (schema_version >= 2) {
		buffer_set_used_size(buf, 0);
		test_v1_sweep_encode(buf, TEST_T0 - 77);
		test_v1_put(txn, meta, "sweep", 5, buf);
		buffer_set_used_size(buf, 0);
		test_v1_flag_encode(buf, "$POP3Deleted");
		test_v1_put(txn, meta, "deleted-flag", 12, buf);
	}
	for (i = 0; i < 6; i++) {
		i_zero(&rec);
		/* one GUID too long to be a key: keyed by its digest */
		rec.guid = i == 5 ? t_strdup_printf("%0450u", i) :
			t_strdup_printf("v1-guid-%u", i);
		rec.uidl = t_strdup_printf("v1-uidl-%u", i);
		/* 0, 2 and 4 downloaded, at T0 + i days */
		rec.first_download = i % 2 == 0 ? TEST_T0 + i * TEST_DAY : 0;
		if (i == 5)
			rec.first_download = TEST_T0 + 1;
		rec.flags = i == 3 ? POP3_POLICY_MSG_FLAG_HIDDEN : 0;
		buffer_set_used_size(buf, 0);
		test_v1_msg_encode(buf, &rec);
		key = pop3_policy_msg_key(rec.guid);
		test_v1_put(txn, msgs, key, strlen(key), buf);
		buffer_set_used_size(buf, 0);
		test_v1_uidl_encode(buf, rec.guid);
		test_v1_put(txn, uidls, rec.uidl, strlen(rec.uidl), buf);
		if (schema_version >= 2 && rec.first_download != 0) {
			buffer_set_used_size(dkey, 0);
			pop3_policy_download_key_encode(dkey,
				rec.first_download, key);
			buffer_set_used_size(buf, 0);
			test_v1_download_value_encode(buf);
			test_v1_put(txn, downloads, dkey->data, dkey->used,
				    buf);
		}
	}
	test_assert(mdb_txn_commit(txn) == 0);
	mdb_env_close(menv);
}

/* Replace the schema record of a closed file with a version-2 one */
static void test_write_schema(const char *path, uint32_t schema_version)
{
	struct pop3_policy_schema_record srec = {
		.schema_version = schema_version,
		.created = 1600000000,
	};
	buffer_t *buf = t_buffer_create(32);
	MDB_env *menv;
	MDB_txn *txn;
	MDB_dbi meta;

	test_assert(mdb_env_create(&menv) == 0);
	(void)mdb_env_set_maxdbs(menv, 4);
	test_assert(mdb_env_open(menv, path, MDB_NOTLS | MDB_NOSUBDIR,
				 0600) == 0);
	test_assert(mdb_txn_begin(menv, NULL, 0, &txn) == 0);
	test_assert(mdb_dbi_open(txn, "meta", 0, &meta) == 0);
	pop3_policy_schema_record_encode(buf, &srec);
	test_v1_put(txn, meta, "schema", 6, buf);
	test_assert(mdb_txn_commit(txn) == 0);
	mdb_env_close(menv);
}

/* Every value of every DBI starts with version byte 2 */
static unsigned int test_count_v1_values(struct pop3_policy_env *env)
{
	MDB_dbi dbis[] = {
		env->dbi_meta, env->dbi_msgs, env->dbi_uidls,
		env->dbi_downloads
	};
	MDB_cursor *cursor;
	MDB_txn *txn;
	MDB_val key, val;
	unsigned int i, v1 = 0, total = 0;

	test_assert(mdb_txn_begin(env->env, NULL, MDB_RDONLY, &txn) == 0);
	for (i = 0; i < N_ELEMENTS(dbis); i++) {
		test_assert(mdb_cursor_open(txn, dbis[i], &cursor) == 0);
		while (mdb_cursor_get(cursor, &key, &val, MDB_NEXT) == 0) {
			total++;
			if (val.mv_size == 0 ||
			    *(const uint8_t *)val.mv_data !=
			    POP3_POLICY_RECORD_VERSION)
				v1++;
		}
		mdb_cursor_close(cursor);
	}
	mdb_txn_abort(txn);
	test_assert(total > 0);
	return v1;
}

/* Schema 2 (version-1 values, with the downloads index and the meta
   records) converts to schema 3 on open: every value is version 2 and
   reads back what was written. */
static void test_env_upgrade_v2(void)
{
	struct pop3_policy_env *env;
	struct pop3_policy_msg_record rec;
	struct pop3_policy_uidl_record urec;
	struct test_due_ctx due;
	const char *path = test_path("v2.mdb"), *error, *keyword, *guid;
	uint64_t last_sweep;
	unsigned int i, count = 0;
	MDB_txn *txn;

	test_begin("pop3 policy env: schema 2 is converted to 3 on open");
	test_write_v1_env(path, 2);
	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);
	test_assert(env->conversion_report != NULL &&
		    strstr(env->conversion_report,
			   "converted from schema 2 to 3") != NULL);
	test_assert(env->conversion_damaged == 0);
	test_assert(test_count_v1_values(env) == 0);

	test_assert(pop3_policy_env_read_begin(env, &txn, &error) == 0);
	for (i = 0; i < 6; i++) {
		guid = i == 5 ? t_strdup_printf("%0450u", i) :
			t_strdup_printf("v1-guid-%u", i);
		test_assert_idx(pop3_policy_env_msg_get(env, txn, guid, &rec,
							&error) == 1, i);
		test_assert_strcmp_idx(rec.guid, guid, i);
		test_assert_strcmp_idx(rec.uidl,
				       t_strdup_printf("v1-uidl-%u", i), i);
		test_assert_idx(rec.first_download ==
				(i == 5 ? TEST_T0 + 1 : i % 2 == 0 ?
				 TEST_T0 + i * TEST_DAY : 0), i);
		test_assert_idx(rec.flags == (i == 3 ?
				POP3_POLICY_MSG_FLAG_HIDDEN : 0), i);
		test_assert_idx(pop3_policy_env_uidl_get(env, txn,
				t_strdup_printf("v1-uidl-%u", i), &urec,
				&error) == 1, i);
		test_assert_strcmp_idx(urec.guid, guid, i);
	}
	test_assert(pop3_policy_env_flag_get(env, txn, &keyword,
					     &error) == 1);
	test_assert_strcmp(keyword, "$POP3Deleted");
	test_assert(pop3_policy_env_sweep_get(env, txn, &last_sweep,
					      &error) == 1);
	test_assert(last_sweep == TEST_T0 - 77);
	pop3_policy_env_read_end(env, &txn);
	/* the index entries were converted too, not rebuilt: all valid */
	test_assert(test_due(env, 1, TEST_T0 + 10 * TEST_DAY, &due) == 4);
	test_assert(due.ordered && due.errors == 0);
	test_assert(pop3_policy_env_msg_iter(env, test_count_iter, &count,
					     &error) == 0);
	test_assert(count == 6);
	pop3_policy_env_unref(&env);

	/* converted once: reopening finds schema 3 and reports nothing */
	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);
	test_assert(env->conversion_report == NULL);
	pop3_policy_env_unref(&env);
	test_end();
}

/* A schema-2 file with version-1 values that don't decode (damaged
   before the conversion): they are left as they were, counted, and
   every reader refuses them afterwards; the others are converted. */
static void test_env_upgrade_v2_damaged(void)
{
	struct pop3_policy_env *env;
	struct pop3_policy_msg_record rec;
	struct test_due_ctx due;
	const char *path = test_path("v2-damaged.mdb"), *error, *damage;
	const char *key;
	unsigned int count = 0;
	MDB_env *menv;
	MDB_txn *txn;
	MDB_dbi msgs;
	MDB_val k, v;

	test_begin("pop3 policy env: schema 2 conversion leaves damage");
	test_write_v1_env(path, 2);
	test_assert(mdb_env_create(&menv) == 0);
	(void)mdb_env_set_maxdbs(menv, 4);
	test_assert(mdb_env_open(menv, path, MDB_NOTLS | MDB_NOSUBDIR,
				 0600) == 0);
	test_assert(mdb_txn_begin(menv, NULL, 0, &txn) == 0);
	test_assert(mdb_dbi_open(txn, "msgs", 0, &msgs) == 0);
	/* v1-guid-2 (downloaded): cut short by one byte */
	key = "v1-guid-2";
	k.mv_data = (void *)key;
	k.mv_size = strlen(key);
	test_assert(mdb_get(txn, msgs, &k, &v) == 0);
	v.mv_size--;
	v.mv_data = test_memdup(v.mv_data, v.mv_size);
	test_assert(mdb_put(txn, msgs, &k, &v, 0) == 0);
	test_assert(mdb_txn_commit(txn) == 0);
	mdb_env_close(menv);

	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);
	test_assert(env->conversion_damaged == 1);
	test_assert(env->conversion_report != NULL &&
		    strstr(env->conversion_report, "msgs record") != NULL);
	test_assert(test_count_v1_values(env) == 1);
	test_assert(pop3_policy_env_read_begin(env, &txn, &error) == 0);
	test_assert(pop3_policy_env_msg_get(env, txn, "v1-guid-2", &rec,
					    &error) < 0);
	test_assert(pop3_policy_env_msg_lookup(env, txn, "v1-guid-2", &rec,
					       &damage, &error) == 0);
	test_assert(damage != NULL && strstr(damage, "version-1") != NULL);
	pop3_policy_env_read_end(env, &txn);
	/* keep_days is never told it is due: reported instead */
	test_assert(test_due(env, 1, TEST_T0 + 10 * TEST_DAY, &due) == 3);
	test_assert(due.errors == 1);
	test_assert(pop3_policy_env_msg_iter(env, test_count_iter, &count,
					     &error) == 0);
	test_assert(count == 5);
	pop3_policy_env_unref(&env);
	test_end();
}

static void test_env_upgrade_v1(void)
{
	struct pop3_policy_env *env;
	struct pop3_policy_schema_record srec;
	struct pop3_policy_msg_record rec;
	struct test_due_ctx due;
	const char *path = test_path("v1.mdb"), *error;
	unsigned int count = 0;
	MDB_txn *txn;
	MDB_val key, val;

	test_begin("pop3 policy env: schema 1 is converted on open");
	test_write_v1_env(path, 1);
	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);

	test_assert(mdb_txn_begin(env->env, NULL, MDB_RDONLY, &txn) == 0);
	key.mv_data = (void *)"schema";
	key.mv_size = 6;
	test_assert(mdb_get(txn, env->dbi_meta, &key, &val) == 0);
	test_assert(pop3_policy_schema_record_decode(val.mv_data, val.mv_size,
						     &srec, &error));
	test_assert(srec.schema_version == POP3_POLICY_SCHEMA_VERSION);
	test_assert(srec.schema_version == 3);
	test_assert(test_count_v1_values(env) == 0);
	/* the creation time is the old one */
	test_assert(srec.created == 1600000000);
	mdb_txn_abort(txn);

	/* every downloaded message is in the index, oldest first: v1-5
	   (T0+1s, digest key), v1-0 (T0), v1-2, v1-4 */
	test_assert(test_due(env, 1, TEST_T0 + 10 * TEST_DAY, &due) == 4);
	test_assert(due.ordered && due.errors == 0);
	test_assert_strcmp(due.guids[0], "v1-guid-0");
	test_assert(strlen(due.guids[1]) == 450);
	test_assert_strcmp(due.guids[2], "v1-guid-2");
	test_assert_strcmp(due.guids[3], "v1-guid-4");
	test_assert(test_due(env, 1, TEST_T0 + 3 * TEST_DAY, &due) == 3);

	/* the old records and reservations are all still there */
	test_assert(pop3_policy_env_msg_iter(env, test_count_iter, &count,
					     &error) == 0);
	test_assert(count == 6);
	test_assert(pop3_policy_env_read_begin(env, &txn, &error) == 0);
	test_assert(pop3_policy_env_msg_get(env, txn, "v1-guid-3", &rec,
					    &error) == 1);
	test_assert_strcmp(rec.uidl, "v1-uidl-3");
	test_assert(rec.first_download == 0);
	pop3_policy_env_read_end(env, &txn);
	pop3_policy_env_unref(&env);

	/* converted once: reopening finds schema 3 */
	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);
	test_assert(test_due(env, 1, TEST_T0 + 10 * TEST_DAY, &due) == 4);
	pop3_policy_env_unref(&env);

	/* a newer schema than this module knows is refused */
	test_write_v1_env(test_path("v9.mdb"), 2);
	test_write_schema(test_path("v9.mdb"), 9);
	test_assert(pop3_policy_env_open(test_path("v9.mdb"), 0600, &env,
					 &error) < 0);
	test_assert(strstr(error, "schema version 9, this module knows only "
			   "up to 3: upgrade the module") != NULL);
	/* a version-1 schema record claiming schema 3 or later never was
	   written by any module: damaged */
	test_write_v1_env(test_path("v1-9.mdb"), 9);
	test_assert(pop3_policy_env_open(test_path("v1-9.mdb"), 0600, &env,
					 &error) < 0);
	test_assert(strstr(error, "corrupted schema record") != NULL);
	test_assert(pop3_policy_env_open_count() == 0);
	test_end();
}

/* A schema-1 file with message records under keys the plugin never
   writes (a damaged file, or another tool's): downloaded records keyed
   by 401 and 505 bytes (a downloads key of 513 bytes is beyond LMDB's
   511) and by a key with a NUL. The conversion leaves them alone
   instead of failing the open. */
static void test_env_upgrade_v1_foreign_keys(void)
{
	static const size_t key_sizes[] = { 401, 505, 9 };
	struct pop3_policy_env *env;
	struct pop3_policy_msg_record rec;
	struct test_due_ctx due;
	const char *path = test_path("v1-keys.mdb"), *error;
	unsigned int i, count = 0;
	buffer_t *buf = t_buffer_create(128);
	MDB_env *menv;
	MDB_txn *txn;
	MDB_dbi msgs;
	char key[505];

	test_begin("pop3 policy env: schema 1 conversion, foreign msgs keys");
	test_write_v1_env(path, 1);
	test_assert(mdb_env_create(&menv) == 0);
	(void)mdb_env_set_maxdbs(menv, 4);
	test_assert(mdb_env_open(menv, path, MDB_NOTLS | MDB_NOSUBDIR,
				 0600) == 0);
	test_assert(mdb_txn_begin(menv, NULL, 0, &txn) == 0);
	test_assert(mdb_dbi_open(txn, "msgs", 0, &msgs) == 0);
	for (i = 0; i < N_ELEMENTS(key_sizes); i++) {
		i_zero(&rec);
		rec.guid = t_strdup_printf("foreign-%u", i);
		rec.first_download = TEST_T0 + 2;
		buffer_set_used_size(buf, 0);
		test_v1_msg_encode(buf, &rec);
		memset(key, 'k' + i, sizeof(key));
		if (i == 2)
			key[4] = '\0';
		test_v1_put(txn, msgs, key, key_sizes[i], buf);
	}
	test_assert(mdb_txn_commit(txn) == 0);
	mdb_env_close(menv);

	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);
	/* the records are still there, and only the plugin's own are
	   indexed */
	test_assert(pop3_policy_env_msg_iter(env, test_count_iter, &count,
					     &error) == 0);
	test_assert(count == 6 + N_ELEMENTS(key_sizes));
	test_assert(test_due(env, 1, TEST_T0 + 10 * TEST_DAY, &due) == 4);
	test_assert(due.ordered && due.errors == 0);
	pop3_policy_env_unref(&env);
	test_assert(pop3_policy_env_open_count() == 0);
	test_end();
}

static int test_meta_write(struct pop3_policy_env *env, MDB_txn *txn,
			   void *context ATTR_UNUSED, const char **error_r)
{
	int ret;

	if ((ret = pop3_policy_env_flag_put(env, txn, "$POP3Deleted",
					    error_r)) != 0)
		return ret;
	return pop3_policy_env_sweep_put(env, txn, TEST_T0, error_r);
}

/* Change one byte of the value under key in dbi (xor mask) */
static void test_flip(struct pop3_policy_env *env, MDB_dbi dbi,
		      const void *key, size_t key_size, size_t offset,
		      uint8_t mask)
{
	MDB_txn *txn;
	MDB_val k, v;
	unsigned char *copy;

	k.mv_data = (void *)key;
	k.mv_size = key_size;
	test_assert(mdb_txn_begin(env->env, NULL, 0, &txn) == 0);
	test_assert(mdb_get(txn, dbi, &k, &v) == 0);
	test_assert(offset < v.mv_size);
	copy = test_memdup(v.mv_data, v.mv_size);
	copy[offset] ^= mask;
	v.mv_data = copy;
	test_assert(mdb_put(txn, dbi, &k, &v, 0) == 0);
	test_assert(mdb_txn_commit(txn) == 0);
}

/* Move the downloads entry of msg_key from one time to another, its
   value unchanged: a key damaged in place */
static void test_move_download(struct pop3_policy_env *env,
			       const char *msg_key, uint64_t from,
			       uint64_t to)
{
	buffer_t *a = t_buffer_create(64), *b = t_buffer_create(64);
	MDB_txn *txn;
	MDB_val k, v;
	void *value;

	pop3_policy_download_key_encode(a, from, msg_key);
	pop3_policy_download_key_encode(b, to, msg_key);
	test_assert(mdb_txn_begin(env->env, NULL, 0, &txn) == 0);
	k.mv_data = (void *)a->data;
	k.mv_size = a->used;
	test_assert(mdb_get(txn, env->dbi_downloads, &k, &v) == 0);
	value = test_memdup(v.mv_data, v.mv_size);
	test_assert(mdb_del(txn, env->dbi_downloads, &k, NULL) == 0);
	k.mv_data = (void *)b->data;
	k.mv_size = b->used;
	v.mv_data = value;
	test_assert(mdb_put(txn, env->dbi_downloads, &k, &v, 0) == 0);
	test_assert(mdb_txn_commit(txn) == 0);
}

/* A flipped byte in any record is reported and never served: keep_days
   doesn't see a damaged message record or index entry as due, lookups
   fail (or say "damaged"), the iterators report it and go on. */
static void test_env_damage(void)
{
	struct pop3_policy_env *env;
	struct pop3_policy_msg_record rec;
	struct pop3_policy_uidl_record urec;
	struct test_write_ctx wctx;
	struct test_due_ctx due;
	const char *path = test_path("damage.mdb"), *error, *damage;
	const char *keyword;
	uint64_t last_sweep;
	unsigned int i, count = 0;
	MDB_txn *txn;

	test_begin("pop3 policy env: damaged records are never served");
	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);
	for (i = 0; i < 4; i++) {
		i_zero(&wctx);
		wctx.guid = t_strdup_printf("dmg-%u", i);
		wctx.uidl = t_strdup_printf("dmg-uidl-%u", i);
		wctx.download = TEST_T0 + i * TEST_DAY;
		test_assert(pop3_policy_env_write(env, test_write, &wctx,
						  &error) == 0);
	}
	test_assert(pop3_policy_env_write(env, test_meta_write, NULL,
					  &error) == 0);
	test_assert(test_due(env, 1, TEST_T0 + 10 * TEST_DAY, &due) == 4);

	/* dmg-1: a bit of its first download (u64 at 6..13); dmg-2: a bit
	   of its frozen UIDL */
	test_flip(env, env->dbi_msgs, "dmg-1", 5, 13, 0x01);
	test_flip(env, env->dbi_msgs, "dmg-2", 5, 17, 0x20);
	test_assert(pop3_policy_env_read_begin(env, &txn, &error) == 0);
	test_assert(pop3_policy_env_msg_get(env, txn, "dmg-1", &rec,
					    &error) < 0);
	test_assert(strstr(error, "checksum mismatch") != NULL);
	test_assert(pop3_policy_env_msg_lookup(env, txn, "dmg-2", &rec,
					       &damage, &error) == 0);
	test_assert(damage != NULL && strstr(damage, "dmg-2") != NULL);
	test_assert(pop3_policy_env_msg_lookup(env, txn, "dmg-0", &rec,
					       &damage, &error) == 1);
	test_assert(damage == NULL);
	pop3_policy_env_read_end(env, &txn);
	test_assert(test_due(env, 1, TEST_T0 + 10 * TEST_DAY, &due) == 2);
	test_assert(due.errors == 2);
	test_assert_strcmp(due.guids[0], "dmg-0");
	test_assert_strcmp(due.guids[1], "dmg-3");
	test_assert(pop3_policy_env_msg_iter(env, test_count_iter, &count,
					     &error) == 0);
	test_assert(count == 2);

	/* dmg-3's index entry moved to an earlier time (its key damaged):
	   reported, not served, and the pass goes on past it */
	test_move_download(env, "dmg-3", TEST_T0 + 3 * TEST_DAY,
			   TEST_T0 - 30 * TEST_DAY);
	test_assert(test_due(env, 1, TEST_T0 + 10 * TEST_DAY, &due) == 1);
	test_assert(due.errors == 3);
	test_assert_strcmp(due.guids[0], "dmg-0");
	/* and it stays (it is reported again, not dropped) */
	test_assert(test_due(env, 1, TEST_T0 + 10 * TEST_DAY, &due) == 1);
	test_assert(due.errors == 3);

	/* a reservation, the deleted flag, the sweep time */
	test_flip(env, env->dbi_uidls, "dmg-uidl-0", 10, 1, 0xff);
	test_flip(env, env->dbi_meta, POP3_POLICY_META_KEY_FLAG,
		  strlen(POP3_POLICY_META_KEY_FLAG), 7, 0x01);
	test_flip(env, env->dbi_meta, POP3_POLICY_META_KEY_SWEEP,
		  strlen(POP3_POLICY_META_KEY_SWEEP), 12, 0x80);
	test_assert(pop3_policy_env_read_begin(env, &txn, &error) == 0);
	test_assert(pop3_policy_env_uidl_get(env, txn, "dmg-uidl-0", &urec,
					     &error) < 0);
	test_assert(pop3_policy_env_uidl_get(env, txn, "dmg-uidl-1", &urec,
					     &error) == 1);
	test_assert(pop3_policy_env_flag_get(env, txn, &keyword,
					     &error) < 0);
	test_assert(pop3_policy_env_sweep_get(env, txn, &last_sweep,
					      &error) < 0);
	pop3_policy_env_read_end(env, &txn);
	pop3_policy_env_unref(&env);
	test_end();
}

/* test_run() deinitializes lib: clean up while it still works */
static void test_env_cleanup(void)
{
	const char *error;

	if (unlink_directory(test_dir, UNLINK_DIRECTORY_FLAG_RMDIR,
			     &error) < 0)
		i_error("%s", error);
}

int main(void)
{
	static void (*const tests[])(void) = {
		test_env_open_share,
		test_env_records,
		test_env_growth,
		test_env_due_index,
		test_env_upgrade_v1,
		test_env_upgrade_v1_foreign_keys,
		test_env_upgrade_v2,
		test_env_upgrade_v2_damaged,
		test_env_damage,
		test_env_cleanup,
		NULL
	};
	static char template[] = "/tmp/test-pop3-policy-env.XXXXXX";

	if (mkdtemp(template) == NULL)
		i_fatal("mkdtemp() failed: %m");
	test_dir = template;
	return test_run(tests);
}
