/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "unlink-directory.h"
#include "test-common.h"
#include "pop3-policy-env.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/resource.h>

/* The policy environment's map under an address space limit (RLIMIT_AS,
   Dovecot's vsz_limit), in child processes so that the limit reaches no
   other test. */

static const char *test_dir;

static const char *test_path(const char *name)
{
	return t_strconcat(test_dir, "/", name, NULL);
}

static int test_count_iter(const struct pop3_policy_msg_record *rec,
			   const char *error ATTR_UNUSED, void *context)
{
	unsigned int *count = context;

	if (rec != NULL)
		(*count)++;
	return 0;
}

struct test_bulk_ctx {
	unsigned int start, count;
};

/* count records of ~230 bytes */
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

static uint64_t test_vsz(void)
{
	char buf[256];
	ssize_t len;
	int fd = open("/proc/self/statm", O_RDONLY);

	if (fd == -1)
		i_fatal("open(/proc/self/statm) failed: %m");
	len = read(fd, buf, sizeof(buf) - 1);
	i_close_fd(&fd);
	if (len <= 0)
		i_fatal("read(/proc/self/statm) failed");
	buf[len] = '\0';
	return strtoull(buf, NULL, 10) * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void test_set_as_limit(uint64_t limit)
{
	struct rlimit rl;

	rl.rlim_cur = limit;
	rl.rlim_max = RLIM_INFINITY;
	if (setrlimit(RLIMIT_AS, &rl) < 0)
		i_fatal("setrlimit(RLIMIT_AS) failed: %m");
}

/* Run func in a child process (an address space limit must not reach
   the other tests) and check that it exited with 0: a crash is a
   failure. */
static void test_in_child(bool (*func)(void))
{
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		i_fatal("fork() failed: %m");
	if (pid == 0)
		_exit(func() ? 0 : 1);
	if (waitpid(pid, &status, 0) < 0)
		i_fatal("waitpid() failed: %m");
	if (WIFSIGNALED(status)) {
		i_error("child killed by signal %d", WTERMSIG(status));
		test_assert(FALSE);
	} else {
		test_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
}

#define TEST_CHECK(expr) STMT_START { \
	if (!(expr)) { \
		i_error("%s:%d: failed: %s", __FILE__, __LINE__, #expr); \
		ok = FALSE; \
	} } STMT_END

static bool test_child_vsz_grow(void)
{
	struct pop3_policy_env *env;
	struct test_bulk_ctx ctx = { .count = 2000 };
	const char *error = NULL;
	unsigned int written = 0, count = 0;
	uint64_t map_before;
	bool ok = TRUE;
	int ret;

	/* room for a map of about 24 MiB besides the margin */
	test_set_as_limit(test_vsz() + POP3_POLICY_ENV_VSZ_MARGIN +
			  24 * 1024 * 1024);
	TEST_CHECK(pop3_policy_env_open(test_path("vsz.mdb"), 0600, &env,
					&error) == 0);
	if (!ok)
		return FALSE;
	/* ~230 bytes per record: 24 MiB hold about 80,000; 400,000 don't */
	for (ctx.start = 0; ctx.start < 400000; ctx.start += ctx.count) {
		ret = pop3_policy_env_write(env, test_bulk_write, &ctx,
					    &error);
		if (ret != 0)
			break;
		written += ctx.count;
	}
	TEST_CHECK(ctx.start < 400000);
	TEST_CHECK(written >= 20000);
	TEST_CHECK(error != NULL && strstr(error, "vsz_limit") != NULL);
	if (error != NULL)
		i_info("refused as expected: %s", error);
	/* still mapped and readable: nothing committed is lost */
	TEST_CHECK(env->env != NULL);
	TEST_CHECK(pop3_policy_env_msg_iter(env, test_count_iter, &count,
					    &error) == 0);
	TEST_CHECK(count == written);
	/* refused again, cleanly, and the map didn't move */
	map_before = env->map_size;
	TEST_CHECK(pop3_policy_env_write(env, test_bulk_write, &ctx,
					 &error) != 0);
	TEST_CHECK(env->map_size == map_before);
	/* with more room it grows again */
	test_set_as_limit(RLIM_INFINITY);
	TEST_CHECK(pop3_policy_env_write(env, test_bulk_write, &ctx,
					 &error) == 0);
	TEST_CHECK(env->map_size > map_before);
	pop3_policy_env_unref(&env);
	return ok;
}

static void test_env_vsz_limit(void)
{
	test_begin("pop3 policy env: the map stays within RLIMIT_AS");
	test_in_child(test_child_vsz_grow);
	test_end();
}

static int test_sync_fds[2][2];

static void test_sync_send(int fd)
{
	if (write(fd, "x", 1) != 1)
		i_fatal("write(pipe) failed: %m");
}

static void test_sync_wait(int fd)
{
	char c;

	if (read(fd, &c, 1) != 1)
		i_fatal("read(pipe) failed: %m");
}

/* Opens the environment under a small address space limit, then reads
   after the parent (unlimited) grew the file: first within what fits
   (followed), then beyond it (a clean error, every time). */
static bool test_child_follow(void)
{
	struct pop3_policy_env *env;
	const char *error = NULL;
	unsigned int count = 0;
	MDB_txn *txn;
	bool ok = TRUE;

	test_set_as_limit(test_vsz() + POP3_POLICY_ENV_VSZ_MARGIN +
			  40 * 1024 * 1024);
	TEST_CHECK(pop3_policy_env_open(test_path("follow.mdb"), 0600, &env,
					&error) == 0);
	if (!ok)
		return FALSE;
	test_sync_send(test_sync_fds[0][1]);
	test_sync_wait(test_sync_fds[1][0]);
	/* the parent wrote ~12 MiB: followed */
	TEST_CHECK(pop3_policy_env_msg_iter(env, test_count_iter, &count,
					    &error) == 0);
	TEST_CHECK(count == 40000);
	TEST_CHECK(env->map_size > POP3_POLICY_ENV_MAP_INITIAL);
	test_sync_send(test_sync_fds[0][1]);
	test_sync_wait(test_sync_fds[1][0]);
	/* now ~90 MiB: can't follow, refused cleanly, twice */
	TEST_CHECK(pop3_policy_env_read_begin(env, &txn, &error) < 0);
	TEST_CHECK(error != NULL && strstr(error, "vsz_limit") != NULL);
	if (error != NULL)
		i_info("refused as expected: %s", error);
	error = NULL;
	TEST_CHECK(pop3_policy_env_read_begin(env, &txn, &error) < 0);
	TEST_CHECK(error != NULL && strstr(error, "vsz_limit") != NULL);
	TEST_CHECK(env->open_txns == 0);
	pop3_policy_env_unref(&env);
	return ok;
}

static void test_env_follow_limit(void)
{
	struct pop3_policy_env *env;
	struct test_bulk_ctx ctx = { .count = 20000 };
	const char *path = test_path("follow.mdb"), *error;
	int status;
	pid_t pid;

	test_begin("pop3 policy env: another process's growth is followed "
		   "as far as it fits");
	/* created here, but closed before the fork: an MDB_env must not
	   be used across fork() */
	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);
	pop3_policy_env_unref(&env);
	if (pipe(test_sync_fds[0]) < 0 || pipe(test_sync_fds[1]) < 0)
		i_fatal("pipe() failed: %m");
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		i_fatal("fork() failed: %m");
	if (pid == 0)
		_exit(test_child_follow() ? 0 : 1);
	test_sync_wait(test_sync_fds[0][0]);
	test_assert(pop3_policy_env_open(path, 0600, &env, &error) == 0);
	for (ctx.start = 0; ctx.start < 40000; ctx.start += ctx.count)
		test_assert(pop3_policy_env_write(env, test_bulk_write, &ctx,
						  &error) == 0);
	test_sync_send(test_sync_fds[1][1]);
	test_sync_wait(test_sync_fds[0][0]);
	for (; ctx.start < 400000; ctx.start += ctx.count)
		test_assert(pop3_policy_env_write(env, test_bulk_write, &ctx,
						  &error) == 0);
	test_sync_send(test_sync_fds[1][1]);
	if (waitpid(pid, &status, 0) < 0)
		i_fatal("waitpid() failed: %m");
	test_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (WIFSIGNALED(status))
		i_error("child killed by signal %d", WTERMSIG(status));
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
		test_env_vsz_limit,
		test_env_follow_limit,
		test_env_cleanup,
		NULL
	};
	static char template[] = "/tmp/test-pop3-policy-env-limit.XXXXXX";

	if (mkdtemp(template) == NULL)
		i_fatal("mkdtemp() failed: %m");
	test_dir = template;
	return test_run(tests);
}
