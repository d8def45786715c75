/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "mail-index-modseq.h"
#include "mail-namespace.h"
#include "mailbox-list-private.h"
#include "mailbox-uidvalidity.h"
#include "index-pop3-uidl.h"
#include "lmdb-link.h"
#include "lmdb-storage.h"

/* A mailbox's identity in both places: the lmdb-hdr extension of its
   index (GUID, flags) and its LMDB mailbox record, and making them (also
   again, after the index was lost). */

int lmdb_read_header(struct lmdb_mailbox *mbox,
		     struct lmdb_index_header *hdr_r, bool log_error)
{
	struct mail_index_view *view;
	const void *data;
	size_t data_size;
	int ret = 0;

	view = mail_index_view_open(mbox->box.index);
	mail_index_get_header_ext(view, mbox->hdr_ext_id, &data, &data_size);
	i_zero(hdr_r);
	if (data_size < sizeof(guid_128_t)) {
		if (log_error && !mbox->box.creating) {
			mailbox_set_critical(&mbox->box,
				"lmdb: Invalid lmdb-hdr size %zu", data_size);
		}
		ret = -1;
	} else {
		memcpy(hdr_r, data, I_MIN(data_size, sizeof(*hdr_r)));
		if (guid_128_is_empty(hdr_r->mailbox_guid))
			ret = -1;
	}
	mail_index_view_close(&view);
	return ret;
}

void lmdb_update_header(struct lmdb_mailbox *mbox,
			struct mail_index_transaction *trans,
			const struct lmdb_index_header *hdr)
{
	struct lmdb_index_header old;
	const void *data;
	size_t data_size;

	mail_index_get_header_ext(mbox->box.view, mbox->hdr_ext_id,
				  &data, &data_size);
	i_zero(&old);
	/* data is NULL while the index has no lmdb-hdr yet (a new mailbox,
	   a lost index): memcpy() from NULL is undefined even for 0 bytes,
	   and 2.4's lib.h asserts it */
	if (data_size > 0)
		memcpy(&old, data, I_MIN(data_size, sizeof(old)));
	if (data_size != sizeof(*hdr))
		mail_index_ext_resize_hdr(trans, mbox->hdr_ext_id, sizeof(*hdr));
	if (data_size != sizeof(*hdr) || memcmp(&old, hdr, sizeof(old)) != 0) {
		mail_index_update_header_ext(trans, mbox->hdr_ext_id, 0,
					     hdr, sizeof(*hdr));
	}
}

void lmdb_mailbox_fallback_record(struct lmdb_mailbox *mbox,
				  struct mail_index_view *view,
				  struct lmdb_mailbox_record *rec_r)
{
	const struct mail_index_header *hdr = mail_index_get_header(view);

	i_zero(rec_r);
	rec_r->state = LMDB_MAILBOX_STATE_ACTIVE;
	rec_r->uid_validity = hdr->uid_validity;
	rec_r->highest_uid = hdr->next_uid > 0 ? hdr->next_uid - 1 : 0;
	rec_r->highest_modseq = mail_index_modseq_get_highest(view);
	rec_r->created = ioloop_time;
	rec_r->hierarchy_sep = mail_namespace_get_sep(mbox->box.list->ns);
	rec_r->name = mbox->box.vname;
}

bool lmdb_mailbox_have_pop3_orders(struct lmdb_mailbox *mbox)
{
	const struct lmdb_index_header *hdr;
	const void *data;
	size_t size;

	mail_index_get_header_ext(mbox->box.view, mbox->hdr_ext_id,
				  &data, &size);
	if (size < sizeof(*hdr))
		return TRUE;
	hdr = data;
	return (hdr->flags & LMDB_INDEX_HEADER_FLAG_HAVE_POP3_ORDERS) != 0;
}

struct lmdb_mailbox_find_ctx {
	const char *name;
	guid_128_t guid;
	struct lmdb_mailbox_record rec;
	pool_t pool;
	bool found;
};

/* Find the active mailbox record carrying this name: after the index was
   lost, that is how a mailbox gets its GUID (and its mail) back. */
