/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "str.h"
#include "mail-storage-hooks.h"
#include "mail-namespace.h"
#include "mailbox-list-private.h"
#include "pop3-policy-env.h"
#include "pop3-policy-plugin.h"
#include "dlmdb-compat.h"

#include <sys/stat.h>

const char *pop3_policy_plugin_version = DOVECOT_ABI_VERSION;

struct pop3_policy_user_module pop3_policy_user_module =
	MODULE_CONTEXT_INIT(&mail_user_module_register);
struct pop3_policy_storage_module pop3_policy_storage_module =
	MODULE_CONTEXT_INIT(&mail_storage_module_register);
struct pop3_policy_mail_module pop3_policy_mail_module =
	MODULE_CONTEXT_INIT(&mail_module_register);

time_t pop3_policy_now(void)
{
	/* ioloop_time follows time(), so libfaketime moves both */
	return ioloop_time != 0 ? ioloop_time : time(NULL);
}

struct mail_namespace *pop3_policy_user_inbox_ns(struct mail_user *user)
{
	return mail_namespace_find_inbox(user->namespaces);
}

/* The path of the user's environment: beside the POP3 session lock, in
   the index root, else the mail root (INDEX=MEMORY). */
static int
pop3_policy_user_env_path(struct pop3_policy_user *puser, bool create,
			  const char **path_r, mode_t *mode_r,
			  const char **error_r)
{
	struct mail_namespace *ns;
	struct mailbox_permissions perm;
	const char *root;

	ns = pop3_policy_user_inbox_ns(puser->user);
	if (ns == NULL) {
		*error_r = "User has no INBOX namespace";
		return -1;
	}
	if (!mailbox_list_get_root_path(ns->list, MAILBOX_LIST_PATH_TYPE_INDEX,
					&root) || root[0] == '\0')
		root = mailbox_list_get_root_forced(ns->list,
						    MAILBOX_LIST_PATH_TYPE_DIR);
	if (create && mailbox_list_mkdir_root(ns->list, root,
					      MAILBOX_LIST_PATH_TYPE_INDEX) < 0) {
		*error_r = t_strdup_printf("Couldn't create %s: %s", root,
			mailbox_list_get_last_internal_error(ns->list, NULL));
		return -1;
	}
	mailbox_list_get_root_permissions(ns->list, &perm);
	*path_r = t_strconcat(root, "/", POP3_POLICY_ENV_FILE_NAME, NULL);
	*mode_r = perm.file_create_mode & 0666;
	return 0;
}

int pop3_policy_user_get_env(struct pop3_policy_user *puser,
			     struct pop3_policy_env **env_r,
			     const char **error_r)
{
	const char *path;
	mode_t mode;

	if (puser->env != NULL) {
		*env_r = puser->env;
		return 0;
	}
	if (pop3_policy_user_env_path(puser, TRUE, &path, &mode,
				      error_r) < 0 ||
	    pop3_policy_env_open(path, mode, &puser->env, error_r) < 0)
		return -1;
	if (puser->env->conversion_report != NULL) {
		/* once, by the process that converted it */
		if (puser->env->conversion_damaged > 0) {
			e_warning(puser->user->event, POP3_POLICY_LOG_PREFIX
				  "%s", puser->env->conversion_report);
		} else {
			e_info(puser->user->event, POP3_POLICY_LOG_PREFIX
			       "%s", puser->env->conversion_report);
		}
		i_free(puser->env->conversion_report);
	}
	*env_r = puser->env;
	return 0;
}

int pop3_policy_user_get_env_if_exists(struct pop3_policy_user *puser,
				       struct pop3_policy_env **env_r,
				       const char **error_r)
{
	struct stat st;
	const char *path;
	mode_t mode;

	if (puser->env == NULL) {
		if (pop3_policy_user_env_path(puser, FALSE, &path, &mode,
					      error_r) < 0)
			return -1;
		if (stat(path, &st) < 0) {
			if (errno == ENOENT)
				return 0;
			*error_r = t_strdup_printf("stat(%s) failed: %m",
						   path);
			return -1;
		}
	}
	return pop3_policy_user_get_env(puser, env_r, error_r) < 0 ? -1 : 1;
}

