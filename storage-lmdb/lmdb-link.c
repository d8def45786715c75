/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "lmdb-link.h"

struct lmdb_link_iter {
	struct lmdb_env *env;
	MDB_cursor *cursor;
	guid_128_t mailbox_guid;
	uint32_t first_uid;
	bool started, finished;
	/* the LMDB failure that ended the iteration, 0 if none */
	int ret;
	unsigned int damaged;
	/* keys with this mailbox's GUID that don't decode (no UID known) */
	unsigned int bad_keys;
	char *error;
};

int lmdb_link_get(struct lmdb_env *env, MDB_txn *txn,
		  const guid_128_t mailbox_guid, uint32_t uid, pool_t pool,
		  struct lmdb_link_record *rec_r, const char **error_r)
{
	unsigned char key_data[LMDB_LINK_KEY_SIZE];
	MDB_val key, val;
	int ret;

	lmdb_link_key_encode(mailbox_guid, uid, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	ret = mdb_get(txn, env->dbi_links, &key, &val);
	if (ret == MDB_NOTFOUND)
		return 0;
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_get(link uid=%u) failed: %s",
					   uid, mdb_strerror(ret));
		return -1;
	}
	if (!lmdb_link_record_decode(mailbox_guid, uid, val.mv_data,
				     val.mv_size, pool, rec_r, error_r)) {
		*error_r = t_strdup_printf("link uid=%u is damaged: %s",
					   uid, *error_r);
		return -2;
	}
	return 1;
}

