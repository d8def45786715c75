/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "istream-private.h"
#include "ostream.h"
#include "ostream-null.h"
#include "mkdir-parents.h"
#include "module-context.h"
#include "mail-user.h"
#include "mail-error.h"
#include "pop3-common.h"
#include "pop3-policy-settings.h"

#include <fcntl.h>
#include <unistd.h>
#include <utime.h>
#include <sys/stat.h>

/* pop3_policy_login_delay: a POP3 login sooner than that after the
   user's previous successful one is refused with -ERR [LOGIN-DELAY]
   (RFC 2449). Only the pop3 binary can refuse a login, so this lives in
   its own module, loaded only under protocol pop3.

   The hook runs before the user's namespaces exist, so the time of the
   last login is kept as the mtime of a small file beside the policy
   environment (the index root of the INBOX namespace's location, found
   from the settings), or in the home directory. A plain file: no
   mailbox layout takes it for a mailbox. */

#define POP3_POLICY_LOGIN_FILE_NAME "dovecot-pop3-policy.login"

const char *pop3_policy_login_delay_plugin_version = DOVECOT_ABI_VERSION;
const char pop3_policy_login_delay_plugin_binary_dependency[] = "pop3";

void pop3_policy_login_delay_plugin_init(struct module *module);
void pop3_policy_login_delay_plugin_deinit(void);

struct pop3_policy_login_client {
	union pop3_module_context module_ctx;
	struct timeout *to_refuse;
};

#define POP3_POLICY_LOGIN_CONTEXT(obj) \
	MODULE_CONTEXT(obj, pop3_policy_login_pop3_module)
static MODULE_CONTEXT_DEFINE_INIT(pop3_policy_login_pop3_module,
				  &pop3_module_register);

static pop3_client_created_func_t *next_hook_client_created;

/* After a refusal the client's commands must never run (pop3 handles
   input that arrived with the login right after this hook, and a
   pipelined DELE+QUIT would delete mail): its input goes into this
   stream, which discards everything and only passes on the end of the
   connection. */
static ssize_t pop3_policy_login_blackhole_read(struct istream_private *stream)
{
	const unsigned char *data;
	size_t size;
	ssize_t ret;

	while ((ret = i_stream_read_more(stream->parent, &data, &size)) > 0)
		i_stream_skip(stream->parent, size);
	if (ret < 0) {
		stream->istream.stream_errno = stream->parent->stream_errno;
		stream->istream.eof = stream->parent->eof;
		return -1;
	}
	return 0;
}

static struct istream *
pop3_policy_login_blackhole_create(struct istream *input)
{
	struct istream_private *stream = i_new(struct istream_private, 1);

	stream->read = pop3_policy_login_blackhole_read;
	stream->istream.blocking = input->blocking;
	stream->istream.seekable = FALSE;
	return i_stream_create(stream, input, i_stream_get_fd(input), 0);
}

static void pop3_policy_login_refuse_timeout(struct client *client)
{
	struct pop3_policy_login_client *lclient =
		POP3_POLICY_LOGIN_CONTEXT(client);

	timeout_remove(&lclient->to_refuse);
	client_destroy(client, "Login refused by pop3_policy_login_delay");
}

static void pop3_policy_login_client_destroy(struct client *client,
					     const char *reason)
{
	struct pop3_policy_login_client *lclient =
		POP3_POLICY_LOGIN_CONTEXT(client);

	timeout_remove(&lclient->to_refuse);
	lclient->module_ctx.super.destroy(client, reason);
}

/* Answer -ERR [LOGIN-DELAY] and end the session. pop3 goes on after the
   hook with the same client (and would send "+OK Logged in."), so the
   client can't be destroyed here: after the refusal its output is
   discarded, its input silenced, and it is destroyed from the ioloop. */