const char *pop3_policy_user_get_deleted_flag(struct pop3_policy_user *puser)
{
	struct pop3_policy_env *env;
	MDB_txn *txn;
	const char *keyword = NULL, *damage, *error;
	int ret;

	if (puser->deleted_flag_looked_up)
		return puser->deleted_flag;
	puser->deleted_flag_looked_up = TRUE;

	if (pop3_policy_user_get_env(puser, &env, &error) < 0 ||
	    pop3_policy_env_read_begin(env, &txn, &error) < 0) {
		e_error(puser->user->event, POP3_POLICY_LOG_PREFIX"%s", error);
		puser->deleted_flag_unknown = TRUE;
		return NULL;
	}
	ret = pop3_policy_env_flag_lookup(env, txn, &keyword, &damage,
					  &error);
	if (ret < 0 || damage != NULL) {
		e_error(puser->user->event, POP3_POLICY_LOG_PREFIX
			"%s (the flag is unknown until a POP3 session "
			"writes it again: only downloaded messages are "
			"purged)",
			ret < 0 ? error : damage);
		puser->deleted_flag_unknown = TRUE;
	} else if (ret == 0) {
		/* every POP3 session writes the record before it can hide
		   anything: hidden bits without it (a failed write, a
		   damaged key) can't be told from stale ones */
		puser->deleted_flag_unknown = TRUE;
	} else if (keyword[0] != '\0')
		puser->deleted_flag = p_strdup(puser->user->pool, keyword);
	pop3_policy_env_read_end(env, &txn);
	return puser->deleted_flag;
}

static int
pop3_policy_flag_write(struct pop3_policy_env *env, MDB_txn *txn,
		       void *context, const char **error_r)
{
	const char *keyword = context;

	return pop3_policy_env_flag_put(env, txn, keyword, error_r);
}

/* Record the POP3 session's pop3_deleted_flag for processes that can't
   see POP3 settings. */
static void pop3_policy_remember_deleted_flag(struct pop3_policy_user *puser,
					      const char *keyword)
{
	struct pop3_policy_env *env;
	MDB_txn *txn;
	const char *old = NULL, *damage, *error;
	int ret;

	if (pop3_policy_user_get_env(puser, &env, &error) < 0 ||
	    pop3_policy_env_read_begin(env, &txn, &error) < 0) {
		e_error(puser->user->event, POP3_POLICY_LOG_PREFIX"%s", error);
		return;
	}
	ret = pop3_policy_env_flag_lookup(env, txn, &old, &damage, &error);
	pop3_policy_env_read_end(env, &txn);
	if (ret == 0 && damage != NULL) {
		/* this session knows the flag: the record is repaired */
		e_warning(puser->user->event, POP3_POLICY_LOG_PREFIX
			  "%s (written again)", damage);
	}
	if (ret < 0) {
		e_error(puser->user->event, POP3_POLICY_LOG_PREFIX"%s", error);
	} else if (ret == 0 || strcmp(old, keyword) != 0) {
		if (pop3_policy_env_write(env, pop3_policy_flag_write,
					  (void *)keyword, &error) != 0) {
			e_error(puser->user->event,
				POP3_POLICY_LOG_PREFIX"%s", error);
		}
	}
}

const char *pop3_policy_audit_line(const char *action, const char *guid,
				   const char *uidl, uoff_t vsize,
				   const char *rule)
{
	return t_strdup_printf("pop3_policy: %s guid=%s uidl=%s size=%"
			       PRIuUOFF_T" rule=%s", action, guid,
			       uidl == NULL || uidl[0] == '\0' ? "-" : uidl,
			       vsize, rule);
}

/* keep_days and the sweep run when a POP3 client logs out: the
   session's INBOX is closed by now, so its downloads are flushed. In
   deinit_pre, because at deinit the quota plugin (loaded before us)
   has already freed what a mailbox transaction needs. */
static void pop3_policy_user_deinit_pre(struct mail_user *user)
{
	struct pop3_policy_user *puser = POP3_POLICY_USER_CONTEXT(user);
	const char *error;

	if (puser->pop3_inbox_opened && user->error == NULL) {
		if (puser->set.keep_days > 0 &&
		    pop3_policy_retention_run(user, FALSE, NULL, NULL,
					      &error) < 0) {
			e_error(user->event, POP3_POLICY_LOG_PREFIX
				"keep_days removal failed: %s", error);
		}
		pop3_policy_sweep_at_logout(puser);
	}
	puser->module_ctx.super.deinit_pre(user);
}

static void pop3_policy_user_deinit(struct mail_user *user)
{
	struct pop3_policy_user *puser = POP3_POLICY_USER_CONTEXT(user);

	puser->module_ctx.super.deinit(user);
	pop3_policy_env_unref(&puser->env);
}

