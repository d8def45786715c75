/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "unlink-directory.h"
#include "test-common.h"
#include "pop3-policy-env.h"

#include <stdlib.h>
#include <unistd.h>
#include <sys/stat.h>

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
		test_env_cleanup,
		NULL
	};
	static char template[] = "/tmp/test-pop3-policy-env.XXXXXX";

	if (mkdtemp(template) == NULL)
		i_fatal("mkdtemp() failed: %m");
	test_dir = template;
	return test_run(tests);
}
