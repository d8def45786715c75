/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "mail-index.h"
#include "mail-cache.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "mailbox-list-iter.h"
#include "lmdb-link.h"
#include "lmdb-storage.h"
#include "doveadm-lmdb-salvage.h"

/* doveadm lmdb salvage and the mailbox indexes: before the swap, what
   each listed mailbox's index knows (read with lib-index alone: opening
   the mailbox would touch LMDB); after it, mailboxes created and indexes
   rebuilt from the salvaged links. */

struct lmdb_salvage_index {
	struct mailbox *box;
	struct mail_index *index;
	struct mail_index_view *view;
	uint32_t hdr_ext_id;
};

/* Open a mailbox's index read-only with lib-index alone (opening the
   mailbox would touch LMDB). Returns 1, 0 if it has none. */
static int lmdb_salvage_index_open(struct mail_namespace *ns,
				   const char *vname,
				   struct lmdb_salvage_index *idx_r)
{
	const char *dir, *cache_dir;

	i_zero(idx_r);
	idx_r->box = mailbox_alloc(ns->list, vname, MAILBOX_FLAG_IGNORE_ACLS);
	if (mailbox_get_path_to(idx_r->box, MAILBOX_LIST_PATH_TYPE_INDEX,
				&dir) <= 0) {
		mailbox_free(&idx_r->box);
		return 0;
	}
	idx_r->index = mail_index_alloc(idx_r->box->event, dir,
					MAIL_INDEX_PREFIX);
	if (mailbox_get_path_to(idx_r->box, MAILBOX_LIST_PATH_TYPE_INDEX_CACHE,
				&cache_dir) > 0 && strcmp(cache_dir, dir) != 0)
		mail_index_set_cache_dir(idx_r->index, cache_dir);
	idx_r->hdr_ext_id = mail_index_ext_register(idx_r->index, "lmdb-hdr",
		sizeof(struct lmdb_index_header), 0, 0);
	if (mail_index_open(idx_r->index, MAIL_INDEX_OPEN_FLAG_READONLY) <= 0) {
		mail_index_free(&idx_r->index);
		mailbox_free(&idx_r->box);
		return 0;
	}
	idx_r->view = mail_index_view_open(idx_r->index);
	return 1;
}

static void lmdb_salvage_index_close(struct lmdb_salvage_index *idx)
{
	mail_index_view_close(&idx->view);
	mail_index_close(idx->index);
	mail_index_free(&idx->index);
	mailbox_free(&idx->box);
}

/* What the index of a listed mailbox says: its GUID, UIDVALIDITY,
   next UID and every UID. Returns FALSE if it has no usable index. */
static bool lmdb_salvage_read_index(struct mail_namespace *ns,
				    const char *vname, pool_t pool,
				    struct lmdb_salvage_mailbox_info *info_r)
{
	struct lmdb_salvage_index idx;
	const struct mail_index_header *hdr;
	struct lmdb_index_header lhdr;
	const void *data;
	size_t size;
	uint32_t seq, count, *uids;

	if (lmdb_salvage_index_open(ns, vname, &idx) <= 0)
		return FALSE;
	mail_index_get_header_ext(idx.view, idx.hdr_ext_id, &data, &size);
	i_zero(&lhdr);
	/* data is NULL when the index has no lmdb-hdr (memcpy() from
	   NULL is undefined even for 0 bytes; 2.4 asserts it) */
	if (size > 0)
		memcpy(&lhdr, data, I_MIN(size, sizeof(lhdr)));
	if (size < sizeof(guid_128_t) || guid_128_is_empty(lhdr.mailbox_guid)) {
		lmdb_salvage_index_close(&idx);
		return FALSE;
	}
	i_zero(info_r);
	memcpy(info_r->guid, lhdr.mailbox_guid, sizeof(info_r->guid));
	info_r->name = p_strdup(pool, vname);
	hdr = mail_index_get_header(idx.view);
	info_r->uid_validity = hdr->uid_validity;
	info_r->next_uid = hdr->next_uid;
	count = mail_index_view_get_messages_count(idx.view);
	uids = p_new(pool, uint32_t, count + 1);
	for (seq = 1; seq <= count; seq++)
		mail_index_lookup_uid(idx.view, seq, &uids[seq - 1]);
	info_r->uids = uids;
	info_r->uids_count = count;
	lmdb_salvage_index_close(&idx);
	return TRUE;
}

/* Every selectable mailbox of the namespaces this storage serves, and
   what their indexes say. */