static int
lmdb_link_write(struct lmdb_env *env, MDB_txn *txn,
		const guid_128_t mailbox_guid, uint32_t uid,
		const struct lmdb_link_record *rec, unsigned int flags,
		const char **error_r)
{
	unsigned char key_data[LMDB_LINK_KEY_SIZE];
	struct lmdb_link_record old;
	const char *error;
	buffer_t *buf = t_buffer_create(128);
	MDB_val key, val;
	int ret;

	if (!lmdb_link_record_encode(buf, mailbox_guid, uid, rec, error_r)) {
		*error_r = t_strdup_printf("link uid=%u: %s", uid, *error_r);
		return EINVAL;
	}
	lmdb_link_key_encode(mailbox_guid, uid, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	val.mv_data = (void *)buf->data;
	val.mv_size = buf->used;
	ret = mdb_put(txn, env->dbi_links, &key, &val, flags);
	if (ret == MDB_KEYEXIST) {
		/* val now points at the link that is in the way */
		*error_r = lmdb_link_record_decode(mailbox_guid, uid,
						   val.mv_data, val.mv_size,
						   pool_datastack_create(),
						   &old, &error) ?
			t_strdup_printf("link for uid=%u already exists "
					"(body %"PRIu64")", uid, old.body_id) :
			t_strdup_printf("link for uid=%u already exists "
					"(damaged: %s)", uid, error);
	} else if (ret != 0) {
		*error_r = t_strdup_printf("mdb_put(link uid=%u) failed: %s",
					   uid, mdb_strerror(ret));
	}
	return ret;
}

int lmdb_link_put(struct lmdb_env *env, MDB_txn *txn,
		  const guid_128_t mailbox_guid, uint32_t uid,
		  const struct lmdb_link_record *rec, const char **error_r)
{
	return lmdb_link_write(env, txn, mailbox_guid, uid, rec, 0, error_r);
}

int lmdb_link_add(struct lmdb_env *env, MDB_txn *txn,
		  const guid_128_t mailbox_guid, uint32_t uid,
		  const struct lmdb_link_record *rec, const char **error_r)
{
	return lmdb_link_write(env, txn, mailbox_guid, uid, rec,
			       MDB_NOOVERWRITE, error_r);
}

/* Position a new cursor on the link of uid. Returns 0 (the caller closes
   *cursor_r), MDB_NOTFOUND, or another LMDB code with *error_r. */
static int
lmdb_link_seek(struct lmdb_env *env, MDB_txn *txn,
	       const guid_128_t mailbox_guid, uint32_t uid,
	       unsigned char key_data[LMDB_LINK_KEY_SIZE],
	       MDB_cursor **cursor_r, MDB_val *val_r, const char **error_r)
{
	MDB_val key;
	int ret;

	if ((ret = mdb_cursor_open(txn, env->dbi_links, cursor_r)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(links) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	lmdb_link_key_encode(mailbox_guid, uid, key_data);
	key.mv_data = key_data;
	key.mv_size = LMDB_LINK_KEY_SIZE;
	ret = mdb_cursor_get(*cursor_r, &key, val_r, MDB_SET);
	if (ret != 0) {
		mdb_cursor_close(*cursor_r);
		*cursor_r = NULL;
		if (ret != MDB_NOTFOUND) {
			*error_r = t_strdup_printf(
				"looking up link uid=%u failed: %s",
				uid, mdb_strerror(ret));
		}
	}
	return ret;
}

int lmdb_link_set_flags(struct lmdb_env *env, MDB_txn *txn,
			const guid_128_t mailbox_guid, uint32_t uid,
			const struct lmdb_link_record *src,
			const char **error_r)
{
	unsigned char key_data[LMDB_LINK_KEY_SIZE];
	struct lmdb_link_record link;
	buffer_t *buf;
	MDB_cursor *cursor;
	MDB_val val;
	int ret;

	ret = lmdb_link_seek(env, txn, mailbox_guid, uid, key_data,
			     &cursor, &val, error_r);
	if (ret != 0)
		return ret == MDB_NOTFOUND ? 0 : ret;
	if (!lmdb_link_record_decode(mailbox_guid, uid, val.mv_data,
				     val.mv_size, pool_datastack_create(),
				     &link, error_r)) {
		mdb_cursor_close(cursor);
		*error_r = t_strdup_printf("link uid=%u is damaged: %s",
					   uid, *error_r);
		return MDB_CORRUPTED;
	}
	link.flags = src->flags;
	link.modseq = src->modseq;
	link.keywords_count = src->keywords_count;
	link.keywords = src->keywords;
	buf = t_buffer_create(128);
	if (!lmdb_link_record_encode(buf, mailbox_guid, uid, &link, error_r)) {
		mdb_cursor_close(cursor);
		*error_r = t_strdup_printf("link uid=%u: %s", uid, *error_r);
		return EINVAL;
	}
	ret = lmdb_env_cursor_put_current(cursor, key_data, sizeof(key_data),
					  buf);
	mdb_cursor_close(cursor);
	if (ret != 0) {
		*error_r = t_strdup_printf("updating link uid=%u failed: %s",
					   uid, mdb_strerror(ret));
	}
	return ret;
}

int lmdb_link_take(struct lmdb_env *env, MDB_txn *txn,
		   const guid_128_t mailbox_guid, uint32_t uid, pool_t pool,
		   struct lmdb_link_record *rec_r, int *found_r,
		   const char **error_r)
{
	unsigned char key_data[LMDB_LINK_KEY_SIZE];
	MDB_cursor *cursor;
	MDB_val val;
	int ret;

	*found_r = 0;
	ret = lmdb_link_seek(env, txn, mailbox_guid, uid, key_data,
			     &cursor, &val, error_r);
	if (ret != 0)
		return ret == MDB_NOTFOUND ? 0 : ret;
	/* decode before the delete: val points into the page */
	if (lmdb_link_record_decode(mailbox_guid, uid, val.mv_data,
				    val.mv_size, pool, rec_r, error_r))
		*found_r = 1;
	else {
		*error_r = t_strdup_printf("link uid=%u is damaged: %s",
					   uid, *error_r);
		*found_r = -1;
	}
	ret = mdb_cursor_del(cursor, 0);
	mdb_cursor_close(cursor);
	if (ret != 0) {
		*error_r = t_strdup_printf("deleting link uid=%u failed: %s",
					   uid, mdb_strerror(ret));
	}
	return ret;
}

int lmdb_link_delete(struct lmdb_env *env, MDB_txn *txn,
		     const guid_128_t mailbox_guid, uint32_t uid,
		     const char **error_r)
{
	unsigned char key_data[LMDB_LINK_KEY_SIZE];
	MDB_val key;
	int ret;

	lmdb_link_key_encode(mailbox_guid, uid, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	ret = mdb_del(txn, env->dbi_links, &key, NULL);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("mdb_del(link uid=%u) failed: %s",
					   uid, mdb_strerror(ret));
	}
	return ret;
}

int lmdb_link_get_highest_uid(struct lmdb_env *env, MDB_txn *txn,
			      const guid_128_t mailbox_guid,
			      uint32_t *uid_r, const char **error_r)
{
	unsigned char key_data[LMDB_LINK_KEY_SIZE];
	guid_128_t guid;
	MDB_cursor *cursor;
	MDB_val key, val;
	uint32_t uid;
	int ret;

	*uid_r = 0;
	if ((ret = mdb_cursor_open(txn, env->dbi_links, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(links) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	lmdb_link_key_encode(mailbox_guid, (uint32_t)-1, key_data);
	key.mv_data = key_data;
	key.mv_size = sizeof(key_data);
	/* position after this mailbox's last possible key, step back */
	ret = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
	if (ret == 0 && key.mv_size == sizeof(key_data) &&
	    memcmp(key.mv_data, key_data, sizeof(key_data)) == 0)
		;
	else if (ret == 0 || ret == MDB_NOTFOUND)
		ret = mdb_cursor_get(cursor, &key, &val,
				     ret == 0 ? MDB_PREV : MDB_LAST);
	/* step back over malformed keys of this mailbox: one damaged key
	   must not make the mailbox look empty */
	while (ret == 0 && key.mv_size >= GUID_128_SIZE &&
	       memcmp(key.mv_data, mailbox_guid, GUID_128_SIZE) == 0 &&
	       !lmdb_link_key_decode(key.mv_data, key.mv_size, guid, &uid))
		ret = mdb_cursor_get(cursor, &key, &val, MDB_PREV);
	if (ret == MDB_NOTFOUND)
		ret = 0;
	else if (ret == 0 && lmdb_link_key_decode(key.mv_data, key.mv_size,
						  guid, &uid) &&
		 guid_128_equals(guid, mailbox_guid))
		*uid_r = uid;
	mdb_cursor_close(cursor);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("looking up highest uid failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	return 0;
}

struct lmdb_link_iter *
lmdb_link_iter_init(struct lmdb_env *env, MDB_txn *txn,
		    const guid_128_t mailbox_guid, uint32_t first_uid)
{
	struct lmdb_link_iter *iter;

	iter = i_new(struct lmdb_link_iter, 1);
	iter->env = env;
	memcpy(iter->mailbox_guid, mailbox_guid, sizeof(iter->mailbox_guid));
	iter->first_uid = first_uid;
	iter->ret = mdb_cursor_open(txn, env->dbi_links, &iter->cursor);
	if (iter->ret != 0) {
		iter->error = i_strdup_printf("mdb_cursor_open(links) failed: %s",
					      mdb_strerror(iter->ret));
		iter->cursor = NULL;
		iter->finished = TRUE;
	}
	return iter;
}

int lmdb_link_iter_next(struct lmdb_link_iter *iter, pool_t pool,
			uint32_t *uid_r, struct lmdb_link_record *rec_r)
{
	unsigned char key_data[LMDB_LINK_KEY_SIZE];
	guid_128_t guid;
	MDB_val key, val;
	const char *error;
	int ret;

	if (iter->finished)
		return iter->ret == 0 ? 0 : -1;
	if (!iter->started) {
		iter->started = TRUE;
		lmdb_link_key_encode(iter->mailbox_guid, iter->first_uid,
				     key_data);
		key.mv_data = key_data;
		key.mv_size = sizeof(key_data);
		ret = mdb_cursor_get(iter->cursor, &key, &val, MDB_SET_RANGE);
	} else {
		ret = mdb_cursor_get(iter->cursor, &key, &val, MDB_NEXT);
	}
	/* a key with this mailbox's GUID that doesn't decode is damage,
	   not the end: the links after it are still the mailbox's */
	while (ret == 0 && key.mv_size >= GUID_128_SIZE &&
	       memcmp(key.mv_data, iter->mailbox_guid, GUID_128_SIZE) == 0 &&
	       !lmdb_link_key_decode(key.mv_data, key.mv_size, guid, uid_r)) {
		iter->bad_keys++;
		i_free(iter->error);
		iter->error = i_strdup_printf("malformed link key of %zu "
					      "bytes", key.mv_size);
		ret = mdb_cursor_get(iter->cursor, &key, &val, MDB_NEXT);
	}
	if (ret == MDB_NOTFOUND ||
	    (ret == 0 && (!lmdb_link_key_decode(key.mv_data, key.mv_size,
						guid, uid_r) ||
			  !guid_128_equals(guid, iter->mailbox_guid)))) {
		iter->finished = TRUE;
		return 0;
	}
	if (ret != 0) {
		/* the cursor itself failed (a damaged page): there is no
		   way to step over it, so the iteration ends here */
		iter->ret = ret;
		i_free(iter->error);
		iter->error = i_strdup_printf("mdb_cursor_get(links) failed: %s",
					      mdb_strerror(ret));
		iter->finished = TRUE;
		return -1;
	}
	if (!lmdb_link_record_decode(iter->mailbox_guid, *uid_r, val.mv_data,
				     val.mv_size, pool, rec_r, &error)) {
		i_free(iter->error);
		iter->error = i_strdup_printf("link uid=%u is damaged: %s",
					      *uid_r, error);
		iter->damaged++;
		return 2;
	}
	return 1;
}

const char *lmdb_link_iter_get_error(struct lmdb_link_iter *iter)
{
	return iter->error == NULL ? "" : iter->error;
}

unsigned int lmdb_link_iter_get_bad_keys(struct lmdb_link_iter *iter)
{
	return iter->bad_keys;
}

unsigned int lmdb_link_iter_get_damaged(struct lmdb_link_iter *iter)
{
	return iter->damaged;
}

int lmdb_link_iter_deinit(struct lmdb_link_iter **_iter, const char **error_r)
{
	struct lmdb_link_iter *iter = *_iter;
	int ret = iter->ret == 0 ? 0 : -1;

	*_iter = NULL;
	if (ret < 0)
		*error_r = t_strdup(iter->error);
	if (iter->cursor != NULL)
		mdb_cursor_close(iter->cursor);
	i_free(iter->error);
	i_free(iter);
	return ret;
}

int lmdb_mailbox_get(struct lmdb_env *env, MDB_txn *txn,
		     const guid_128_t mailbox_guid, pool_t pool,
		     struct lmdb_mailbox_record *rec_r, const char **error_r)
{
	MDB_val key, val;
	int ret;

	key.mv_data = (void *)mailbox_guid;
	key.mv_size = GUID_128_SIZE;
	ret = mdb_get(txn, env->dbi_mailboxes, &key, &val);
	if (ret == MDB_NOTFOUND)
		return 0;
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_get(mailbox %s) failed: %s",
					   guid_128_to_string(mailbox_guid),
					   mdb_strerror(ret));
		return -1;
	}
	if (!lmdb_mailbox_record_decode(mailbox_guid, val.mv_data,
					val.mv_size, pool, rec_r, error_r)) {
		*error_r = t_strdup_printf("mailbox %s record is damaged: %s",
					   guid_128_to_string(mailbox_guid),
					   *error_r);
		return -1;
	}
	return 1;
}

int lmdb_mailbox_put(struct lmdb_env *env, MDB_txn *txn,
		     const guid_128_t mailbox_guid,
		     const struct lmdb_mailbox_record *rec,
		     const char **error_r)
{
	buffer_t *buf = t_buffer_create(128);
	MDB_val key, val;
	int ret;

	if (!lmdb_mailbox_record_encode(buf, mailbox_guid, rec, error_r)) {
		*error_r = t_strdup_printf("mailbox %s: %s",
					   guid_128_to_string(mailbox_guid),
					   *error_r);
		return EINVAL;
	}
	key.mv_data = (void *)mailbox_guid;
	key.mv_size = GUID_128_SIZE;
	val.mv_data = (void *)buf->data;
	val.mv_size = buf->used;
	if ((ret = mdb_put(txn, env->dbi_mailboxes, &key, &val, 0)) != 0) {
		*error_r = t_strdup_printf("mdb_put(mailbox %s) failed: %s",
					   guid_128_to_string(mailbox_guid),
					   mdb_strerror(ret));
	}
	return ret;
}

int lmdb_mailbox_get_repair(struct lmdb_env *env, MDB_txn *txn,
			    const guid_128_t mailbox_guid,
			    const struct lmdb_mailbox_record *fallback,
			    pool_t pool, struct lmdb_mailbox_record *rec_r,
			    const char **damage_r, const char **error_r)
{
	const char *damage;
	uint32_t highest_uid;
	int ret;

	*damage_r = NULL;
	ret = lmdb_mailbox_get(env, txn, mailbox_guid, pool, rec_r, &damage);
	if (ret >= 0)
		return ret;
	/* damaged (or unreadable): what it held is known elsewhere. The
	   highest UID must stay above every link, so no UID is given
	   twice. */
	*rec_r = *fallback;
	if ((ret = lmdb_link_get_highest_uid(env, txn, mailbox_guid,
					     &highest_uid, error_r)) != 0)
		return -1;
	rec_r->highest_uid = I_MAX(rec_r->highest_uid, highest_uid);
	if (lmdb_mailbox_put(env, txn, mailbox_guid, rec_r, error_r) != 0)
		return -1;
	*damage_r = damage;
	return 1;
}

int lmdb_link_count(struct lmdb_env *env, MDB_txn *txn, int links,
		    int64_t vsize_bytes, const char **error_r)
{
	return lmdb_env_add_counters(env, txn, links, vsize_bytes, 0, 0,
				     error_r);
}
