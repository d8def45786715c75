/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "ioloop.h"
#include "str.h"
#include "strescape.h"
#include "file-lock.h"
#include "unlink-directory.h"
#include "mail-index.h"
#include "mail-cache.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "mailbox-list-iter.h"
#include "doveadm-mail.h"
#include "doveadm-print.h"
#include "lmdb-link.h"
#include "lmdb-salvage.h"
#include "lmdb-storage.h"
#include "doveadm-lmdb.h"

#include <stdio.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

/* doveadm lmdb salvage [-f]: build a fresh environment from what is still
   readable in a damaged one (lmdb-salvage.c), keep the damaged file
   aside, put the new one in its place and make every mailbox's index
   agree with it; report what was lost.

   1. The user's storage is created without opening the environment
      (lmdb_storage_no_env_open): LMDB's code never reads the damaged
      file, only lmdb-pagescan does.
   2. The swap lock is held exclusively from before the check for other
      processes until the new file is in place: opens wait (and fail
      after 30 seconds) meanwhile.
   3. A process that has the environment open would go on writing into
      the damaged file after the swap, and those writes would be lost:
      the command refuses (naming the processes) unless -f is given.
   4. What the indexes know (each mailbox's GUID, name, UIDs, cached
      Message-IDs) is read with lib-index alone, before the swap.
   5. The swap: the damaged data.mdb gets a second name,
      data.mdb.damaged-<time>, lock.mdb is moved aside likewise, the new
      file is renamed over data.mdb, the directory synced. data.mdb
      exists at every moment: a crash leaves either file in place.
   6. With the new environment open: mailboxes that exist in it but not
      in the mailbox list are created (as doveadm lmdb recover does),
      and every mailbox's index is rebuilt from its links (as doveadm
      force-resync does, keeping the old index's flags). */

#define LMDB_SALVAGE_DIR_NAME "salvage.tmp"
#define LMDB_SALVAGE_LOCK_TIMEOUT_SECS 30

struct lmdb_salvage_cmd_context {
	struct doveadm_mail_cmd_context ctx;
	bool force;
};

struct lmdb_salvage_listed {
	struct mail_namespace *ns;
	const char *vname;
};
ARRAY_DEFINE_TYPE(lmdb_salvage_listed, struct lmdb_salvage_listed);
ARRAY_DEFINE_TYPE(lmdb_salvage_mailbox_info, struct lmdb_salvage_mailbox_info);

/* --- other processes --- */

static int uint32_cmp(const uint32_t *a, const uint32_t *b)
{
	return *a < *b ? -1 : (*a > *b ? 1 : 0);
}

/* Processes holding a lock on lock.mdb: LMDB keeps a read lock on its
   first byte for as long as a process has the environment open. Read
   from /proc/locks, which needs no rights over those processes (the
   command runs as the mail user, and mail processes are not
   dumpable). */
static void lmdb_salvage_lock_holders(const char *lock_path,
				      ARRAY_TYPE(uint32_t) *pids)
{
	struct stat st;
	char line[512], type[32], mode[32], rw[32], devino[64];
	unsigned int maj, min;
	unsigned long long ino;
	int pid, n;
	FILE *f;

	if (stat(lock_path, &st) < 0)
		return;
	f = fopen("/proc/locks", "r");
	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		const char *p = strchr(line, ':');

		if (p == NULL)
			continue;
		p++;
		while (*p == ' ')
			p++;
		/* a blocked waiter: "-> POSIX ..." */
		if (p[0] == '-' && p[1] == '>')
			p += 2;
		n = sscanf(p, "%31s %31s %31s %d %63s", type, mode, rw, &pid,
			   devino);
		if (n != 5 || sscanf(devino, "%x:%x:%llu", &maj, &min,
				     &ino) != 3)
			continue;
		/* an anonymous device (btrfs, overlay) may be reported
		   differently than stat() does: the inode decides then */
		if (ino != (unsigned long long)st.st_ino ||
		    (maj != 0 && (maj != major(st.st_dev) ||
				  min != minor(st.st_dev))))
			continue;
		if (pid > 0 && pid != getpid())
			array_push_back(pids, (uint32_t *)&pid);
	}
	fclose(f);
}