int lmdb_salvage_collect(struct mail_user *user, struct mail_storage *storage,
			 pool_t pool, ARRAY_TYPE(lmdb_salvage_listed) *listed,
			 ARRAY_TYPE(lmdb_salvage_mailbox_info) *infos)
{
	struct mail_namespace *ns;
	struct mailbox_list_iterate_context *iter;
	const struct mailbox_info *info;
	struct lmdb_salvage_listed *l;
	struct lmdb_salvage_mailbox_info minfo;
	int ret = 0;

	for (ns = user->namespaces; ns != NULL; ns = ns->next) {
		if (ns->storage != storage)
			continue;
		iter = mailbox_list_iter_init(ns->list, "*",
					      MAILBOX_LIST_ITER_RAW_LIST |
					      MAILBOX_LIST_ITER_NO_AUTO_BOXES |
					      MAILBOX_LIST_ITER_RETURN_NO_FLAGS);
		while ((info = mailbox_list_iter_next(iter)) != NULL) T_BEGIN {
			if ((info->flags & (MAILBOX_NOSELECT |
					    MAILBOX_NONEXISTENT)) == 0) {
				l = array_append_space(listed);
				l->ns = ns;
				l->vname = p_strdup(pool, info->vname);
				if (lmdb_salvage_read_index(ns, info->vname,
							    pool, &minfo))
					array_push_back(infos, &minfo);
			}
		} T_END;
		if (mailbox_list_iter_deinit(&iter) < 0) {
			i_error("lmdb salvage: listing mailboxes failed: %s",
				mailbox_list_get_last_internal_error(ns->list,
								     NULL));
			ret = -1;
		}
	}
	return ret;
}

static const struct lmdb_salvage_listed *
lmdb_salvage_find_listed(const ARRAY_TYPE(lmdb_salvage_listed) *listed,
			 const char *name)
{
	const struct lmdb_salvage_listed *l;

	array_foreach(listed, l) {
		if (strcmp(l->vname, name) == 0)
			return l;
	}
	return NULL;
}

/* What an index knows of a UID whose link was lost (the salvage's
   lookup): its flags and keywords, and from the cache its Message-ID and
   POP3 UIDL. One index is kept open at a time: the salvage asks mailbox
   by mailbox. */
struct lmdb_salvage_lookup {
	const ARRAY_TYPE(lmdb_salvage_listed) *listed;
	const struct lmdb_salvage_mailbox_info *info;
	bool opened;
	struct lmdb_salvage_index idx;
	struct mail_cache_view *cache_view;
	unsigned int mid_field, uidl_field;
	/* what the last answer points to */
	pool_t pool;
};

static void lmdb_salvage_lookup_close(struct lmdb_salvage_lookup *lk)
{
	if (lk->cache_view != NULL)
		mail_cache_view_close(&lk->cache_view);
	if (lk->opened)
		lmdb_salvage_index_close(&lk->idx);
	lk->opened = FALSE;
	lk->info = NULL;
}

static void lmdb_salvage_lookup_open(struct lmdb_salvage_lookup *lk,
				     const struct lmdb_salvage_mailbox_info *info)
{
	const struct lmdb_salvage_listed *l;
	struct mail_cache *cache;

	lmdb_salvage_lookup_close(lk);
	lk->mid_field = lk->uidl_field = UINT_MAX;
	lk->info = info;
	l = lmdb_salvage_find_listed(lk->listed, info->name);
	if (l == NULL || lmdb_salvage_index_open(l->ns, l->vname, &lk->idx) <= 0)
		return;
	lk->opened = TRUE;
	cache = mail_index_get_cache(lk->idx.index);
	if (mail_cache_open_and_verify(cache) <= 0)
		return;
	lk->mid_field = mail_cache_register_lookup(cache, "hdr.Message-ID");
	lk->uidl_field = mail_cache_register_lookup(cache, "pop3.uidl");
	lk->cache_view = mail_cache_view_open(cache, lk->idx.view);
	/* only looking: no caching decisions change */
	mail_cache_view_update_cache_decisions(lk->cache_view, FALSE);
}

struct lmdb_salvage_lookup *
lmdb_salvage_lookup_init(const ARRAY_TYPE(lmdb_salvage_listed) *listed)
{
	struct lmdb_salvage_lookup *lk = i_new(struct lmdb_salvage_lookup, 1);

	lk->listed = listed;
	lk->pool = pool_alloconly_create("lmdb salvage lookup", 1024);
	return lk;
}

void lmdb_salvage_lookup_deinit(struct lmdb_salvage_lookup **_lk)
{
	struct lmdb_salvage_lookup *lk = *_lk;

	*_lk = NULL;
	lmdb_salvage_lookup_close(lk);
	pool_unref(&lk->pool);
	i_free(lk);
}

bool lmdb_salvage_lookup_uid(const struct lmdb_salvage_mailbox_info *info,
			     uint32_t uid, void *context,
			     struct lmdb_salvage_index_message *msg_r)
{
	struct lmdb_salvage_lookup *lk = context;
	const struct mail_index_record *rec;
	const ARRAY_TYPE(keywords) *names;
	ARRAY_TYPE(keyword_indexes) kw_idx;
	const unsigned int *idxp;
	const char **keywords;
	string_t *str;
	buffer_t *buf;
	uint32_t seq;
	unsigned int n = 0;

