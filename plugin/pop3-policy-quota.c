/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "mail-namespace.h"
#include "mail-search-build.h"
#include "quota-private.h"
#include "quota-plugin.h"
#include "pop3-policy-env.h"
#include "pop3-policy-plugin.h"
#include "pop3-policy-quota.h"

#include <dlfcn.h>

#define POP3_POLICY_QUOTA_MAX_RETRIES 3

/* quota_purge: when a save or copy would exceed quota, first remove
   mail the POP3 client is done with: hidden by a keep DELE, then
   downloaded mail, oldest first download first; never mail nobody
   downloaded. Chained into the quota plugin's test_alloc like the trash
   plugin, with the next pointer per user (LMTP delivers to several
   users in one process).

   The plugin must also load without quota, so it can't declare a
   dependency on it: the quota user context is looked up at run time,
   and only when quota_purge=yes.

   This file chooses and removes mail; the hook into the quota plugin,
   whose API differs between Dovecot 2.3 and 2.4, is in
   pop3-policy-quota-{23,24}.c. */

struct pop3_policy_victim {
	uint32_t uid;
	/* the GUID, if the plugin has a record of it */
	const char *guid;
	bool hidden;
	uint64_t first_download;
	uint64_t size;
};
ARRAY_DEFINE_TYPE(pop3_policy_victim, struct pop3_policy_victim);

struct pop3_policy_quota_records {
	pool_t pool;
	/* guid -> record copy */
	HASH_TABLE(char *, struct pop3_policy_msg_record *) by_guid;
	/* guid -> copies of it in the maildrop, of GUIDs with a record */
	HASH_TABLE(char *, void *) copies;
	const char *error;
	/* messages of the maildrop that couldn't be read: the copy counts
	   may be short */
	unsigned int skipped;
};

static struct quota_user *pop3_policy_quota_user(struct mail_user *user)
{
	struct module_context_id *id;
	unsigned int idx;

	/* quota's MODULE_CONTEXT_DEFINE struct starts with its id */
	id = dlsym(RTLD_DEFAULT, "quota_user_module");
	if (id == NULL)
		return NULL;
	idx = module_get_context_id(id);
	if (idx >= array_count(&user->module_contexts))
		return NULL;
	return (struct quota_user *)
		array_idx_elem(&user->module_contexts, idx);
}

static int
pop3_policy_quota_collect(const struct pop3_policy_msg_record *rec,
			  const char *error, void *context)
{
	struct pop3_policy_quota_records *ctx = context;
	struct pop3_policy_msg_record *copy;
	char *guid;

	if (rec == NULL) {
		ctx->error = p_strdup(ctx->pool, error);
		return 0;
	}
	if (rec->first_download == 0 &&
	    (rec->flags & POP3_POLICY_MSG_FLAG_HIDDEN) == 0)
		return 0;
	copy = p_new(ctx->pool, struct pop3_policy_msg_record, 1);
	copy->flags = rec->flags;
	copy->first_download = rec->first_download;
	guid = p_strdup(ctx->pool, rec->guid);
	copy->guid = guid;
	copy->uidl = "";
	hash_table_update(ctx->by_guid, guid, copy);
	return 0;
}

static bool
pop3_policy_mail_has_keyword(struct mail *mail, const char *keyword)
{
	const char *const *keywords;

	if (keyword == NULL)
		return FALSE;
	for (keywords = mail_get_keywords(mail); *keywords != NULL;
	     keywords++) {
		if (strcasecmp(*keywords, keyword) == 0)
			return TRUE;
	}
	return FALSE;
}

static int
pop3_policy_victim_cmp(const struct pop3_policy_victim *v1,
		       const struct pop3_policy_victim *v2)
{
	/* hidden first; then the oldest first download (never-downloaded
	   hidden mail last among the hidden); then the oldest message */
	if (v1->hidden != v2->hidden)
		return v1->hidden ? -1 : 1;
	if (v1->first_download != v2->first_download) {
		if (v1->first_download == 0)
			return 1;
		if (v2->first_download == 0)
			return -1;
		return v1->first_download < v2->first_download ? -1 : 1;
	}
	return v1->uid < v2->uid ? -1 : (v1->uid > v2->uid ? 1 : 0);
}