/* Processes with data.mdb itself open, where /proc lets us see them. */
static void lmdb_salvage_fd_holders(const char *data_path,
				    ARRAY_TYPE(uint32_t) *pids)
{
	struct stat st, fd_st;
	struct dirent *d, *fd_d;
	DIR *proc, *fds;
	const char *fd_dir;
	uint32_t pid;

	if (stat(data_path, &st) < 0 || (proc = opendir("/proc")) == NULL)
		return;
	while ((d = readdir(proc)) != NULL) {
		if (str_to_uint32(d->d_name, &pid) < 0 ||
		    pid == (uint32_t)getpid())
			continue;
		fd_dir = t_strdup_printf("/proc/%u/fd", pid);
		if ((fds = opendir(fd_dir)) == NULL)
			continue;
		while ((fd_d = readdir(fds)) != NULL) {
			if (fd_d->d_name[0] == '.')
				continue;
			if (stat(t_strdup_printf("%s/%s", fd_dir,
						 fd_d->d_name), &fd_st) == 0 &&
			    fd_st.st_dev == st.st_dev &&
			    fd_st.st_ino == st.st_ino) {
				array_push_back(pids, &pid);
				break;
			}
		}
		(void)closedir(fds);
	}
	(void)closedir(proc);
}

static const char *lmdb_salvage_holders(const char *root)
{
	ARRAY_TYPE(uint32_t) pids;
	string_t *str = t_str_new(64);
	const uint32_t *pidp;
	uint32_t last = 0;

	t_array_init(&pids, 8);
	lmdb_salvage_lock_holders(t_strconcat(root, "/lock.mdb", NULL), &pids);
	lmdb_salvage_fd_holders(t_strconcat(root, "/data.mdb", NULL), &pids);
	array_sort(&pids, uint32_cmp);
	array_foreach(&pids, pidp) {
		if (*pidp == last)
			continue;
		last = *pidp;
		if (str_len(str) > 0)
			str_append(str, ", ");
		str_printfa(str, "%u", *pidp);
	}
	return str_len(str) == 0 ? NULL : str_c(str);
}

