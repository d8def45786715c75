/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "mail-namespace.h"
#include "pop3-policy-plugin.h"

/* What DELE+QUIT does. Dovecot's POP3 server either expunges
   (pop3_delete_type=expunge) or adds pop3_deleted_flag
   (pop3_delete_type=flag, the default when pop3_deleted_flag is set).
   Both paths are hooked, so the policy holds whichever type the admin
   configured: an expunge becomes a hide or a move, a flag becomes a
   move or gets \Seen added. */

static struct pop3_policy_mail *pop3_policy_pmail(struct mail *mail)
{
	return POP3_POLICY_MAIL_CONTEXT((struct mail_private *)mail);
}

static const char *pop3_policy_dele_rule(enum pop3_policy_dele dele)
{
	switch (dele) {
	case POP3_POLICY_DELE_EXPUNGE:
		break;
	case POP3_POLICY_DELE_KEEP:
		return "dele-keep";
	case POP3_POLICY_DELE_MARK_READ:
		return "dele-mark-read";
	case POP3_POLICY_DELE_MOVE:
		return "dele-move";
	}
	i_unreached();
}

static const char *pop3_policy_dele_action(enum pop3_policy_dele dele)
{
	switch (dele) {
	case POP3_POLICY_DELE_EXPUNGE:
		break;
	case POP3_POLICY_DELE_KEEP:
		return "hide";
	case POP3_POLICY_DELE_MARK_READ:
		return "mark-read";
	case POP3_POLICY_DELE_MOVE:
		return "move";
	}
	i_unreached();
}

static void pop3_policy_dele_audit(struct pop3_policy_mailbox *pbox,
				   struct mail *mail, bool hidden)
{
	struct pop3_policy_user *puser = pbox->puser;
	const char *guid, *uidl, *line;
	uoff_t vsize;

	if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0 ||
	    guid[0] == '\0')
		guid = "-";
	uidl = pop3_policy_mail_get_uidl(puser, mail);
	if (mail_get_virtual_size(mail, &vsize) < 0)
		vsize = 0;
	if (hidden && strcmp(guid, "-") != 0)
		pop3_policy_pending_get(pbox, guid)->hidden = TRUE;
	/* logged only if the transaction commits */
	if (pbox->dele_audit_pool == NULL) {
		pbox->dele_audit_pool =
			pool_alloconly_create("pop3_policy dele audit", 1024);
		p_array_init(&pbox->dele_audit, pbox->dele_audit_pool, 16);
	}
	line = p_strdup(pbox->dele_audit_pool, pop3_policy_audit_line(
		pop3_policy_dele_action(puser->set.dele), guid, uidl, vsize,
		pop3_policy_dele_rule(puser->set.dele)));
	array_push_back(&pbox->dele_audit, &line);
}

void pop3_policy_dele_audit_end(struct pop3_policy_mailbox *pbox,
				bool committed)
{
	const char *line;

	if (pbox->dele_audit_pool == NULL)
		return;
	if (committed) {
		array_foreach_elem(&pbox->dele_audit, line)
			e_info(pbox->puser->user->event, "%s", line);
	}
	pool_unref(&pbox->dele_audit_pool);
}

/* The message leaves the maildrop when this session commits: its
   record is dropped at logout, unless a copy is still there. */
static void pop3_policy_dele_note_gone(struct pop3_policy_mailbox *pbox,
				       struct mail *mail)
{
	struct pop3_policy_user *puser = pbox->puser;
	const char *guid;

	if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0 ||
	    guid[0] == '\0')
		return;
	if (!array_is_created(&puser->dele_gone))
		p_array_init(&puser->dele_gone, puser->user->pool, 16);
	guid = p_strdup(puser->user->pool, guid);
	array_push_back(&puser->dele_gone, &guid);
}

static int pop3_policy_dele_open_dest(struct pop3_policy_mailbox *pbox,
				      const char **error_r)
{
	struct mail_user *user = pbox->puser->user;
	const char *name = pbox->puser->set.dele_mailbox;
	struct mail_namespace *ns;
	struct mailbox *box;
	enum mail_error error;

	if (pbox->move_trans != NULL)
		return 0;
	ns = mail_namespace_find(user->namespaces, name);
	box = mailbox_alloc(ns->list, name, 0);
	if (mailbox_open(box) < 0) {
		(void)mailbox_get_last_error(box, &error);
		if (error != MAIL_ERROR_NOTFOUND ||
		    (mailbox_create(box, NULL, FALSE) < 0 &&
		     mailbox_get_last_mail_error(box) != MAIL_ERROR_EXISTS) ||
		    mailbox_open(box) < 0) {
			*error_r = t_strdup_printf("Can't open %s: %s", name,
				mailbox_get_last_internal_error(box, NULL));
			mailbox_free(&box);
			return -1;
		}
	}
	pbox->move_box = box;
	pbox->move_trans = mailbox_transaction_begin(box,
		MAILBOX_TRANSACTION_FLAG_EXTERNAL, "pop3_policy dele move");
	return 0;
}