	if (lk->info != info)
		lmdb_salvage_lookup_open(lk, info);
	p_clear(lk->pool);
	if (!lk->opened || !mail_index_lookup_seq(lk->idx.view, uid, &seq))
		return FALSE;
	rec = mail_index_lookup(lk->idx.view, seq);
	msg_r->flags = rec->flags & MAIL_FLAGS_NONRECENT;
	p_array_init(&kw_idx, lk->pool, 8);
	mail_index_lookup_keywords(lk->idx.view, seq, &kw_idx);
	names = mail_index_get_keywords(lk->idx.index);
	keywords = p_new(lk->pool, const char *, array_count(&kw_idx) + 1);
	array_foreach(&kw_idx, idxp) {
		if (*idxp < array_count(names))
			keywords[n++] = array_idx_elem(names, *idxp);
	}
	msg_r->keywords = keywords;
	msg_r->keywords_count = n;
	if (lk->cache_view == NULL)
		return TRUE;
	str = str_new(lk->pool, 256);
	if (lk->mid_field != UINT_MAX &&
	    mail_cache_lookup_headers(lk->cache_view, str, seq,
				      &lk->mid_field, 1) > 0)
		msg_r->message_id_header = str_c(str);
	buf = buffer_create_dynamic(lk->pool, 64);
	if (lk->uidl_field != UINT_MAX &&
	    mail_cache_lookup_field(lk->cache_view, buf, seq,
				    lk->uidl_field) > 0) {
		msg_r->pop3_uidl = p_strndup(lk->pool, buf->data, buf->used);
	}
	return TRUE;
}

/* --- afterwards --- */

/* Mailboxes the new environment has but the mailbox list doesn't (their
   names were lost, or the relinked messages' mailbox): created with
   their GUID and UIDVALIDITY, as doveadm lmdb recover does. */
int lmdb_salvage_create_missing(struct mail_user *user,
				struct lmdb_storage *storage, pool_t pool,
				ARRAY_TYPE(lmdb_salvage_listed) *listed)
{
	struct lmdb_env *env = storage->env;
	struct lmdb_mailbox_record rec;
	struct lmdb_salvage_listed *l;
	struct mailbox_update update;
	struct mailbox *box;
	ARRAY(struct mailbox_update) updates;
	ARRAY_TYPE(const_string) names;
	const char *error, *name;
	MDB_cursor *cursor;
	MDB_val key, val;
	MDB_txn *txn;
	unsigned int i;
	int ret;

	p_array_init(&updates, pool, 4);
	p_array_init(&names, pool, 4);
	if (lmdb_env_read_begin(env, &txn, &error) < 0) {
		i_error("lmdb salvage: %s", error);
		return -1;
	}
	ret = mdb_cursor_open(txn, env->dbi_mailboxes, &cursor);
	while (ret == 0 &&
	       (ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		if (key.mv_size != GUID_128_SIZE ||
		    !lmdb_mailbox_record_decode(key.mv_data, val.mv_data,
						val.mv_size, pool, &rec,
						&error) ||
		    rec.state != LMDB_MAILBOX_STATE_ACTIVE ||
		    lmdb_salvage_find_listed(listed, rec.name) != NULL)
			continue;
		i_zero(&update);
		memcpy(update.mailbox_guid, key.mv_data,
		       sizeof(update.mailbox_guid));
		update.uid_validity = rec.uid_validity;
		array_push_back(&updates, &update);
		array_push_back(&names, &rec.name);
	}
	if (ret == MDB_NOTFOUND)
		mdb_cursor_close(cursor);
	lmdb_env_read_end(env, &txn);
	if (ret != MDB_NOTFOUND) {
		i_error("lmdb salvage: reading mailboxes failed: %s",
			mdb_strerror(ret));
		return -1;
	}
	ret = 0;
	for (i = 0; i < array_count(&names); i++) {
		struct mail_namespace *ns;

		name = array_idx_elem(&names, i);
		ns = mail_namespace_find(user->namespaces, name);
		box = mailbox_alloc(ns->list, name, MAILBOX_FLAG_IGNORE_ACLS);
		if (mailbox_create(box, array_idx(&updates, i), FALSE) < 0 &&
		    mailbox_get_last_mail_error(box) != MAIL_ERROR_EXISTS) {
			i_error("lmdb salvage: creating %s failed: %s", name,
				mailbox_get_last_internal_error(box, NULL));
			ret = -1;
		} else {
			l = array_append_space(listed);
			l->ns = ns;
			l->vname = p_strdup(pool, name);
		}
		mailbox_free(&box);
	}
	return ret;
}

/* Every mailbox's index rebuilt from its links: what the salvage lost
   leaves the index, flags stay where the old index had the message. */
int lmdb_salvage_resync(const ARRAY_TYPE(lmdb_salvage_listed) *listed)
{
	const struct lmdb_salvage_listed *l;
	struct mailbox *box;
	int ret = 0;

	array_foreach(listed, l) {
		box = mailbox_alloc(l->ns->list, l->vname,
				    MAILBOX_FLAG_IGNORE_ACLS);
		if (mailbox_sync(box, MAILBOX_SYNC_FLAG_FORCE_RESYNC) < 0) {
			i_error("lmdb salvage: rebuilding the index of %s "
				"failed: %s", l->vname,
				mailbox_get_last_internal_error(box, NULL));
			ret = -1;
		}
		mailbox_free(&box);
	}
	return ret;
}