/* --- the indexes --- */

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
static int
lmdb_salvage_collect(struct mail_user *user, struct mail_storage *storage,
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

static bool
lmdb_salvage_lookup_uid(const struct lmdb_salvage_mailbox_info *info,
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

/* --- the swap --- */

static int lmdb_salvage_fsync_dir(const char *dir, const char **error_r)
{
	int fd = open(dir, O_RDONLY);

	if (fd == -1 || fsync(fd) < 0) {
		*error_r = t_strdup_printf("fsync(%s) failed: %m", dir);
		if (fd != -1)
			i_close_fd(&fd);
		return -1;
	}
	i_close_fd(&fd);
	return 0;
}

/* Put the new data.mdb in place; the damaged one stays as
   data.mdb.damaged-<time> (*aside_r). */
static int lmdb_salvage_swap(const char *root, const char *dest,
			     const char **aside_r, const char **error_r)
{
	const char *data_path = t_strconcat(root, "/data.mdb", NULL);
	const char *lock_path = t_strconcat(root, "/lock.mdb", NULL);
	const char *new_path = t_strconcat(dest, "/data.mdb", NULL);
	const char *suffix, *aside, *lock_aside;
	struct stat st;
	unsigned int n;

	suffix = t_strdup_printf("damaged-%ld", (long)ioloop_time);
	for (n = 2;; n++) {
		aside = t_strdup_printf("%s.%s", data_path, suffix);
		if (stat(aside, &st) < 0 && errno == ENOENT)
			break;
		suffix = t_strdup_printf("damaged-%ld-%u", (long)ioloop_time, n);
	}
	lock_aside = t_strdup_printf("%s.%s", lock_path, suffix);
	/* a second name first: data.mdb never ceases to exist, so no
	   process can meet a missing file and create an empty one */
	if (link(data_path, aside) < 0) {
		*error_r = t_strdup_printf("link(%s, %s) failed: %m",
					   data_path, aside);
		return -1;
	}
	/* the lock file belongs to the damaged file's transactions */
	if (rename(lock_path, lock_aside) < 0 && errno != ENOENT) {
		*error_r = t_strdup_printf("rename(%s, %s) failed: %m",
					   lock_path, lock_aside);
		i_unlink(aside);
		return -1;
	}
	if (rename(new_path, data_path) < 0) {
		*error_r = t_strdup_printf("rename(%s, %s) failed: %m",
					   new_path, data_path);
		if (rename(lock_aside, lock_path) < 0 && errno != ENOENT)
			i_error("rename(%s, %s) failed: %m", lock_aside,
				lock_path);
		i_unlink(aside);
		return -1;
	}
	*aside_r = aside;
	if (lmdb_salvage_fsync_dir(root, error_r) < 0) {
		*error_r = t_strdup_printf("%s (the salvaged file is in "
			"place, but until the directory reaches the disk a "
			"power loss can bring back the damaged one)", *error_r);
		return -1;
	}
	return 0;
}

/* --- the indexes, afterwards --- */

/* Mailboxes the new environment has but the mailbox list doesn't (their
   names were lost, or the relinked messages' mailbox): created with
   their GUID and UIDVALIDITY, as doveadm lmdb recover does. */
static int lmdb_salvage_create_missing(struct mail_user *user,
				       struct lmdb_storage *storage,
				       pool_t pool,
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
static int
lmdb_salvage_resync(const ARRAY_TYPE(lmdb_salvage_listed) *listed)
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

/* --- the report --- */

static void lmdb_salvage_print(const char *mailbox, uint32_t uid,
			       const char *message_id, const char *status)
{
	doveadm_print(mailbox);
	doveadm_print(uid == 0 ? "-" : dec2str(uid));
	doveadm_print(message_id == NULL ? "-" : message_id);
	doveadm_print(status);
}

static void lmdb_salvage_total(const char *what, uint64_t count)
{
	lmdb_salvage_print("-", 0, NULL,
			   t_strdup_printf("%s: %"PRIu64, what, count));
}

/* Prints the report; returns TRUE if anything was lost. */
static bool lmdb_salvage_report(const struct lmdb_salvage_result *result)
{
	const struct lmdb_salvage_message *msg;
	const struct lmdb_salvage_mailbox_note *note;
	unsigned int names_lost = 0;

	array_foreach(&result->lost, msg) {
		lmdb_salvage_print(msg->mailbox_name, msg->uid,
				   msg->message_id,
				   t_strconcat("lost: ", msg->reason, NULL));
	}
	array_foreach(&result->restored, msg) {
		lmdb_salvage_print(msg->mailbox_name, msg->uid,
				   msg->message_id,
				   t_strconcat("restored: ", msg->reason, NULL));
	}
	array_foreach(&result->relinked, msg) {
		lmdb_salvage_print(msg->mailbox_name, msg->uid,
				   msg->message_id,
				   t_strconcat("recovered: ", msg->reason, NULL));
	}
	array_foreach(&result->mailboxes, note) {
		const char *status = NULL;

		switch (note->fate) {
		case LMDB_SALVAGE_MAILBOX_FROM_INDEX:
			status = "mailbox record rebuilt from its index";
			break;
		case LMDB_SALVAGE_MAILBOX_NAME_LOST:
			status = t_strdup_printf("mailbox name lost: %u "
				"messages kept under this name", note->links);
			names_lost++;
			break;
		case LMDB_SALVAGE_MAILBOX_RECOVERY:
			status = t_strdup_printf("holds the %u messages whose "
				"links were lost", note->links);
			break;
		}
		lmdb_salvage_print(note->name, 0, NULL, status);
	}
	lmdb_salvage_total("records kept from trees",
			   result->records_tree);
	lmdb_salvage_total("records kept from orphan pages",
			   result->records_orphan);
	lmdb_salvage_total("records damaged", result->records_damaged);
	lmdb_salvage_total("orphan records unreadable",
			   result->orphans_unreadable);
	lmdb_salvage_total("orphan records duplicate",
			   result->records_duplicate);
	lmdb_salvage_total("orphan links expunged before",
			   result->records_stale);
	lmdb_salvage_total("records misplaced", result->records_misplaced);
	if (result->records_unverified > 0) {
		lmdb_salvage_total("records unverified (schema 1: no "
				   "checksums)", result->records_unverified);
	}
	lmdb_salvage_total("pages unreadable",
			   result->scan.pages_unreadable);
	lmdb_salvage_total("pages missing", result->scan.pages_missing);
	lmdb_salvage_total("messages kept", result->links);
	lmdb_salvage_total("messages lost", array_count(&result->lost));
	lmdb_salvage_total("messages restored",
			   array_count(&result->restored));
	lmdb_salvage_total("messages recovered",
			   array_count(&result->relinked));
	lmdb_salvage_total("bodies rebuilt", result->bodies_rebuilt);
	lmdb_salvage_total("bodies lost", result->bodies_lost);
	lmdb_salvage_total("bodies without links (freed by purge)",
			   result->bodies_unlinked);
	lmdb_salvage_total("mailbox names lost", names_lost);
	if (result->meta_fallback_reason != NULL) {
		lmdb_salvage_print("-", 0, NULL, t_strconcat(
			"the newest transaction was unreadable: ",
			result->meta_fallback_reason, NULL));
	}
	return array_count(&result->lost) > 0 || names_lost > 0;
}

/* --- the command --- */

static int
lmdb_salvage_build_locked(struct lmdb_salvage_cmd_context *ctx,
			  struct mail_user *user, struct lmdb_storage *storage,
			  pool_t pool, ARRAY_TYPE(lmdb_salvage_listed) *listed,
			  struct lmdb_salvage_result **result_r)
{
	const char *root = storage->env_path;
	const char *dest = t_strconcat(root, "/"LMDB_SALVAGE_DIR_NAME, NULL);
	struct lmdb_salvage_settings set;
	struct lmdb_salvage_lookup lookup;
	ARRAY_TYPE(lmdb_salvage_mailbox_info) infos;
	struct mail_namespace *ns;
	const char *holders, *error, *aside = NULL;
	struct stat st;
	int ret;

	holders = lmdb_salvage_holders(root);
	if (holders != NULL && !ctx->force) {
		i_error("lmdb salvage: %s is open by process(es) %s: they "
			"would go on writing into the damaged file after the "
			"swap. Stop them (doveadm kick, or stop the services) "
			"and try again, or use -f to salvage anyway", root,
			holders);
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_INUSE);
		return -1;
	}
	if (holders != NULL) {
		i_warning("lmdb salvage: %s is open by process(es) %s (-f): "
			  "what they write from now on is lost", root, holders);
	}

	p_array_init(&infos, pool, 16);
	if (lmdb_salvage_collect(user, &storage->storage, pool, listed,
				 &infos) < 0) {
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	if (stat(dest, &st) == 0 &&
	    unlink_directory(dest, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0) {
		i_error("lmdb salvage: %s", error);
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	if (mkdir(dest, 0700) < 0) {
		i_error("lmdb salvage: mkdir(%s) failed: %m", dest);
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	if (stat(t_strconcat(root, "/data.mdb", NULL), &st) < 0)
		i_zero(&st);

	ns = mail_namespace_find_inbox(user->namespaces);
	i_zero(&set);
	set.data_path = t_strconcat(root, "/data.mdb", NULL);
	set.dest_dir = dest;
	set.env_set = storage->set.env;
	set.env_set.mode = (st.st_mode & 0777) != 0 ?
		(st.st_mode & 0777) : storage->set.env.mode;
	set.hierarchy_sep = mail_namespace_get_sep(ns);
	set.now = ioloop_time;
	set.mailboxes = array_get(&infos, &set.mailboxes_count);
	i_zero(&lookup);
	lookup.listed = listed;
	lookup.pool = pool_alloconly_create("lmdb salvage lookup", 1024);
	set.lookup = lmdb_salvage_lookup_uid;
	set.lookup_context = &lookup;
	ret = lmdb_salvage_build(&set, result_r, &error);
	lmdb_salvage_lookup_close(&lookup);
	pool_unref(&lookup.pool);
	if (ret < 0) {
		i_error("lmdb salvage: %s (nothing was changed)", error);
		(void)unlink_directory(dest, UNLINK_DIRECTORY_FLAG_RMDIR,
				       &error);
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
		return -1;
	}

	if (lmdb_salvage_swap(root, dest, &aside, &error) < 0) {
		i_error("lmdb salvage: %s", error);
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
		if (aside == NULL) {
			/* nothing changed */
			(void)unlink_directory(dest,
				UNLINK_DIRECTORY_FLAG_RMDIR, &error);
			lmdb_salvage_result_free(result_r);
			return -1;
		}
	} else {
		i_info("lmdb salvage: %s replaced by the salvaged "
		       "environment; the damaged file is %s", root, aside);
	}
	if (unlink_directory(dest, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0)
		i_error("lmdb salvage: %s", error);
	return 0;
}

static int
lmdb_cmd_salvage_run(struct doveadm_mail_cmd_context *_ctx,
		     struct mail_user *user)
{
	struct lmdb_salvage_cmd_context *ctx =
		container_of(_ctx, struct lmdb_salvage_cmd_context, ctx);
	struct lmdb_storage *storage = doveadm_lmdb_get_storage(_ctx, user);
	struct lmdb_salvage_result *result = NULL;
	ARRAY_TYPE(lmdb_salvage_listed) listed;
	struct file_lock *lock;
	const char *root, *error;
	struct stat st;
	pool_t pool;
	int ret;

	if (storage == NULL)
		return -1;
	root = storage->env_path;
	if (storage->env != NULL) {
		/* the hook didn't apply: the environment was opened */
		i_error("lmdb salvage: %s was opened before the salvage "
			"could start", root);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	if (stat(t_strconcat(root, "/data.mdb", NULL), &st) < 0) {
		i_error("lmdb salvage: stat(%s/data.mdb) failed: %m", root);
		doveadm_mail_failed_error(_ctx, errno == ENOENT ?
					  MAIL_ERROR_NOTFOUND : MAIL_ERROR_TEMP);
		return -1;
	}
	/* new opens wait from here until the new file is in place */
	if (lmdb_env_swap_lock_dir(root, st.st_mode & 0777, F_WRLCK,
				   LMDB_SALVAGE_LOCK_TIMEOUT_SECS, &lock,
				   &error) < 0) {
		i_error("lmdb salvage: %s", error);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	pool = pool_alloconly_create("lmdb salvage cmd", 4096);
	p_array_init(&listed, pool, 16);
	ret = lmdb_salvage_build_locked(ctx, user, storage, pool, &listed,
					&result);
	/* released before this process opens the environment itself,
	   which takes the same lock shared */
	file_unlock(&lock);
	if (ret < 0) {
		lmdb_salvage_result_free(&result);
		pool_unref(&pool);
		return -1;
	}

	if (lmdb_env_open(root, &storage->set.env, &storage->env,
			  &error) < 0) {
		i_error("lmdb salvage: opening the salvaged environment "
			"failed: %s", error);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		ret = -1;
	} else if (lmdb_salvage_create_missing(user, storage, pool,
					       &listed) < 0 ||
		   lmdb_salvage_resync(&listed) < 0) {
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		ret = -1;
	}
	if (lmdb_salvage_report(result))
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_NOTPOSSIBLE);
	lmdb_salvage_result_free(&result);
	pool_unref(&pool);
	return ret;
}

static void lmdb_cmd_salvage_init(struct doveadm_mail_cmd_context *ctx ATTR_UNUSED,
				  const char *const args[] ATTR_UNUSED)
{
	doveadm_print_header_simple("mailbox");
	doveadm_print_header_simple("uid");
	doveadm_print_header_simple("message-id");
	doveadm_print_header_simple("status");
}

static void lmdb_cmd_salvage_deinit(struct doveadm_mail_cmd_context *ctx ATTR_UNUSED)
{
	/* a doveadm server process runs other commands after this one */
	lmdb_storage_no_env_open = FALSE;
}

static bool lmdb_cmd_salvage_parse_arg(struct doveadm_mail_cmd_context *_ctx,
				       int c)
{
	struct lmdb_salvage_cmd_context *ctx =
		container_of(_ctx, struct lmdb_salvage_cmd_context, ctx);

	if (c != 'f')
		return FALSE;
	ctx->force = TRUE;
	return TRUE;
}

struct doveadm_mail_cmd_context *doveadm_lmdb_cmd_salvage_alloc(void)
{
	struct lmdb_salvage_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct lmdb_salvage_cmd_context);
	ctx->ctx.getopt_args = "f";
	ctx->ctx.v.parse_arg = lmdb_cmd_salvage_parse_arg;
	ctx->ctx.v.run = lmdb_cmd_salvage_run;
	ctx->ctx.v.init = lmdb_cmd_salvage_init;
	ctx->ctx.v.deinit = lmdb_cmd_salvage_deinit;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TAB);
	/* before the user's storage is created: its environment must not
	   be opened (lmdb_storage_create()) */
	lmdb_storage_no_env_open = TRUE;
	return &ctx->ctx;
}
