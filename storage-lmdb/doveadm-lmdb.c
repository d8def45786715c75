/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "ioloop.h"
#include "str.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "doveadm-mail.h"
#include "doveadm-print.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-storage.h"

#include <sys/stat.h>

/* doveadm lmdb stats|verify|recover. This module calls into the storage
   plugin (one copy of the LMDB layer per process: an environment must
   never be opened twice), so doveadm loads it only after mail_plugins. */

const char *doveadm_storage_lmdb_plugin_version = DOVECOT_ABI_VERSION;

void doveadm_storage_lmdb_plugin_init(struct module *module);
void doveadm_storage_lmdb_plugin_deinit(void);

struct lmdb_verify_cmd_context {
	struct doveadm_mail_cmd_context ctx;
	bool repair;
	unsigned int problems;
};

static struct lmdb_storage *lmdb_user_get_storage(struct mail_user *user)
{
	struct mail_namespace *ns;

	for (ns = user->namespaces; ns != NULL; ns = ns->next) {
		if (ns->storage != NULL &&
		    strcmp(ns->storage->name, LMDB_STORAGE_NAME) == 0)
			return LMDB_STORAGE(ns->storage);
	}
	return NULL;
}

static struct lmdb_storage *
lmdb_cmd_get_storage(struct doveadm_mail_cmd_context *ctx,
		     struct mail_user *user)
{
	struct lmdb_storage *storage = lmdb_user_get_storage(user);

	if (storage == NULL) {
		i_error("User %s has no lmdb storage", user->username);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_NOTFOUND);
	}
	return storage;
}

static int
lmdb_cmd_stats_run(struct doveadm_mail_cmd_context *ctx,
		   struct mail_user *user)
{
	struct lmdb_storage *storage = lmdb_cmd_get_storage(ctx, user);
	struct lmdb_env_record rec;
	MDB_envinfo info;
	MDB_txn *txn;
	struct stat st;
	const char *error, *path;
	uint64_t used, free_pages, refs = 0;
	int ret;

	if (storage == NULL)
		return -1;
	if (lmdb_env_read_begin(storage->env, &txn, &error) < 0) {
		i_error("%s", error);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	ret = lmdb_env_record_get(storage->env, txn, &rec, &error);
	lmdb_env_read_end(storage->env, &txn);
	if (ret != 0 || lmdb_env_get_used_bytes(storage->env, &used,
						&free_pages, &error) < 0) {
		i_error("%s", error);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	(void)mdb_env_info(storage->env->env, &info);
	path = t_strconcat(storage->env_path, "/data.mdb", NULL);
	if (stat(path, &st) < 0)
		i_zero(&st);
	/* every link holds one reference */
	refs = rec.links;

	doveadm_print(dec2str(rec.links));
	doveadm_print(dec2str(rec.bodies));
	doveadm_print(dec2str(refs));
	doveadm_print(dec2str(rec.link_vsize_bytes));
	doveadm_print(dec2str(rec.body_bytes));
	doveadm_print(dec2str(used));
	doveadm_print(dec2str(free_pages));
	/* what compaction would give back: the file beyond what is used */
	doveadm_print(dec2str((uint64_t)st.st_size > used ?
			      (uint64_t)st.st_size - used : 0));
	doveadm_print(dec2str((uint64_t)st.st_size));
	doveadm_print(dec2str(info.me_mapsize));
	return 0;
}

static void lmdb_cmd_stats_init(struct doveadm_mail_cmd_context *ctx ATTR_UNUSED,
				const char *const args[] ATTR_UNUSED)
{
	doveadm_print_header_simple("messages");
	doveadm_print_header_simple("bodies");
	doveadm_print_header_simple("references");
	doveadm_print_header_simple("message_bytes");
	doveadm_print_header_simple("body_bytes");
	doveadm_print_header_simple("used_bytes");
	doveadm_print_header_simple("free_pages");
	doveadm_print_header_simple("reclaimable_bytes");
	doveadm_print_header_simple("file_size");
	doveadm_print_header_simple("map_size");
}

static struct doveadm_mail_cmd_context *lmdb_cmd_stats_alloc(void)
{
	struct doveadm_mail_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct doveadm_mail_cmd_context);
	ctx->v.run = lmdb_cmd_stats_run;
	ctx->v.init = lmdb_cmd_stats_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_FLOW);
	return ctx;
}

/* --- verify --- */