static int
pop3_policy_quota_find_victims(struct pop3_policy_user *puser,
			       struct mailbox *box,
			       struct pop3_policy_quota_records *records,
			       ARRAY_TYPE(pop3_policy_victim) *victims)
{
	const char *flag = pop3_policy_user_get_deleted_flag(puser);
	struct mailbox_transaction_context *trans;
	struct mail_search_context *search_ctx;
	struct mail_search_args *search_args;
	struct pop3_policy_msg_record *rec;
	struct pop3_policy_victim *victim;
	struct mail *mail;
	const char *guid;
	uoff_t size;
	bool hidden;
	int ret = 0;

	trans = mailbox_transaction_begin(box, 0, "pop3_policy quota scan");
	search_args = mail_search_build_init();
	mail_search_build_add_all(search_args);
	search_ctx = mailbox_search_init(trans, search_args, NULL,
					 MAIL_FETCH_GUID | MAIL_FETCH_FLAGS |
					 MAIL_FETCH_VIRTUAL_SIZE, NULL);
	mail_search_args_unref(&search_args);
	while (mailbox_search_next(search_ctx, &mail)) {
		if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0) {
			/* damaged on disk: it isn't known to be downloaded,
			   and the others can still be purged */
			e_warning(puser->user->event, POP3_POLICY_LOG_PREFIX
				  "quota purge: skipping %s UID %u, its GUID "
				  "can't be read: %s", mailbox_get_vname(box),
				  mail->uid,
				  mailbox_get_last_internal_error(box, NULL));
			records->skipped++;
			continue;
		}
		rec = hash_table_lookup(records->by_guid, guid);
		if (rec != NULL) {
			unsigned int n = POINTER_CAST_TO(hash_table_lookup(
				records->copies, rec->guid), unsigned int);
			hash_table_update(records->copies, (char *)rec->guid,
					  POINTER_CAST(n + 1));
		}
		/* the keyword is the truth (IMAP may have removed it); the
		   record's bit covers a deleted flag this process can't
		   know, unless the flag's own record is damaged: then the
		   keyword may be gone since, and only downloads count */
		hidden = flag != NULL ? pop3_policy_mail_has_keyword(mail, flag) :
			(!puser->deleted_flag_unknown && rec != NULL &&
			 (rec->flags & POP3_POLICY_MSG_FLAG_HIDDEN) != 0);
		if (!hidden && (rec == NULL || rec->first_download == 0))
			continue;
		if ((pop3_policy_quota_uses_vsizes(puser) ?
		     mail_get_virtual_size(mail, &size) :
		     mail_get_physical_size(mail, &size)) < 0) {
			e_warning(puser->user->event, POP3_POLICY_LOG_PREFIX
				  "quota purge: skipping %s UID %u, its size "
				  "can't be read: %s", mailbox_get_vname(box),
				  mail->uid,
				  mailbox_get_last_internal_error(box, NULL));
			continue;
		}
		victim = array_append_space(victims);
		victim->uid = mail->uid;
		victim->guid = rec == NULL ? NULL : rec->guid;
		victim->hidden = hidden;
		victim->first_download = rec == NULL ? 0 : rec->first_download;
		victim->size = size;
	}
	if (mailbox_search_deinit(&search_ctx) < 0)
		ret = -1;
	mailbox_transaction_rollback(&trans);
	return ret;
}