static void pop3_policy_mail_user_created(struct mail_user *user)
{
	struct mail_user_vfuncs *v = user->vlast;
	struct pop3_policy_user *puser;
	const char *error;

	/* LMTP's and LDA's raw user only parses incoming mail: no policy
	   applies, and an error here would kill the whole process instead
	   of failing one recipient */
	if (dlmdb_mail_user_is_raw(user))
		return;

	puser = p_new(user->pool, struct pop3_policy_user, 1);
	puser->user = user;
	if (pop3_policy_settings_read(user, &puser->set, &error) < 0) {
		/* a policy that can't be read must not silently become
		   "expunge everything": fail the session */
		user->error = p_strdup_printf(user->pool, "pop3_policy: %s",
					      error);
		return;
	}
	puser->module_ctx.super = *v;
	user->vlast = &puser->module_ctx.super;
	v->deinit_pre = pop3_policy_user_deinit_pre;
	v->deinit = pop3_policy_user_deinit;
	MODULE_CONTEXT_SET(user, pop3_policy_user_module, puser);

	e_debug(user->event, "pop3_policy: dele=%s keep_days=%u "
		"quota_purge=%s login_delay=%us",
		pop3_policy_dele_to_str(&puser->set), puser->set.keep_days,
		puser->set.quota_purge ? "yes" : "no",
		puser->set.login_delay_secs);

	if (puser->set.quota_purge &&
	    pop3_policy_quota_user_init(puser, &error) < 0) {
		user->error = p_strdup_printf(user->pool, "pop3_policy: %s",
					      error);
	}
}

/* dele=move:<mailbox> must name a mailbox other than the maildrop, as
   Dovecot resolves the name (INBOX in any case, namespace prefixes):
   moving a DELEted message into INBOX brings it back at once. */
static int
pop3_policy_check_move_target(struct pop3_policy_user *puser,
			      const char **error_r)
{
	struct mail_user *user = puser->user;
	const char *name = puser->set.dele_mailbox;
	struct mail_namespace *ns;
	struct mailbox *box;
	bool is_maildrop;

	if (puser->set.dele != POP3_POLICY_DELE_MOVE)
		return 0;
	ns = mail_namespace_find(user->namespaces, name);
	if (ns == NULL) {
		*error_r = t_strdup_printf("Invalid pop3_policy_dele=move:%s: "
					   "no namespace has this mailbox",
					   name);
		return -1;
	}
	/* only allocated, never opened: nothing is created or read */
	box = mailbox_alloc(ns->list, name, 0);
	is_maildrop = box->inbox_user &&
		ns == pop3_policy_user_inbox_ns(user);
	mailbox_free(&box);
	if (is_maildrop) {
		*error_r = t_strdup_printf("Invalid pop3_policy_dele=move:%s: "
			"that is the POP3 mailbox (INBOX) itself, DELEted "
			"messages would stay; name another mailbox", name);
		return -1;
	}
	return 0;
}

static void
pop3_policy_mail_namespaces_created(struct mail_namespace *namespaces)
{
	struct mail_user *user = namespaces->user;
	struct pop3_policy_user *puser = POP3_POLICY_USER_CONTEXT(user);
	const char *flag, *error;
	bool is_pop3;

	if (puser == NULL)
		return;
	if (pop3_policy_check_move_target(puser, &error) < 0) {
		user->error = p_strdup_printf(user->pool, "pop3_policy: %s",
					      error);
		return;
	}
	/* pop3_deleted_flag is a POP3 setting: other services may not
	   have it at all, or not the value of protocol pop3 {} */
	flag = pop3_policy_settings_pop3_deleted_flag(user);
	is_pop3 = user->service != NULL && strcmp(user->service, "pop3") == 0;
	if (is_pop3 && puser->set.dele != POP3_POLICY_DELE_EXPUNGE &&
	    (flag == NULL || flag[0] == '\0')) {
		user->error = p_strdup_printf(user->pool,
			"pop3_policy: pop3_policy_dele=%s needs Dovecot's "
			"pop3_deleted_flag setting (e.g. "
			"pop3_deleted_flag = $POP3Deleted)",
			pop3_policy_dele_to_str(&puser->set));
		return;
	}
	if (flag == NULL || flag[0] == '\0')
		return;
	if (strlen(flag) > POP3_POLICY_FLAG_KEYWORD_MAX_LEN) {
		/* its record would always read as damaged */
		user->error = p_strdup_printf(user->pool,
			"pop3_policy: pop3_deleted_flag is %zu characters "
			"long, the most is %u", strlen(flag),
			POP3_POLICY_FLAG_KEYWORD_MAX_LEN);
		return;
	}
	puser->deleted_flag_looked_up = TRUE;
	puser->deleted_flag = p_strdup(user->pool, flag);
	if (is_pop3)
		pop3_policy_remember_deleted_flag(puser, puser->deleted_flag);
}

static struct mail_storage_hooks pop3_policy_mail_storage_hooks = {
	.mail_user_created = pop3_policy_mail_user_created,
	.mail_namespaces_created = pop3_policy_mail_namespaces_created,
	.mailbox_allocated = pop3_policy_mailbox_allocated,
	.mail_allocated = pop3_policy_mail_allocated,
};

void pop3_policy_plugin_init(struct module *module)
{
	mail_storage_hooks_add(module, &pop3_policy_mail_storage_hooks);
}

void pop3_policy_plugin_deinit(void)
{
	mail_storage_hooks_remove(&pop3_policy_mail_storage_hooks);
}