/* File mail into the move mailbox and expunge it from the maildrop.
   The copy is committed before the source transaction. A message that
   can't be moved (damaged on disk, say) stays in the maildrop and the
   others are moved: QUIT still answers +OK, as Dovecot's POP3 server
   does for a DELE its storage didn't carry out; see docs/pop3-policy.md.
   Only a destination that can't be opened fails the whole QUIT. */
static void pop3_policy_dele_move(struct pop3_policy_mailbox *pbox,
				  struct mail *mail)
{
	struct pop3_policy_mail *pmail = pop3_policy_pmail(mail);
	struct mail_save_context *save_ctx;
	const char *error;
	int ret;

	if (pbox->move_failed)
		return;
	if (pop3_policy_dele_open_dest(pbox, &error) < 0) {
		e_error(mail_event(mail), POP3_POLICY_LOG_PREFIX
			"dele=move: %s", error);
		pbox->move_failed = TRUE;
		return;
	}
	save_ctx = mailbox_save_alloc(pbox->move_trans);
	mailbox_save_copy_flags(save_ctx, mail);
	/* a move, not a copy: quota lets it through even when the user is
	   over quota; its expunge comes back through our hook */
	pmail->dele_done = TRUE;
	ret = mailbox_move(&save_ctx, mail);
	pmail->dele_done = FALSE;
	if (ret == 0) {
		pop3_policy_dele_audit(pbox, mail, FALSE);
		pop3_policy_dele_note_gone(pbox, mail);
	} else {
		/* the mail event names the mailbox and UID */
		e_error(mail_event(mail), POP3_POLICY_LOG_PREFIX
			"dele=move: the message stays, moving it to %s "
			"failed: %s", mailbox_get_vname(pbox->move_box),
			mailbox_get_last_internal_error(pbox->move_box, NULL));
	}
}

/* keep / mark-read from an expunge: add the keyword instead */
static void pop3_policy_dele_hide(struct pop3_policy_mailbox *pbox,
				  struct mail *mail)
{
	struct pop3_policy_mail *pmail = pop3_policy_pmail(mail);
	const char *flag = pop3_policy_user_get_deleted_flag(pbox->puser);
	const char *names[2] = { flag, NULL };
	struct mail_keywords *kw;

	if (flag == NULL) {
		/* checked at session start; never expunge instead */
		e_error(mail_event(mail), POP3_POLICY_LOG_PREFIX
			"pop3_deleted_flag unknown: message kept visible");
		return;
	}
	if (mailbox_keywords_create(mail->box, names, &kw) < 0) {
		e_error(mail_event(mail), POP3_POLICY_LOG_PREFIX
			"Invalid pop3_deleted_flag %s: %s", flag,
			mailbox_get_last_internal_error(mail->box, NULL));
		return;
	}
	pmail->dele_done = TRUE;
	mail_update_keywords(mail, MODIFY_ADD, kw);
	if (pbox->puser->set.dele == POP3_POLICY_DELE_MARK_READ)
		mail_update_flags(mail, MODIFY_ADD, MAIL_SEEN);
	pmail->dele_done = FALSE;
	mailbox_keywords_unref(&kw);
	pop3_policy_dele_audit(pbox, mail, TRUE);
}

void pop3_policy_dele_expunge(struct mail *mail)
{
	struct pop3_policy_mail *pmail = pop3_policy_pmail(mail);
	struct pop3_policy_mailbox *pbox =
		POP3_POLICY_MAILBOX_CONTEXT(mail->box);

	if (pmail->dele_done || !pbox->maildrop) {
		pmail->module_ctx.super.expunge(mail);
		return;
	}
	switch (pbox->puser->set.dele) {
	case POP3_POLICY_DELE_EXPUNGE:
		pmail->module_ctx.super.expunge(mail);
		pop3_policy_dele_note_gone(pbox, mail);
		break;
	case POP3_POLICY_DELE_KEEP:
	case POP3_POLICY_DELE_MARK_READ:
		pop3_policy_dele_hide(pbox, mail);
		break;
	case POP3_POLICY_DELE_MOVE:
		pop3_policy_dele_move(pbox, mail);
		break;
	}
}

