/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "str.h"
#include "hash.h"
#include "mail-storage-settings.h"
#include "dlmdb-compat.h"
#include "pop3-policy-env.h"
#include "pop3-policy-plugin.h"

/* UIDL stability on formats whose backend keeps no UIDL (maildir, sdbox,
   mdbox): the first time a POP3 client is shown a message's UIDL, it is
   frozen by message GUID. Dovecot's POP3 server takes a non-empty
   backend UIDL as permanent, so answering MAIL_FETCH_UIDL_BACKEND with
   the frozen one is all it takes. */

#define POP3_POLICY_UIDL_MAX_TRIES 10000

int pop3_policy_uidl_from_format(struct mail *mail, const char **uidl_r,
				 const char **error_r)
{
	/* the storage's settings: what the POP3 server itself uses */
	const char *format = mail->box->storage->set->pop3_uidl_format;
	struct dlmdb_uidl_vars vars = {
		.uid = mail->uid,
		.md5 = "",
		.filename = "",
		.guid = "",
	};
	struct mailbox_status status;
	const char *error;
	string_t *str;

	mailbox_get_open_status(mail->box, STATUS_UIDVALIDITY, &status);
	vars.uid_validity = status.uidvalidity;
	if (dlmdb_uidl_format_uses(format, DLMDB_UIDL_VAR_MD5) &&
	    mail_get_special(mail, MAIL_FETCH_HEADER_MD5, &vars.md5) < 0) {
		*error_r = mailbox_get_last_internal_error(mail->box, NULL);
		return -1;
	}
	if (dlmdb_uidl_format_uses(format, DLMDB_UIDL_VAR_FILENAME) &&
	    mail_get_special(mail, MAIL_FETCH_STORAGE_ID, &vars.filename) < 0) {
		*error_r = mailbox_get_last_internal_error(mail->box, NULL);
		return -1;
	}
	if (dlmdb_uidl_format_uses(format, DLMDB_UIDL_VAR_GUID) &&
	    mail_get_special(mail, MAIL_FETCH_GUID, &vars.guid) < 0) {
		*error_r = mailbox_get_last_internal_error(mail->box, NULL);
		return -1;
	}

	str = t_str_new(64);
	if (dlmdb_uidl_format_expand(str, format, &vars, &error) < 0) {
		*error_r = t_strdup_printf(
			"Failed to expand pop3_uidl_format=%s: %s",
			format, error);
		return -1;
	}
	*uidl_r = str_c(str);
	return 0;
}

struct pop3_policy_uidl_owner {
	const char *guid;
	/* the callback runs in a data stack frame of its own */
	char uidl[POP3_POLICY_UIDL_MAX_LEN + 1];
	unsigned int count;
};

static int
pop3_policy_uidl_owner_check(const char *uidl,
			     const struct pop3_policy_uidl_record *rec,
			     const char *error ATTR_UNUSED, void *context)
{
	struct pop3_policy_uidl_owner *ctx = context;

	/* a damaged reservation is no evidence either way; an intact one
	   under a key no client could have been shown isn't either */
	if (rec != NULL && strcmp(rec->guid, ctx->guid) == 0 &&
	    pop3_policy_uidl_is_valid(uidl)) {
		if (ctx->count++ == 0)
			i_strocpy(ctx->uidl, uidl, sizeof(ctx->uidl));
	}
	return 0;
}

/* The UIDL reserved for guid in "uidls", when its message record is
   damaged: 1 if exactly one reservation names it, 0 if none or several,
   -1 on error. A full read of the reservations, paid only for a damaged
   record (which the next flush rewrites). */
static int
pop3_policy_uidl_recover(struct pop3_policy_env *env, const char *guid,
			 const char **uidl_r, const char **error_r)
{
	struct pop3_policy_uidl_owner ctx = { .guid = guid };
	int ret;

	ret = pop3_policy_env_uidl_iter(env, pop3_policy_uidl_owner_check,
					&ctx, error_r);
	if (ret < 0)
		return -1;
	if (ctx.count != 1)
		return 0;
	*uidl_r = t_strdup(ctx.uidl);
	return 1;
}

/* Look up the frozen UIDL of guid: 1 found, 0 not, -1 error. A damaged
   record is never served: its UIDL is taken from the reservation that
   names the GUID (*recovered_r = TRUE), or there is none (0), and
   either way a warning names the damage. */