static int
pop3_policy_quota_expunge(struct pop3_policy_user *puser,
			  struct mailbox *box,
			  const struct pop3_policy_victim *victims,
			  unsigned int count)
{
	struct mailbox_transaction_context *trans;
	struct mail *mail;
	ARRAY_TYPE(const_string) lines;
	const char *guid, *uidl, *line;
	uoff_t vsize;
	unsigned int i;

	t_array_init(&lines, count);
	trans = mailbox_transaction_begin(box, 0, "pop3_policy quota purge");
	mail = mail_alloc(trans, MAIL_FETCH_GUID | MAIL_FETCH_VIRTUAL_SIZE,
			  NULL);
	for (i = 0; i < count; i++) {
		if (!mail_set_uid(mail, victims[i].uid))
			continue;
		if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0)
			guid = "-";
		uidl = pop3_policy_mail_get_uidl(puser, mail);
		if (mail_get_virtual_size(mail, &vsize) < 0)
			vsize = 0;
		line = pop3_policy_audit_line("purge", guid, uidl, vsize,
					      "quota");
		array_push_back(&lines, &line);
		mail_expunge(mail);
	}
	mail_free(&mail);
	if (mailbox_transaction_commit(&trans) < 0 ||
	    mailbox_sync(box, 0) < 0)
		return -1;
	/* logged once committed */
	array_foreach_elem(&lines, line)
		e_info(puser->user->event, "%s", line);
	return 0;
}

/* The purged messages of which no copy is left are gone: forget
   them. */
static void
pop3_policy_quota_forget(struct pop3_policy_user *puser,
			 struct pop3_policy_quota_records *records,
			 const struct pop3_policy_victim *victims,
			 unsigned int count)
{
	ARRAY_TYPE(const_string) gone;
	const char *error;
	unsigned int i, n;

	if (records->skipped > 0) {
		/* an unreadable message may be a copy of a purged one:
		   the sweep drops the records once it can tell */
		return;
	}
	t_array_init(&gone, count);
	for (i = 0; i < count; i++) {
		if (victims[i].guid == NULL)
			continue;
		n = POINTER_CAST_TO(hash_table_lookup(records->copies,
						      victims[i].guid),
				    unsigned int);
		if (n == 0)
			continue;
		hash_table_update(records->copies, (char *)victims[i].guid,
				  POINTER_CAST(n - 1));
		if (n == 1)
			array_push_back(&gone, &victims[i].guid);
	}
	if (pop3_policy_forget(puser, &gone, &error) < 0) {
		e_error(puser->user->event, POP3_POLICY_LOG_PREFIX
			"Dropping records of purged messages failed: %s",
			error);
	}
}

/* Free at least bytes_needed and count_needed from the maildrop. Returns
   1 if freed, 0 if there isn't enough purgeable mail (then nothing is
   removed), -1 on error. */
static int
pop3_policy_quota_purge(struct pop3_policy_user *puser,
			uint64_t bytes_needed, uint64_t count_needed,
			uint64_t *bytes_freed_r, uint64_t *count_freed_r)
{
	struct mail_user *user = puser->user;
	struct mail_namespace *ns = pop3_policy_user_inbox_ns(user);
	struct pop3_policy_quota_records records;
	ARRAY_TYPE(pop3_policy_victim) victims;
	const struct pop3_policy_victim *v;
	struct pop3_policy_env *env;
	struct mailbox *box;
	uint64_t bytes = 0, count = 0;
	unsigned int i, n;
	const char *error;
	int ret;

	if (ns == NULL)
		return 0;
	if (pop3_policy_user_get_env(puser, &env, &error) < 0) {
		e_error(user->event, POP3_POLICY_LOG_PREFIX"%s", error);
		return -1;
	}
	i_zero(&records);
	records.pool = pool_alloconly_create("pop3_policy quota", 1024);
	hash_table_create(&records.by_guid, records.pool, 0, str_hash, strcmp);
	hash_table_create(&records.copies, records.pool, 0, str_hash, strcmp);
	ret = pop3_policy_env_msg_iter(env, pop3_policy_quota_collect,
				       &records, &error);
	if (records.error != NULL)
		e_error(user->event, POP3_POLICY_LOG_PREFIX"%s", records.error);
	if (ret < 0) {
		e_error(user->event, POP3_POLICY_LOG_PREFIX"%s", error);
		hash_table_destroy(&records.by_guid);
		hash_table_destroy(&records.copies);
		pool_unref(&records.pool);
		return -1;
	}

	/* our own instance: the mailbox being saved to may be this same
	   INBOX, with its transaction still open */
	box = mailbox_alloc(ns->list, "INBOX", 0);
	i_array_init(&victims, 64);
	if (mailbox_sync(box, 0) < 0 ||
	    pop3_policy_quota_find_victims(puser, box, &records,
					   &victims) < 0) {
		e_error(user->event, POP3_POLICY_LOG_PREFIX
			"quota purge: %s",
			mailbox_get_last_internal_error(box, NULL));
		ret = -1;
	} else {
		array_sort(&victims, pop3_policy_victim_cmp);
		v = array_get(&victims, &n);
		for (i = 0; i < n; i++) {
			if (bytes >= bytes_needed && count >= count_needed)
				break;
			bytes += v[i].size;
			count++;
		}
		if (bytes < bytes_needed || count < count_needed) {
			e_debug(user->event, POP3_POLICY_LOG_PREFIX
				"quota purge: only %"PRIu64" bytes in %"PRIu64
				" purgeable messages, %"PRIu64" bytes and "
				"%"PRIu64" messages needed", bytes, count,
				bytes_needed, count_needed);
			ret = 0;
		} else if (pop3_policy_quota_expunge(puser, box, v, i) < 0) {
			e_error(user->event, POP3_POLICY_LOG_PREFIX
				"quota purge: %s",
				mailbox_get_last_internal_error(box, NULL));
			ret = -1;
		} else {
			T_BEGIN {
				pop3_policy_quota_forget(puser, &records,
							 v, i);
			} T_END;
			*bytes_freed_r = bytes;
			*count_freed_r = count;
			ret = 1;
		}
	}
	array_free(&victims);
	mailbox_free(&box);
	hash_table_destroy(&records.by_guid);
	hash_table_destroy(&records.copies);
	pool_unref(&records.pool);
	return ret;
}