struct lmdb_verify_link {
	guid_128_t mailbox_guid;
	uint32_t uid;
	uint64_t body_id;
};

struct lmdb_verify_state {
	struct lmdb_verify_cmd_context *cmd;
	struct lmdb_storage *storage;
	pool_t pool;
	ARRAY(struct lmdb_verify_link) links;
	/* body id -> number of links */
	HASH_TABLE(void *, void *) refs;
	/* body ids that have a body record */
	HASH_TABLE(void *, void *) bodies_seen;
	/* mailbox GUID (hex) -> name */
	HASH_TABLE(char *, char *) names;
	ARRAY(uint64_t) refcount_fixes;
};

static void lmdb_verify_report(struct lmdb_verify_state *state,
			       const char *mailbox, uint32_t uid,
			       uint64_t body_id, const char *problem)
{
	state->cmd->problems++;
	doveadm_print(mailbox);
	doveadm_print(uid == 0 ? "-" : dec2str(uid));
	doveadm_print(body_id == 0 ? "-" : dec2str(body_id));
	doveadm_print(problem);
}

static const char *
lmdb_verify_mailbox_name(struct lmdb_verify_state *state,
			 const guid_128_t guid)
{
	const char *name;

	name = hash_table_lookup(state->names, guid_128_to_string(guid));
	return name != NULL ? name :
		t_strdup_printf("(unknown mailbox %s)", guid_128_to_string(guid));
}

static int lmdb_verify_scan(struct lmdb_verify_state *state, MDB_txn *txn)
{
	struct lmdb_env *env = state->storage->env;
	struct lmdb_mailbox_record mrec;
	struct lmdb_link_record link;
	struct lmdb_verify_link *vlink;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	guid_128_t guid;
	uint32_t uid;
	void *count;
	int ret;

	if ((ret = mdb_cursor_open(txn, env->dbi_mailboxes, &cursor)) != 0)
		return ret;
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		if (key.mv_size != GUID_128_SIZE ||
		    !lmdb_mailbox_record_decode(key.mv_data, val.mv_data,
						val.mv_size, state->pool,
						&mrec, &error)) {
			lmdb_verify_report(state, "-", 0, 0, t_strdup_printf(
				"corrupted mailbox record: %s", error));
			continue;
		}
		hash_table_update(state->names,
			p_strdup(state->pool, guid_128_to_string(key.mv_data)),
			p_strdup(state->pool, mrec.name));
	}
	mdb_cursor_close(cursor);

	if ((ret = mdb_cursor_open(txn, env->dbi_links, &cursor)) != 0)
		return ret;
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) T_BEGIN {
		if (!lmdb_link_key_decode(key.mv_data, key.mv_size,
					  guid, &uid)) {
			lmdb_verify_report(state, "-", 0, 0,
					   "link with a malformed key");
		} else if (!lmdb_link_record_decode(guid, uid, val.mv_data,
						    val.mv_size,
						    pool_datastack_create(),
						    &link, &error)) {
			lmdb_verify_report(state,
				lmdb_verify_mailbox_name(state, guid), uid, 0,
				t_strdup_printf("corrupted link: %s", error));
		} else {
			vlink = array_append_space(&state->links);
			memcpy(vlink->mailbox_guid, guid, sizeof(guid));
			vlink->uid = uid;
			vlink->body_id = link.body_id;
			count = hash_table_lookup(state->refs,
						  POINTER_CAST(link.body_id));
			hash_table_update(state->refs,
					  POINTER_CAST(link.body_id),
					  POINTER_CAST(POINTER_CAST_TO(count, uintptr_t) + 1));
		}
	} T_END;
	mdb_cursor_close(cursor);
	return ret == MDB_NOTFOUND ? 0 : ret;
}

static const char *
lmdb_verify_body_users(struct lmdb_verify_state *state, uint64_t body_id)
{
	const struct lmdb_verify_link *vlink;
	string_t *str = t_str_new(64);

	array_foreach(&state->links, vlink) {
		if (vlink->body_id != body_id)
			continue;
		if (str_len(str) > 0)
			str_append(str, ", ");
		str_printfa(str, "%s uid %u",
			    lmdb_verify_mailbox_name(state, vlink->mailbox_guid),
			    vlink->uid);
	}
	return str_len(str) == 0 ? "no links" : str_c(str);
}