static int
pop3_policy_uidl_lookup(struct pop3_policy_user *puser, struct mail *mail,
			const char *guid, const char **uidl_r,
			bool *recovered_r, const char **error_r)
{
	struct pop3_policy_msg_record rec;
	struct pop3_policy_env *env;
	const char *damage;
	MDB_txn *txn;
	int ret;

	*recovered_r = FALSE;
	if (pop3_policy_user_get_env(puser, &env, error_r) < 0 ||
	    pop3_policy_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	ret = pop3_policy_env_msg_lookup(env, txn, guid, &rec, &damage,
					 error_r);
	pop3_policy_env_read_end(env, &txn);
	if (ret < 0)
		return -1;
	if (ret == 0 && damage != NULL) {
		ret = pop3_policy_uidl_recover(env, guid, uidl_r, error_r);
		if (ret < 0)
			return -1;
		if (ret > 0) {
			e_warning(mail_event(mail), POP3_POLICY_LOG_PREFIX
				  "%s: UIDL %s recovered from its "
				  "reservation", damage, *uidl_r);
			*recovered_r = TRUE;
			return 1;
		}
		e_warning(mail_event(mail), POP3_POLICY_LOG_PREFIX
			  "%s: no single UIDL reservation names the GUID: "
			  "its UIDL is derived again (a POP3 client may "
			  "download the message again)", damage);
		return 0;
	}
	if (ret == 0 || rec.uidl[0] == '\0')
		return 0;
	*uidl_r = rec.uidl;
	return 1;
}

/* Pick the first free alternative of base for guid. A damaged
   reservation counts as taken: its UIDL may have been shown for another
   message, which a client would then skip. */
static int
pop3_policy_uidl_make_unique(struct pop3_policy_mailbox *pbox,
			     struct mail *mail, const char *guid,
			     const char *base, const char **uidl_r,
			     const char **error_r)
{
	struct pop3_policy_uidl_record urec;
	struct pop3_policy_env *env;
	const char *cand, *owner, *damage;
	MDB_txn *txn;
	unsigned int n;
	int ret = 0;

	if (pop3_policy_user_get_env(pbox->puser, &env, error_r) < 0 ||
	    pop3_policy_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	for (n = 0; n < POP3_POLICY_UIDL_MAX_TRIES; n++) {
		cand = pop3_policy_uidl_candidate(base, n);
		owner = pbox->pending_pool == NULL ? NULL :
			hash_table_lookup(pbox->pending_uidls, cand);
		if (owner != NULL && strcmp(owner, guid) != 0)
			continue;
		/* the fallback UIDLs stay apart from every frozen one */
		if (pop3_policy_uidl_is_fallback(cand))
			continue;
		ret = pop3_policy_env_uidl_lookup(env, txn, cand, &urec,
						  &damage, error_r);
		if (ret < 0)
			break;
		if (ret == 0 && damage != NULL) {
			e_warning(mail_event(mail), POP3_POLICY_LOG_PREFIX
				  "%s: taken, not given to GUID %s", damage,
				  guid);
			continue;
		}
		if (ret == 0 || strcmp(urec.guid, guid) == 0) {
			ret = 1;
			break;
		}
		ret = 0;
	}
	pop3_policy_env_read_end(env, &txn);
	if (ret < 0)
		return -1;
	if (ret == 0) {
		*error_r = t_strdup_printf("No free UIDL derived from %s",
					   base);
		return -1;
	}
	*uidl_r = cand;
	return 0;
}

int pop3_policy_uidl_freeze(struct pop3_policy_mailbox *pbox,
			    struct mail *mail, const char **uidl_r)
{
	struct pop3_policy_pending *pending;
	const char *guid, *uidl, *base, *error;
	bool recovered;
	int ret;

	if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0)
		return -1;
	if (guid[0] == '\0') {
		mail_set_critical(mail, POP3_POLICY_LOG_PREFIX
				  "Message has no GUID: can't freeze its UIDL");
		return -1;
	}
	if (pbox->pending_pool != NULL) {
		pending = hash_table_lookup(pbox->pending_by_guid, guid);
		if (pending != NULL && pending->uidl != NULL) {
			*uidl_r = pending->uidl;
			return 0;
		}
	}
	ret = pop3_policy_uidl_lookup(pbox->puser, mail, guid, &uidl,
				      &recovered, &error);
	if (ret < 0) {
		mail_set_critical(mail, POP3_POLICY_LOG_PREFIX"%s", error);
		return -1;
	}
	if (ret > 0 && !recovered) {
		*uidl_r = uidl;
		return 0;
	}
	if (ret > 0) {
		/* written again with the record at the flush */
		pending = pop3_policy_pending_get(pbox, guid);
		pending->uidl = p_strdup(pbox->pending_pool, uidl);
		hash_table_update(pbox->pending_uidls, pending->uidl,
				  pending->guid);
		*uidl_r = pending->uidl;
		return 0;
	}

	/* not frozen yet: what Dovecot would have shown, made unique */
	if (pop3_policy_uidl_from_format(mail, &base, &error) < 0) {
		mail_set_critical(mail, POP3_POLICY_LOG_PREFIX
				  "UIDL: %s", error);
		return -1;
	}
	base = pop3_policy_uidl_sanitize(base);
	if (pop3_policy_uidl_make_unique(pbox, mail, guid, base, &uidl,
					 &error) < 0) {
		mail_set_critical(mail, POP3_POLICY_LOG_PREFIX"%s", error);
		return -1;
	}
	pending = pop3_policy_pending_get(pbox, guid);
	pending->uidl = p_strdup(pbox->pending_pool, uidl);
	hash_table_update(pbox->pending_uidls, pending->uidl, pending->guid);
	*uidl_r = pending->uidl;
	return 0;
}

/* The freeze failed (logged): show the fallback UIDL rather than fail.
   Failing would make Dovecot's POP3 server build a UIDL from
   pop3_uidl_format itself, which can be the reserved UIDL of an expunged
   message (after a UID reset): a client that remembers it skips the new
   message. The fallback costs at worst a duplicate download. */
static int pop3_policy_uidl_fallback_get(struct mail *mail,
					 const char **uidl_r)
{
	const char *guid;

	if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0)
		return -1;
	if (guid[0] == '\0')
		return -1;
	*uidl_r = pop3_policy_uidl_fallback(guid);
	e_error(mail_event(mail), POP3_POLICY_LOG_PREFIX
		"UIDL can't be frozen: shown as %s until it can (a POP3 "
		"client may download the message again)", *uidl_r);
	return 0;
}