int pop3_policy_quota_user_quota(struct pop3_policy_user *puser,
				 struct quota **quota_r, const char **error_r)
{
	struct mail_user *user = puser->user;
	struct quota_user *quser;

	if (user->service != NULL && strcmp(user->service, "quota-status") == 0)
		return 0;
	quser = pop3_policy_quota_user(user);
	if (quser == NULL || quser->quota == NULL) {
		*error_r = "pop3_policy_quota_purge=yes needs the quota "
			"plugin in mail_plugins (before pop3_policy)";
		return -1;
	}
	*quota_r = quser->quota;
	return 1;
}

int pop3_policy_quota_alloc_retry(struct pop3_policy_user *puser,
				  struct mailbox *box, int ret,
				  struct pop3_policy_quota_alloc *alloc)
{
	struct pop3_policy_quota_state state;
	uint64_t bytes_needed, count_needed, bytes_freed, count_freed;
	uint64_t prev_bytes = 0, prev_count = 0;
	unsigned int i;

	/* quota_purging: not again from inside a purge */
	if (ret != QUOTA_ALLOC_RESULT_OVER_QUOTA || puser->quota_purging ||
	    box == NULL || box->transaction_count == 0)
		return ret;
	if (!alloc->inbox_counts(alloc)) {
		e_debug(puser->user->event, POP3_POLICY_LOG_PREFIX
			"quota purge: a quota root over for %s doesn't count "
			"INBOX: nothing purged", mailbox_get_vname(box));
		return ret;
	}

	puser->quota_purging = TRUE;
	for (i = 0; i < POP3_POLICY_QUOTA_MAX_RETRIES &&
		    ret == QUOTA_ALLOC_RESULT_OVER_QUOTA; i++) {
		alloc->get_state(alloc, &state);
		pop3_policy_quota_needed(&state, alloc->size, &bytes_needed,
					 &count_needed);
		if (bytes_needed == 0 && count_needed == 0)
			break;
		/* the last purge didn't bring the save closer: another
		   purge wouldn't either */
		if (i > 0 && bytes_needed >= prev_bytes &&
		    count_needed >= prev_count)
			break;
		prev_bytes = bytes_needed;
		prev_count = count_needed;
		bytes_freed = count_freed = 0;
		if (pop3_policy_quota_purge(puser, bytes_needed, count_needed,
					    &bytes_freed, &count_freed) <= 0)
			break;
		alloc->credit(alloc, bytes_freed, count_freed);
		ret = alloc->retest(alloc);
	}
	puser->quota_purging = FALSE;
	return ret;
}