static int lmdb_verify_bodies(struct lmdb_verify_state *state)
{
	struct lmdb_env *env = state->storage->env;
	struct lmdb_body_record rec;
	ARRAY(uint64_t) ids;
	const uint64_t *idp;
	MDB_txn *txn;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	uint64_t body_id;
	uintptr_t links;
	int ret;

	/* collect ids first: the full check of each body runs in a read
	   transaction of its own */
	t_array_init(&ids, 256);
	if (lmdb_env_read_begin(env, &txn, &error) < 0) {
		i_error("%s", error);
		return -1;
	}
	ret = mdb_cursor_open(txn, env->dbi_bodies, &cursor);
	while (ret == 0 &&
	       (ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		if (lmdb_body_id_decode(key.mv_data, key.mv_size, &body_id))
			array_push_back(&ids, &body_id);
	}
	if (ret == MDB_NOTFOUND || ret == 0)
		mdb_cursor_close(cursor);
	lmdb_env_read_end(env, &txn);
	if (ret != MDB_NOTFOUND) {
		i_error("iterating bodies failed: %s", mdb_strerror(ret));
		return -1;
	}

	array_foreach(&ids, idp) T_BEGIN {
		body_id = *idp;
		links = POINTER_CAST_TO(hash_table_lookup(state->refs,
			POINTER_CAST(body_id)), uintptr_t);
		ret = lmdb_body_get(env, body_id, pool_datastack_create(),
				    &rec, &error);
		if (ret <= 0) {
			lmdb_verify_report(state, "-", 0, body_id,
				ret < 0 ? error : "body vanished during verify");
		} else {
			if (rec.state == LMDB_BODY_STATE_LINKED &&
			    (ret = lmdb_body_verify(env, body_id, &rec, TRUE,
						    &error)) <= 0) {
				lmdb_verify_report(state, "-", 0, body_id,
					t_strdup_printf("damaged body (GUID %s, "
						"used by %s): %s", rec.guid,
						lmdb_verify_body_users(state, body_id),
						error));
			}
			if (rec.refcount != links &&
			    !(rec.state == LMDB_BODY_STATE_PENDING && links == 0)) {
				lmdb_verify_report(state, "-", 0, body_id,
					t_strdup_printf("refcount %u but %lu links",
							rec.refcount,
							(unsigned long)links));
				array_push_back(&state->refcount_fixes, &body_id);
			}
		}
		hash_table_update(state->bodies_seen, POINTER_CAST(body_id),
				  POINTER_CAST(1));
	} T_END;
	return 0;
}

static void lmdb_verify_dangling_links(struct lmdb_verify_state *state)
{
	const struct lmdb_verify_link *vlink;

	array_foreach(&state->links, vlink) {
		if (hash_table_lookup(state->bodies_seen,
				      POINTER_CAST(vlink->body_id)) != NULL)
			continue;
		lmdb_verify_report(state,
			lmdb_verify_mailbox_name(state, vlink->mailbox_guid),
			vlink->uid, vlink->body_id, "link to a missing body");
	}
}

static bool
lmdb_verify_have_link(struct lmdb_verify_state *state,
		      const guid_128_t guid, uint32_t uid)
{
	const struct lmdb_verify_link *vlink;

	array_foreach(&state->links, vlink) {
		if (vlink->uid == uid &&
		    guid_128_equals(vlink->mailbox_guid, guid))
			return TRUE;
	}
	return FALSE;
}

/* Compare each mailbox's index with its links. */
static void lmdb_verify_mailbox(struct lmdb_verify_state *state,
				struct mail_namespace *ns, const char *vname)
{
	struct mailbox *box;
	struct mailbox_metadata metadata;
	struct lmdb_mailbox *mbox;
	const struct lmdb_verify_link *vlink;
	const struct mail_index_header *hdr;
	uint32_t seq, uid, count;

	box = mailbox_alloc(ns->list, vname, MAILBOX_FLAG_IGNORE_ACLS);
	if (mailbox_open(box) < 0 || mailbox_sync(box, 0) < 0 ||
	    mailbox_get_metadata(box, MAILBOX_METADATA_GUID, &metadata) < 0) {
		lmdb_verify_report(state, vname, 0, 0, t_strdup_printf(
			"can't open mailbox: %s",
			mailbox_get_last_internal_error(box, NULL)));
		mailbox_free(&box);
		return;
	}
	mbox = LMDB_MAILBOX(box);
	hdr = mail_index_get_header(box->view);
	count = mail_index_view_get_messages_count(box->view);
	for (seq = 1; seq <= count; seq++) {
		mail_index_lookup_uid(box->view, seq, &uid);
		if (!lmdb_verify_have_link(state, mbox->mailbox_guid, uid)) {
			lmdb_verify_report(state, vname, uid, 0,
				"index record without a link");
		}
	}
	array_foreach(&state->links, vlink) {
		if (!guid_128_equals(vlink->mailbox_guid, mbox->mailbox_guid))
			continue;
		if (!mail_index_lookup_seq(box->view, vlink->uid, &seq)) {
			lmdb_verify_report(state, vname, vlink->uid,
				vlink->body_id, vlink->uid >= hdr->next_uid ?
				"link not yet in the index (sync adopts it)" :
				"link without an index record");
		}
	}
	mailbox_free(&box);
}

static void lmdb_verify_mailboxes(struct lmdb_verify_state *state,
				  struct mail_user *user)
{
	struct mail_namespace *ns = mail_namespace_find_inbox(user->namespaces);
	struct hash_iterate_context *iter;
	char *guid, *name;

	iter = hash_table_iterate_init(state->names);
	while (hash_table_iterate(iter, state->names, &guid, &name)) T_BEGIN {
		struct lmdb_mailbox_record mrec;
		guid_128_t guid_128;
		MDB_txn *txn;
		const char *error;
		int ret = -1;

		if (guid_128_from_string(guid, guid_128) == 0 &&
		    lmdb_env_read_begin(state->storage->env, &txn, &error) == 0) {
			ret = lmdb_mailbox_get(state->storage->env, txn,
					       guid_128, pool_datastack_create(),
					       &mrec, &error);
			lmdb_env_read_end(state->storage->env, &txn);
		}
		if (ret > 0 && mrec.state == LMDB_MAILBOX_STATE_ACTIVE)
			lmdb_verify_mailbox(state, ns, name);
	} T_END;
	hash_table_iterate_deinit(&iter);
}

struct lmdb_repair_ctx {
	struct lmdb_verify_state *state;
};

static int lmdb_repair_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_verify_state *state = context;
	struct lmdb_env *env = state->storage->env;
	struct lmdb_body_record rec;
	const uint64_t *idp;
	uintptr_t links;
	int ret;

	array_foreach(&state->refcount_fixes, idp) {
		links = POINTER_CAST_TO(hash_table_lookup(state->refs,
			POINTER_CAST(*idp)), uintptr_t);
		ret = lmdb_body_lookup(env, txn, *idp, pool_datastack_create(),
				       &rec, error_r);
		if (ret <= 0)
			continue;
		/* lmdb_body_ref moves the state (and gc keys) along */
		if ((ret = lmdb_body_ref(env, txn, *idp,
					 (int)links - (int)rec.refcount,
					 ioloop_time, NULL, error_r)) != 0)
			return ret;
	}
	return 0;
}

