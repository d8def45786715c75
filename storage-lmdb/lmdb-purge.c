/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "lmdb-body.h"
#include "lmdb-storage.h"

/* Purge frees saves that never committed (pending bodies) after
   lmdb_pending_grace: a slow save may not have linked its body yet. A
   body whose last link goes is freed by the expunge itself; purge frees
   the dead bodies left by older versions and by verify -r at once (a
   stream still reading one keeps its own snapshot). */

/* bodies freed per automatic pass, so a session end never stalls long */
#define LMDB_AUTOPURGE_MAX_BODIES 2000

static int
lmdb_purge_stamp_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct lmdb_env *env = context;
	struct lmdb_env_record rec;
	int ret;

	if ((ret = lmdb_env_record_get(env, txn, &rec, error_r)) != 0)
		return ret;
	rec.last_purge = ioloop_time;
	return lmdb_env_record_put(env, txn, &rec, error_r);
}

static int lmdb_purge_run(struct lmdb_storage *storage, unsigned int max,
			  unsigned int *freed_r)
{
	const char *error, *damage = NULL;
	unsigned int damaged;
	int ret;

	if (lmdb_body_gc(storage->env, ioloop_time,
			 storage->set.pending_grace_secs,
			 0, max, freed_r, &damaged, &damage,
			 &error) < 0) {
		mail_storage_set_critical(&storage->storage,
					  "lmdb: purge failed: %s", error);
		return -1;
	}
	if (damaged > 0) {
		e_error(storage->storage.event,
			"lmdb: purge left %u damaged body records that may "
			"be unused (first: %s): run doveadm lmdb verify -r",
			damaged, damage);
	}
	ret = lmdb_env_write(storage->env, lmdb_purge_stamp_txn, storage->env,
			     FALSE, &error);
	if (ret != 0) {
		lmdb_storage_set_lmdb_error(&storage->storage, ret, error);
		return -1;
	}
	if (*freed_r > 0) {
		e_debug(storage->storage.event, "lmdb: purge freed %u bodies",
			*freed_r);
	}
	return 0;
}

int lmdb_storage_purge(struct mail_storage *_storage)
{
	unsigned int freed;

	return lmdb_purge_run(LMDB_STORAGE(_storage), UINT_MAX, &freed);
}

void lmdb_storage_autopurge(struct lmdb_storage *storage)
{
	struct lmdb_env_record rec;
	MDB_txn *txn;
	const char *error;
	unsigned int freed;
	int ret;

	if (storage->set.autopurge_interval_secs == 0 || storage->env == NULL)
		return;
	if (lmdb_env_read_begin(storage->env, &txn, &error) < 0)
		return;
	ret = lmdb_env_record_get(storage->env, txn, &rec, &error);
	lmdb_env_read_end(storage->env, &txn);
	if (ret != 0 || rec.last_purge + storage->set.autopurge_interval_secs >
	    (uint64_t)ioloop_time)
		return;
	(void)lmdb_purge_run(storage, LMDB_AUTOPURGE_MAX_BODIES, &freed);
}
