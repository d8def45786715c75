/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "str.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "doveadm-mail.h"
#include "dlmdb-compat.h"
#include "doveadm-print.h"
#include "lmdb-env.h"
#include "lmdb-schema.h"
#include "lmdb-storage.h"
#include "doveadm-lmdb.h"
#include "doveadm-lmdb-verify.h"

/* doveadm lmdb verify [-r]: every record's checksum, every body's chunks
   and SHA-256, every reference count, the env record's counters, the gc
   entries, and every mailbox's index against its links. In one pass per
   DBI plus one per mailbox: hash tables, never a search per record.

   -r repairs what can be repaired and quarantines what can't:
   - reference counts, counters and gc entries are set to what the
     records say;
   - a damaged body record whose chunks are whole is rebuilt from them
     (its message GUID is new: the old one is lost with the record);
   - a damaged link, or a link to a body that is gone, is moved into the
     quarantine and its index record expunged: nothing can read it;
   - an index record without a link is expunged, as force-resync would.
   A body with damaged chunks is reported, not changed: reading it fails
   cleanly, and its intact chunks stay for salvage. */

void lmdb_verify_report(struct lmdb_verify_state *state,
			const char *mailbox, uint32_t uid,
			uint64_t body_id, const char *problem)
{
	state->cmd->problems++;
	doveadm_print(mailbox);
	doveadm_print(uid == 0 ? "-" : dec2str(uid));
	doveadm_print(body_id == 0 ? "-" : dec2str(body_id));
	doveadm_print(problem);
}

static int
lmdb_cmd_verify_run(struct doveadm_mail_cmd_context *_ctx,
		    struct mail_user *user)
{
	struct lmdb_verify_cmd_context *ctx =
		container_of(_ctx, struct lmdb_verify_cmd_context, ctx);
	struct lmdb_verify_state state;
	struct lmdb_env_record env_rec, counted;
	MDB_txn *txn;
	const char *error = NULL;
	int ret;

	i_zero(&state);
	state.cmd = ctx;
	state.storage = doveadm_lmdb_get_storage(_ctx, user);
	if (state.storage == NULL)
		return -1;
	state.pool = pool_alloconly_create("lmdb verify", 16384);
	hash_table_create(&state.boxes, state.pool, 16, str_hash, strcmp);
	p_array_init(&state.box_list, state.pool, 16);
	hash_table_create_direct(&state.refs, state.pool, 1024);
	hash_table_create_direct(&state.bodies_seen, state.pool, 1024);
	hash_table_create(&state.uidls, state.pool, 1024, str_hash, strcmp);
	hash_table_create(&state.uidl_holders, state.pool, 1024, str_hash,
			  strcmp);
	p_array_init(&state.refcount_suspects, state.pool, 16);
	hash_table_create_direct(&state.link_counts, state.pool, 64);
	p_array_init(&state.refcount_fixes, state.pool, 16);
	p_array_init(&state.rebuild_bodies, state.pool, 4);
	p_array_init(&state.gc_missing, state.pool, 4);
	p_array_init(&state.quarantine_links, state.pool, 4);
	p_array_init(&state.junk_gc_keys, state.pool, 4);

	ret = lmdb_env_read_begin(state.storage->env, &txn, &error);
	if (ret == 0) {
		if ((ret = lmdb_verify_scan_mailboxes(&state, txn)) == 0 &&
		    (ret = lmdb_verify_scan_links(&state, txn)) == 0 &&
		    (ret = lmdb_verify_scan_uidls(&state, txn)) == 0)
			ret = lmdb_verify_scan_gc(&state, txn);
		if (ret != 0)
			error = mdb_strerror(ret);
		else if (lmdb_env_record_get(state.storage->env, txn,
					     &env_rec, &error) != 0)
			ret = -1;
		else {
			counted = env_rec;
			if (lmdb_schema_recount(state.storage->env, txn,
						&counted, &error) != 0)
				ret = -1;
		}
		lmdb_env_read_end(state.storage->env, &txn);
	}
	if (ret != 0) {
		i_error("lmdb verify: %s (a damaged B-tree page: run doveadm "
			"lmdb salvage)", error);
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
	if (ret == 0 && memcmp(&counted, &env_rec, sizeof(counted)) != 0) {
		lmdb_verify_report(&state, "-", 0, 0, t_strdup_printf(
			"env record counts %"PRIu64" messages of %"PRIu64
			" bytes, %"PRIu64" bodies of %"PRIu64" bytes; the "
			"records: %"PRIu64", %"PRIu64", %"PRIu64", %"PRIu64"%s",
			env_rec.links, env_rec.link_vsize_bytes,
			env_rec.bodies, env_rec.body_bytes, counted.links,
			counted.link_vsize_bytes, counted.bodies,
			counted.body_bytes, ctx->repair ? " (fixed)" : ""));
	}

	if (ctx->repair && ctx->problems > 0 && ret == 0) {
		if (lmdb_env_write(state.storage->env, lmdb_repair_txn, &state,
				   TRUE, &error) != 0) {
			i_error("lmdb verify: repair failed: %s", error);
			ret = -1;
		} else {
			i_info("lmdb verify: %u repaired, %u quarantined",
			       state.repaired, state.quarantined);
			if (lmdb_repair_index(&state, user) < 0)
				ret = -1;
		}
	}
	if (ctx->problems > 0 && !ctx->repair)
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_NOTPOSSIBLE);
	hash_table_destroy(&state.link_counts);
	hash_table_destroy(&state.refs);
	hash_table_destroy(&state.bodies_seen);
	hash_table_destroy(&state.uidls);
	hash_table_destroy(&state.uidl_holders);
	hash_table_destroy(&state.boxes);
	pool_unref(&state.pool);
	return ret;
}

static void lmdb_cmd_verify_init(DLMDB_DOVEADM_INIT_PARAMS(_ctx))
{
	struct lmdb_verify_cmd_context *ctx =
		container_of(_ctx, struct lmdb_verify_cmd_context, ctx);

	(void)doveadm_cmd_param_bool(_ctx->cctx, "repair", &ctx->repair);
	doveadm_print_header_simple("mailbox");
	doveadm_print_header_simple("uid");
	doveadm_print_header_simple("body");
	doveadm_print_header_simple("problem");
}

struct doveadm_mail_cmd_context *doveadm_lmdb_cmd_verify_alloc(void)
{
	struct lmdb_verify_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct lmdb_verify_cmd_context);
	dlmdb_doveadm_cmd_accept_options(&ctx->ctx, "r");
	ctx->ctx.v.run = lmdb_cmd_verify_run;
	ctx->ctx.v.init = lmdb_cmd_verify_init;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TAB);
	return &ctx->ctx;
}