static int
lmdb_cmd_verify_run(struct doveadm_mail_cmd_context *_ctx,
		    struct mail_user *user)
{
	struct lmdb_verify_cmd_context *ctx =
		container_of(_ctx, struct lmdb_verify_cmd_context, ctx);
	struct lmdb_verify_state state;
	MDB_txn *txn;
	const char *error;
	int ret;

	i_zero(&state);
	state.cmd = ctx;
	state.storage = lmdb_cmd_get_storage(_ctx, user);
	if (state.storage == NULL)
		return -1;
	state.pool = pool_alloconly_create("lmdb verify", 16384);
	p_array_init(&state.links, state.pool, 1024);
	p_array_init(&state.refcount_fixes, state.pool, 16);
	hash_table_create_direct(&state.refs, state.pool, 1024);
	hash_table_create_direct(&state.bodies_seen, state.pool, 1024);
	hash_table_create(&state.names, state.pool, 16, str_hash, strcmp);

	ret = lmdb_env_read_begin(state.storage->env, &txn, &error);
	if (ret == 0) {
		ret = lmdb_verify_scan(&state, txn);
		lmdb_env_read_end(state.storage->env, &txn);
		if (ret != 0)
			error = mdb_strerror(ret);
	}
	if (ret != 0) {
		i_error("lmdb verify: %s", error);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		pool_unref(&state.pool);
		return -1;
	}
	lmdb_verify_mailboxes(&state, user);
	if (lmdb_verify_bodies(&state) < 0) {
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_TEMP);
		ret = -1;
	}
	lmdb_verify_dangling_links(&state);

	if (ctx->repair && array_count(&state.refcount_fixes) > 0) {
		if (lmdb_env_write(state.storage->env, lmdb_repair_txn, &state,
				   TRUE, &error) != 0) {
			i_error("lmdb verify: repair failed: %s", error);
			ret = -1;
		} else {
			i_info("lmdb verify: fixed %u reference counts",
			       array_count(&state.refcount_fixes));
		}
	}
	if (ctx->problems > 0 && !ctx->repair)
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_NOTPOSSIBLE);
	hash_table_destroy(&state.refs);
	hash_table_destroy(&state.bodies_seen);
	hash_table_destroy(&state.names);
	pool_unref(&state.pool);
	return ret;
}