static int lmdb_mailbox_find_by_name(struct lmdb_storage *storage,
				     struct lmdb_mailbox_find_ctx *ctx,
				     const char **error_r)
{
	struct lmdb_env *env = storage->env;
	struct lmdb_mailbox_record rec;
	MDB_txn *txn;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	int ret;

	if (lmdb_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	if ((ret = mdb_cursor_open(txn, env->dbi_mailboxes, &cursor)) != 0) {
		lmdb_env_read_end(env, &txn);
		*error_r = t_strdup_printf("mdb_cursor_open(mailboxes) failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		if (key.mv_size != GUID_128_SIZE)
			continue;
		if (!lmdb_mailbox_record_decode(key.mv_data, val.mv_data,
						val.mv_size, ctx->pool, &rec,
						&error)) {
			e_error(storage->storage.event,
				"lmdb: %s: skipping corrupted mailbox record %s: %s",
				env->path, guid_128_to_string(key.mv_data), error);
			continue;
		}
		if (rec.state == LMDB_MAILBOX_STATE_ACTIVE &&
		    strcmp(rec.name, ctx->name) == 0) {
			memcpy(ctx->guid, key.mv_data, GUID_128_SIZE);
			ctx->rec = rec;
			ctx->found = TRUE;
			break;
		}
	}
	mdb_cursor_close(cursor);
	lmdb_env_read_end(env, &txn);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("iterating mailboxes failed: %s",
					   mdb_strerror(ret));
		return -1;
	}
	return 0;
}

struct lmdb_mailbox_write_ctx {
	struct lmdb_env *env;
	const guid_128_t *guid;
	const char *name;
	char sep;
	uint32_t uid_validity;
	enum lmdb_mailbox_state state;
	/* only add a missing record, never change one */
	bool keep_existing;
};

static int
lmdb_mailbox_write_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_mailbox_write_ctx *ctx = context;
	struct lmdb_mailbox_record rec;
	int ret;

	ret = lmdb_mailbox_get(ctx->env, txn, *ctx->guid,
			       pool_datastack_create(), &rec, error_r);
	if (ret < 0)
		return MDB_CORRUPTED;
	if (ret > 0 && ctx->keep_existing)
		return 0;
	if (ret == 0) {
		i_zero(&rec);
		rec.created = ioloop_time;
	}
	if (ctx->name != NULL) {
		rec.name = ctx->name;
		rec.hierarchy_sep = ctx->sep;
	}
	if (ctx->uid_validity != 0)
		rec.uid_validity = ctx->uid_validity;
	rec.state = ctx->state;
	return lmdb_mailbox_put(ctx->env, txn, *ctx->guid, &rec, error_r);
}

int lmdb_mailbox_record_write(struct lmdb_mailbox *mbox,
			      uint32_t uid_validity,
			      enum lmdb_mailbox_state state,
			      bool keep_existing)
{
	struct mailbox *box = &mbox->box;
	struct lmdb_mailbox_write_ctx ctx;
	const char *error;
	int ret;

	i_zero(&ctx);
	ctx.env = mbox->storage->env;
	ctx.guid = &mbox->mailbox_guid;
	ctx.name = box->vname;
	ctx.sep = mail_namespace_get_sep(box->list->ns);
	ctx.uid_validity = uid_validity;
	ctx.state = state;
	ctx.keep_existing = keep_existing;
	ret = lmdb_env_write(ctx.env, lmdb_mailbox_write_txn, &ctx, TRUE, &error);
	if (ret != 0) {
		lmdb_storage_set_lmdb_error(box->storage, ret, error);
		return -1;
	}
	return 0;
}