static bool
pop3_policy_keywords_have(struct mail *mail, struct mail_keywords *keywords,
			  const char *flag)
{
	unsigned int i, idx;

	if (keywords == NULL || flag == NULL ||
	    !mail_index_keyword_lookup(mail->box->index, flag, &idx))
		return FALSE;
	for (i = 0; i < keywords->count; i++) {
		if (keywords->idx[i] == idx)
			return TRUE;
	}
	return FALSE;
}

void pop3_policy_dele_update_keywords(struct mail *mail,
				      enum modify_type modify_type,
				      struct mail_keywords *keywords)
{
	struct pop3_policy_mail *pmail = pop3_policy_pmail(mail);
	struct pop3_policy_mailbox *pbox =
		POP3_POLICY_MAILBOX_CONTEXT(mail->box);
	enum pop3_policy_dele dele = pbox->puser->set.dele;

	/* the only keyword a POP3 session adds is pop3_deleted_flag, at
	   QUIT for DELEd messages (pop3_delete_type=flag) */
	if (pmail->dele_done || !pbox->maildrop ||
	    dele == POP3_POLICY_DELE_EXPUNGE || modify_type == MODIFY_REMOVE ||
	    !pop3_policy_keywords_have(mail, keywords,
			pop3_policy_user_get_deleted_flag(pbox->puser))) {
		pmail->module_ctx.super.update_keywords(mail, modify_type,
							keywords);
		return;
	}
	switch (dele) {
	case POP3_POLICY_DELE_EXPUNGE:
		i_unreached();
	case POP3_POLICY_DELE_KEEP:
	case POP3_POLICY_DELE_MARK_READ:
		pmail->module_ctx.super.update_keywords(mail, modify_type,
							keywords);
		if (dele == POP3_POLICY_DELE_MARK_READ) {
			pmail->dele_done = TRUE;
			mail_update_flags(mail, MODIFY_ADD, MAIL_SEEN);
			pmail->dele_done = FALSE;
		}
		pop3_policy_dele_audit(pbox, mail, TRUE);
		break;
	case POP3_POLICY_DELE_MOVE:
		/* filed away instead of flagged */
		pop3_policy_dele_move(pbox, mail);
		break;
	}
}

static void pop3_policy_dele_free_dest(struct pop3_policy_mailbox *pbox)
{
	if (pbox->move_trans != NULL)
		mailbox_transaction_rollback(&pbox->move_trans);
	if (pbox->move_box != NULL)
		mailbox_free(&pbox->move_box);
	pbox->move_failed = FALSE;
}

int pop3_policy_dele_transaction_commit(struct pop3_policy_mailbox *pbox,
					struct mailbox_transaction_context *t)
{
	const char *name;
	int ret = 0;

	if (pbox->move_trans == NULL && !pbox->move_failed)
		return 0;
	name = pbox->puser->set.dele_mailbox;
	if (pbox->move_failed) {
		mail_storage_set_error(t->box->storage, MAIL_ERROR_TEMP,
			t_strdup_printf("Moving DELEted messages to %s failed",
					name));
		ret = -1;
	} else if (mailbox_transaction_commit(&pbox->move_trans) < 0) {
		e_error(t->box->event, POP3_POLICY_LOG_PREFIX
			"dele=move: committing to %s failed: %s", name,
			mailbox_get_last_internal_error(pbox->move_box, NULL));
		mail_storage_set_error(t->box->storage, MAIL_ERROR_TEMP,
			t_strdup_printf("Moving DELEted messages to %s failed",
					name));
		ret = -1;
	}
	pop3_policy_dele_free_dest(pbox);
	return ret;
}

void pop3_policy_dele_transaction_rollback(struct pop3_policy_mailbox *pbox)
{
	pop3_policy_dele_free_dest(pbox);
	pop3_policy_dele_audit_end(pbox, FALSE);
}

void pop3_policy_dele_close(struct pop3_policy_mailbox *pbox)
{
	pop3_policy_dele_free_dest(pbox);
	pop3_policy_dele_audit_end(pbox, FALSE);
}