static void lmdb_cmd_verify_init(struct doveadm_mail_cmd_context *ctx ATTR_UNUSED,
				 const char *const args[] ATTR_UNUSED)
{
	doveadm_print_header_simple("mailbox");
	doveadm_print_header_simple("uid");
	doveadm_print_header_simple("body");
	doveadm_print_header_simple("problem");
}

static bool lmdb_cmd_verify_parse_arg(struct doveadm_mail_cmd_context *_ctx,
				      int c)
{
	struct lmdb_verify_cmd_context *ctx =
		container_of(_ctx, struct lmdb_verify_cmd_context, ctx);

	if (c != 'r')
		return FALSE;
	ctx->repair = TRUE;
	return TRUE;
}

static struct doveadm_mail_cmd_context *lmdb_cmd_verify_alloc(void)
{
	struct lmdb_verify_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct lmdb_verify_cmd_context);
	ctx->ctx.getopt_args = "r";
	ctx->ctx.v.parse_arg = lmdb_cmd_verify_parse_arg;
	ctx->ctx.v.run = lmdb_cmd_verify_run;
	ctx->ctx.v.init = lmdb_cmd_verify_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TAB);
	return &ctx->ctx;
}

/* --- compact --- */

static int
lmdb_cmd_compact_run(struct doveadm_mail_cmd_context *ctx,
		     struct mail_user *user)
{
	struct lmdb_storage *storage = lmdb_cmd_get_storage(ctx, user);
	uint64_t old_size, new_size;
	const char *error;

	if (storage == NULL)
		return -1;
	if (lmdb_env_compact(storage->env, &old_size, &new_size, &error) < 0) {
		i_error("lmdb compact: %s", error);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	doveadm_print(dec2str(old_size));
	doveadm_print(dec2str(new_size));
	doveadm_print(dec2str(old_size > new_size ? old_size - new_size : 0));
	return 0;
}

static void lmdb_cmd_compact_init(struct doveadm_mail_cmd_context *ctx ATTR_UNUSED,
				  const char *const args[] ATTR_UNUSED)
{
	doveadm_print_header_simple("old_size");
	doveadm_print_header_simple("new_size");
	doveadm_print_header_simple("reclaimed");
}

static struct doveadm_mail_cmd_context *lmdb_cmd_compact_alloc(void)
{
	struct doveadm_mail_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct doveadm_mail_cmd_context);
	ctx->v.run = lmdb_cmd_compact_run;
	ctx->v.init = lmdb_cmd_compact_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_FLOW);
	return ctx;
}

/* --- recover --- */

static int lmdb_recover_mailbox(struct doveadm_mail_cmd_context *ctx,
				struct mail_namespace *ns,
				const guid_128_t guid,
				const struct lmdb_mailbox_record *rec)
{
	struct mailbox *box;
	struct mailbox_update update;
	enum mailbox_existence existence;
	enum mail_error error;
	int ret = 0;

	box = mailbox_alloc(ns->list, rec->name, MAILBOX_FLAG_IGNORE_ACLS);
	if (mailbox_exists(box, FALSE, &existence) < 0) {
		i_error("%s: %s", rec->name,
			mailbox_get_last_internal_error(box, NULL));
		mailbox_free(&box);
		return -1;
	}
	if (existence == MAILBOX_EXISTENCE_SELECT) {
		mailbox_free(&box);
		return 0;
	}
	i_zero(&update);
	memcpy(update.mailbox_guid, guid, sizeof(update.mailbox_guid));
	update.uid_validity = rec->uid_validity;
	if (mailbox_create(box, &update, FALSE) < 0) {
		(void)mailbox_get_last_error(box, &error);
		if (error != MAIL_ERROR_EXISTS) {
			i_error("Recreating %s failed: %s", rec->name,
				mailbox_get_last_internal_error(box, NULL));
			doveadm_mail_failed_mailbox(ctx, box);
			ret = -1;
		}
	}
	/* the sync appends the mailbox's links to the new index */
	if (ret == 0 && mailbox_sync(box, MAILBOX_SYNC_FLAG_FORCE_RESYNC) < 0) {
		i_error("Syncing %s failed: %s", rec->name,
			mailbox_get_last_internal_error(box, NULL));
		ret = -1;
	}
	if (ret == 0) {
		doveadm_print(rec->name);
		doveadm_print(guid_128_to_string(guid));
	}
	mailbox_free(&box);
	return ret;
}