int
lmdb_mailbox_create_indexes(struct mailbox *box,
			    const struct mailbox_update *update,
			    struct mail_index_transaction *trans)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	struct mail_index_transaction *new_trans = NULL;
	const struct mail_index_header *hdr;
	struct lmdb_index_header lhdr;
	struct lmdb_mailbox_find_ctx find;
	const char *error;
	uint32_t uid_validity = 0, uid_next;
	bool have_hdr, keep_record = FALSE;
	int ret;

	if (trans == NULL) {
		new_trans = mail_index_transaction_begin(box->view, 0);
		trans = new_trans;
	}
	hdr = mail_index_get_header(box->view);
	have_hdr = lmdb_read_header(mbox, &lhdr, FALSE) == 0;
	if (!have_hdr)
		i_zero(&lhdr);

	i_zero(&find);
	if (update != NULL && !guid_128_is_empty(update->mailbox_guid)) {
		memcpy(lhdr.mailbox_guid, update->mailbox_guid,
		       sizeof(lhdr.mailbox_guid));
		if (box->corrupted_mailbox_name) {
			/* Dovecot's list rebuild, under a placeholder name */
			ret = lmdb_mailbox_lost_name_restore(mbox,
				update->mailbox_guid, trans, &uid_validity);
			if (ret < 0) {
				if (new_trans != NULL)
					mail_index_transaction_rollback(&new_trans);
				return -1;
			}
			keep_record = ret > 0;
		}
	} else if (!have_hdr) {
		/* a new mailbox, or one whose index was lost: if LMDB
		   knows a mailbox of this name, this is that mailbox */
		find.name = box->vname;
		find.pool = pool_datastack_create();
		if (lmdb_mailbox_find_by_name(mbox->storage, &find,
					      &error) < 0) {
			mailbox_set_critical(box, "lmdb: %s", error);
			if (new_trans != NULL)
				mail_index_transaction_rollback(&new_trans);
			return -1;
		}
		if (find.found) {
			memcpy(lhdr.mailbox_guid, find.guid,
			       sizeof(lhdr.mailbox_guid));
			uid_validity = find.rec.uid_validity;
			mbox->need_adopt = TRUE;
			e_debug(box->event, "lmdb: Index lost, recovering "
				"mailbox GUID %s from LMDB",
				guid_128_to_string(find.guid));
		} else {
			guid_128_generate(lhdr.mailbox_guid);
		}
	}

	if (update != NULL && update->uid_validity != 0)
		uid_validity = update->uid_validity;
	else if (hdr->uid_validity != 0)
		uid_validity = hdr->uid_validity;
	else if (uid_validity == 0) {
		uid_validity = mailbox_uidvalidity_next(box->list,
			t_strconcat(mailbox_list_get_root_forced(box->list,
				MAILBOX_LIST_PATH_TYPE_CONTROL),
				"/"LMDB_UIDVALIDITY_FILE_NAME, NULL));
	}

	if (hdr->uid_validity != uid_validity) {
		mail_index_update_header(trans,
			offsetof(struct mail_index_header, uid_validity),
			&uid_validity, sizeof(uid_validity), TRUE);
	}
	if (update != NULL && hdr->next_uid < update->min_next_uid) {
		uid_next = update->min_next_uid;
		mail_index_update_header(trans,
			offsetof(struct mail_index_header, next_uid),
			&uid_next, sizeof(uid_next), TRUE);
	}
	if (update != NULL && update->min_first_recent_uid != 0 &&
	    hdr->first_recent_uid < update->min_first_recent_uid) {
		uint32_t first_recent_uid = update->min_first_recent_uid;

		mail_index_update_header(trans,
			offsetof(struct mail_index_header, first_recent_uid),
			&first_recent_uid, sizeof(first_recent_uid), FALSE);
	}
	if (update != NULL && update->min_highest_modseq != 0 &&
	    mail_index_modseq_get_highest(box->view) <
	    update->min_highest_modseq) {
		mail_index_modseq_enable(box->index);
		mail_index_update_highest_modseq(trans,
						 update->min_highest_modseq);
	}
	if (box->inbox_user && box->creating && !find.found)
		index_pop3_uidl_set_max_uid(box, trans, 0);

	lmdb_update_header(mbox, trans, &lhdr);
	memcpy(mbox->mailbox_guid, lhdr.mailbox_guid,
	       sizeof(mbox->mailbox_guid));
	/* LMDB may already hold mail for this GUID (index lost, recovery,
	   dsync): the next sync appends what the index lacks */
	mbox->need_adopt = TRUE;

	/* LMDB last: it is the innermost lock. An open (neither creating
	   nor updating) doesn't hold the list lock: a record that exists
	   is left as a concurrent rename or delete may have just written
	   it; one found by name above needs no change anyway. */
	if (lmdb_mailbox_record_write(mbox, uid_validity,
				      LMDB_MAILBOX_STATE_ACTIVE, keep_record ||
				      (!box->creating && update == NULL)) < 0) {
		if (new_trans != NULL)
			mail_index_transaction_rollback(&new_trans);
		return -1;
	}
	if (new_trans != NULL) {
		if (mail_index_transaction_commit(&new_trans) < 0) {
			mailbox_set_index_error(box);
			return -1;
		}
	}
	return 0;
}

int lmdb_mailbox_create_indexes_locked(struct mailbox *box,
				       const struct mailbox_update *update)
{
	struct mail_index_sync_ctx *sync_ctx;
	struct mail_index_view *view;
	struct mail_index_transaction *trans;
	int ret;

	/* the index sync lock serialises creators */
	ret = mail_index_sync_begin(box->index, &sync_ctx, &view, &trans, 0);
	if (ret <= 0) {
		i_assert(ret != 0);
		mailbox_set_index_error(box);
		return -1;
	}
	if (mail_index_get_header(view)->uid_validity == 0) {
		if (lmdb_mailbox_create_indexes(box, update, trans) < 0) {
			mail_index_sync_rollback(&sync_ctx);
			return -1;
		}
	}
	return mail_index_sync_commit(&sync_ctx);
}