int pop3_policy_uidl_get_special(struct mail *_mail,
				 enum mail_fetch_field field,
				 const char **value_r)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct pop3_policy_mail *pmail = POP3_POLICY_MAIL_CONTEXT(mail);
	struct pop3_policy_mailbox *pbox =
		POP3_POLICY_MAILBOX_CONTEXT(_mail->box);
	const char *guid, *uidl, *error;
	bool recovered;
	int ret;

	if (pmail->module_ctx.super.get_special(_mail, field, value_r) < 0)
		return -1;
	/* a backend UIDL (lmdb, or one imported by dsync) wins, as it
	   does in Dovecot's POP3 server */
	if (field != MAIL_FETCH_UIDL_BACKEND || (*value_r)[0] != '\0' ||
	    !pbox->maildrop)
		return 0;

	if (pbox->pop3_session) {
		if (pop3_policy_uidl_freeze(pbox, _mail, &uidl) < 0 &&
		    pop3_policy_uidl_fallback_get(_mail, &uidl) < 0)
			return -1;
		*value_r = p_strdup(mail->data_pool, uidl);
		return 0;
	}
	/* other sessions only see what is frozen */
	if (mail_get_special(_mail, MAIL_FETCH_GUID, &guid) < 0)
		return -1;
	if (guid[0] == '\0')
		return 0;
	ret = pop3_policy_uidl_lookup(pbox->puser, _mail, guid, &uidl,
				      &recovered, &error);
	if (ret < 0) {
		mail_set_critical(_mail, POP3_POLICY_LOG_PREFIX"%s", error);
		return -1;
	}
	if (ret > 0)
		*value_r = p_strdup(mail->data_pool, uidl);
	return 0;
}

const char *pop3_policy_mail_get_uidl(struct pop3_policy_user *puser,
				      struct mail *mail)
{
	const char *uidl, *error;

	if (mail_get_special(mail, MAIL_FETCH_UIDL_BACKEND, &uidl) == 0 &&
	    uidl[0] != '\0')
		return uidl;
	if (pop3_policy_uidl_from_format(mail, &uidl, &error) < 0) {
		e_debug(puser->user->event, POP3_POLICY_LOG_PREFIX
			"UIDL lookup failed: %s", error);
		return "-";
	}
	return pop3_policy_uidl_sanitize(uidl);
}

int pop3_policy_uidl_freeze_current(struct mailbox *box, struct mail *mail,
				    const char **uidl_r)
{
	struct pop3_policy_mailbox *pbox = POP3_POLICY_MAILBOX_CONTEXT(box);
	struct pop3_policy_mail *pmail =
		POP3_POLICY_MAIL_CONTEXT((struct mail_private *)mail);
	struct pop3_policy_pending *pending;
	const char *backend, *guid, *frozen, *error;
	bool recovered;
	int ret;

	i_assert(pbox != NULL && pmail != NULL);
	/* below our own hook: what the storage itself has */
	if (pmail->module_ctx.super.get_special(mail, MAIL_FETCH_UIDL_BACKEND,
						&backend) < 0)
		return -1;
	if (backend[0] == '\0')
		return pop3_policy_uidl_freeze(pbox, mail, uidl_r);

	/* a backend UIDL (lmdb, or imported into maildir's uidlist) is
	   what POP3 shows: record it too, so it's reserved here */
	if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0)
		return -1;
	ret = pop3_policy_uidl_lookup(pbox->puser, mail, guid, &frozen,
				      &recovered, &error);
	if (ret < 0) {
		mail_set_critical(mail, POP3_POLICY_LOG_PREFIX"%s", error);
		return -1;
	}
	/* a damaged record is written again with the backend's UIDL */
	if ((ret == 0 || recovered) && pop3_policy_uidl_is_valid(backend)) {
		pending = pop3_policy_pending_get(pbox, guid);
		pending->uidl = p_strdup(pbox->pending_pool, backend);
		hash_table_update(pbox->pending_uidls, pending->uidl,
				  pending->guid);
	}
	*uidl_r = backend;
	return 0;
}