static int
lmdb_cmd_recover_run(struct doveadm_mail_cmd_context *ctx,
		     struct mail_user *user)
{
	struct lmdb_storage *storage = lmdb_cmd_get_storage(ctx, user);
	struct mail_namespace *ns = mail_namespace_find_inbox(user->namespaces);
	struct lmdb_mailbox_record rec;
	ARRAY(guid_128_t) guids;
	ARRAY(struct lmdb_mailbox_record) recs;
	const struct lmdb_mailbox_record *recp;
	guid_128_t *guidp;
	MDB_txn *txn;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	pool_t pool;
	unsigned int i;
	int ret;

	if (storage == NULL)
		return -1;
	pool = pool_alloconly_create("lmdb recover", 4096);
	p_array_init(&guids, pool, 16);
	p_array_init(&recs, pool, 16);
	if (lmdb_env_read_begin(storage->env, &txn, &error) < 0) {
		i_error("%s", error);
		pool_unref(&pool);
		return -1;
	}
	ret = mdb_cursor_open(txn, storage->env->dbi_mailboxes, &cursor);
	while (ret == 0 &&
	       (ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		if (key.mv_size != GUID_128_SIZE ||
		    !lmdb_mailbox_record_decode(key.mv_data, val.mv_data,
						val.mv_size, pool, &rec,
						&error) ||
		    rec.state != LMDB_MAILBOX_STATE_ACTIVE)
			continue;
		guidp = array_append_space(&guids);
		memcpy(*guidp, key.mv_data, GUID_128_SIZE);
		array_push_back(&recs, &rec);
	}
	if (ret == MDB_NOTFOUND)
		mdb_cursor_close(cursor);
	lmdb_env_read_end(storage->env, &txn);
	if (ret != MDB_NOTFOUND) {
		i_error("iterating mailboxes failed: %s", mdb_strerror(ret));
		pool_unref(&pool);
		return -1;
	}
	ret = 0;
	for (i = 0; i < array_count(&recs); i++) {
		recp = array_idx(&recs, i);
		guidp = array_idx_modifiable(&guids, i);
		if (lmdb_recover_mailbox(ctx, ns, *guidp, recp) < 0)
			ret = -1;
	}
	pool_unref(&pool);
	return ret;
}

static void lmdb_cmd_recover_init(struct doveadm_mail_cmd_context *ctx ATTR_UNUSED,
				  const char *const args[] ATTR_UNUSED)
{
	doveadm_print_header_simple("recovered");
	doveadm_print_header_simple("guid");
}

static struct doveadm_mail_cmd_context *lmdb_cmd_recover_alloc(void)
{
	struct doveadm_mail_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct doveadm_mail_cmd_context);
	ctx->v.run = lmdb_cmd_recover_run;
	ctx->v.init = lmdb_cmd_recover_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TAB);
	return ctx;
}

static struct doveadm_cmd_ver2 lmdb_commands[] = {
	{
		.name = "lmdb stats",
		.usage = "",
		.mail_cmd = lmdb_cmd_stats_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "lmdb verify",
		.usage = "[-r]",
		.mail_cmd = lmdb_cmd_verify_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAM('r', "repair", CMD_PARAM_BOOL, 0)
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "lmdb compact",
		.usage = "",
		.mail_cmd = lmdb_cmd_compact_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "lmdb recover",
		.usage = "",
		.mail_cmd = lmdb_cmd_recover_alloc,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAMS_END
	},
};

void doveadm_storage_lmdb_plugin_init(struct module *module ATTR_UNUSED)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(lmdb_commands); i++)
		doveadm_cmd_register_ver2(&lmdb_commands[i]);
}

void doveadm_storage_lmdb_plugin_deinit(void)
{
}