static void pop3_policy_login_refuse(struct client *client, const char *line)
{
	struct pop3_policy_login_client *lclient;
	struct istream *input;
	struct ostream *output;

	client_send_line(client, "%s", line);
	(void)o_stream_flush(client->output);
	/* Closing the output would make pop3 destroy the client under its
	   own feet; a discarding one swallows "+OK Logged in." instead. */
	output = o_stream_create_null();
	o_stream_unref(&client->output);
	client->output = output;

	input = pop3_policy_login_blackhole_create(client->input);
	i_stream_unref(&client->input);
	client->input = input;

	lclient = p_new(client->pool, struct pop3_policy_login_client, 1);
	lclient->module_ctx.super = client->v;
	client->v.destroy = pop3_policy_login_client_destroy;
	lclient->to_refuse = timeout_add_short(0,
		pop3_policy_login_refuse_timeout, client);
	MODULE_CONTEXT_SET(client, pop3_policy_login_pop3_module, lclient);
}

/* Returns 1 if the login may go on, 0 if it's too soon (with
   *wait_secs_r), -1 on error. Records the login when allowed. */
static int
pop3_policy_login_check(struct mail_user *user, unsigned int delay_secs,
			unsigned int *wait_secs_r, const char **error_r)
{
	const char *dir, *path;
	struct utimbuf ut;
	struct stat st;
	time_t now = ioloop_time != 0 ? ioloop_time : time(NULL);
	int fd;

	if (pop3_policy_settings_login_dir(user, &dir, error_r) < 0)
		return -1;
	path = t_strconcat(dir, "/"POP3_POLICY_LOGIN_FILE_NAME, NULL);
	if (stat(path, &st) == 0) {
		if (st.st_mtime <= now &&
		    now - st.st_mtime < (time_t)delay_secs) {
			*wait_secs_r = delay_secs - (now - st.st_mtime);
			return 0;
		}
	} else if (errno != ENOENT) {
		*error_r = t_strdup_printf("stat(%s) failed: %m", path);
		return -1;
	} else {
		if (mkdir_parents(dir, 0700) < 0 && errno != EEXIST) {
			*error_r = t_strdup_printf("mkdir(%s) failed: %m", dir);
			return -1;
		}
		fd = open(path, O_WRONLY | O_CREAT, 0600);
		if (fd == -1) {
			*error_r = t_strdup_printf("open(%s) failed: %m", path);
			return -1;
		}
		i_close_fd(&fd);
	}
	/* explicit times: the clock the check uses, also under faketime */
	ut.actime = ut.modtime = now;
	if (utime(path, &ut) < 0) {
		*error_r = t_strdup_printf("utime(%s) failed: %m", path);
		return -1;
	}
	return 1;
}

static void pop3_policy_login_delay_client_created(struct client **clientp)
{
	struct client *client = *clientp;
	struct mail_user *user = client->user;
	const char *error;
	unsigned int delay_secs, wait_secs = 0;
	int ret;

	if (next_hook_client_created != NULL)
		next_hook_client_created(clientp);
	client = *clientp;
	if (client == NULL || client->disconnected)
		return;

	if (pop3_policy_settings_read_login_delay(user, &delay_secs,
						  &error) < 0) {
		e_error(user->event, "pop3_policy: %s", error);
		pop3_policy_login_refuse(client, "-ERR [SYS/TEMP] "
					 MAIL_ERRSTR_CRITICAL_MSG);
		return;
	}
	if (delay_secs == 0)
		return;

	T_BEGIN {
		ret = pop3_policy_login_check(user, delay_secs, &wait_secs,
					      &error);
		if (ret < 0) {
			/* don't lock users out over a bookkeeping failure */
			e_error(user->event, "pop3_policy: login_delay: %s",
				error);
		}
	} T_END;
	if (ret != 0)
		return;
	e_info(user->event, "pop3_policy: login refused by login_delay "
	       "(%u s), next login allowed in %u s", delay_secs, wait_secs);
	pop3_policy_login_refuse(client, t_strdup_printf(
		"-ERR [LOGIN-DELAY] Minimum time between logins is %u "
		"seconds, try again in %u seconds", delay_secs, wait_secs));
}

void pop3_policy_login_delay_plugin_init(struct module *module ATTR_UNUSED)
{
	next_hook_client_created = pop3_client_created_hook_set(
		pop3_policy_login_delay_client_created);
}

void pop3_policy_login_delay_plugin_deinit(void)
{
	(void)pop3_client_created_hook_set(next_hook_client_created);
}
