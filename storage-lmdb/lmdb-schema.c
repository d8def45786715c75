/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "ioloop.h"
#include "lmdb-records.h"
#include "lmdb-env.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-schema.h"
#include "lmdb-uidls.h"

#include <unistd.h>

/* The schema at open time (docs/schema.md, "Upgrade-on-open"): a new
   environment gets its DBIs and env record; one of schema 1 is converted
   to schema 2 in the same transaction, before anyone reads it; one whose
   env record is damaged gets it rebuilt from the records it counts. */

struct lmdb_schema_upgrade {
	struct lmdb_env *env;
	MDB_txn *txn;
	unsigned int converted, damaged;
};

typedef bool lmdb_schema_convert_func_t(const MDB_val *key,
					const MDB_val *val, buffer_t *out,
					const char **error_r);

static bool
lmdb_schema_convert_body(const MDB_val *key, const MDB_val *val,
			 buffer_t *out, const char **error_r)
{
	struct lmdb_body_record rec;
	uint64_t body_id;

	if (!lmdb_body_id_decode(key->mv_data, key->mv_size, &body_id)) {
		*error_r = "malformed key";
		return FALSE;
	}
	return lmdb_body_record_decode_v1(val->mv_data, val->mv_size,
					  pool_datastack_create(), &rec,
					  error_r) &&
		lmdb_body_record_encode(out, body_id, &rec, error_r);
}

static bool
lmdb_schema_convert_link(const MDB_val *key, const MDB_val *val,
			 buffer_t *out, const char **error_r)
{
	struct lmdb_link_record rec;
	guid_128_t guid;
	uint32_t uid;

	if (!lmdb_link_key_decode(key->mv_data, key->mv_size, guid, &uid)) {
		*error_r = "malformed key";
		return FALSE;
	}
	return lmdb_link_record_decode_v1(val->mv_data, val->mv_size,
					  pool_datastack_create(), &rec,
					  error_r) &&
		lmdb_link_record_encode(out, guid, uid, &rec, error_r);
}

static bool
lmdb_schema_convert_mailbox(const MDB_val *key, const MDB_val *val,
			    buffer_t *out, const char **error_r)
{
	struct lmdb_mailbox_record rec;

	if (key->mv_size != GUID_128_SIZE) {
		*error_r = "malformed key";
		return FALSE;
	}
	return lmdb_mailbox_record_decode_v1(val->mv_data, val->mv_size,
					     pool_datastack_create(), &rec,
					     error_r) &&
		lmdb_mailbox_record_encode(out, key->mv_data, &rec, error_r);
}

static bool
lmdb_schema_convert_gc(const MDB_val *key, const MDB_val *val ATTR_UNUSED,
		       buffer_t *out, const char **error_r)
{
	enum lmdb_gc_kind kind;
	int64_t since;
	uint64_t body_id;

	if (!lmdb_gc_key_decode(key->mv_data, key->mv_size, &kind, &since,
				&body_id)) {
		*error_r = "malformed key";
		return FALSE;
	}
	lmdb_gc_value_encode(out, key->mv_data);
	return TRUE;
}

/* Rewrite every record of one DBI in the current version. A record that
   doesn't decode as schema 1 is left as it is: it was damaged before the
   upgrade and stays reported as damaged. */
static int
lmdb_schema_convert_dbi(struct lmdb_schema_upgrade *up, MDB_dbi dbi,
			const char *name, lmdb_schema_convert_func_t *convert,
			const char **error_r)
{
	MDB_cursor *cursor;
	MDB_val key, val;
	buffer_t *key_copy, *out;
	const char *error;
	int ret;

	if ((ret = mdb_cursor_open(up->txn, dbi, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(%s) failed: %s",
					   name, mdb_strerror(ret));
		return ret;
	}
	key_copy = t_buffer_create(64);
	out = t_buffer_create(256);
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) {
		T_BEGIN {
			buffer_set_used_size(out, 0);
			if (!convert(&key, &val, out, &error)) {
				up->damaged++;
				i_error("lmdb: %s: schema upgrade left a "
					"damaged %s record as it was: %s",
					up->env->path, name, error);
			} else {
				/* our own copy of the key: the put may move
				   the bytes LMDB returned */
				buffer_set_used_size(key_copy, 0);
				buffer_append(key_copy, key.mv_data,
					      key.mv_size);
				ret = lmdb_env_cursor_put_current(cursor,
					key_copy->data, key_copy->used, out);
				up->converted++;
			}
		} T_END;
		/* a full map must reach lmdb_env_write(), which grows it
		   and runs the upgrade again */
		if (ret != 0)
			break;
	}
	mdb_cursor_close(cursor);
	if (ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("converting %s records failed: %s",
					   name, mdb_strerror(ret));
		return ret;
	}
	return 0;
}

/* Schema 1 -> 2: every record gets its checksum. Chunks keep their
   version-1 form (their data was always checksummed): rewriting them
   would rewrite all of the user's mail. */
static int lmdb_schema_upgrade_v1(struct lmdb_env *env, MDB_txn *txn,
				  const char **error_r)
{
	struct lmdb_schema_upgrade up = { .env = env, .txn = txn };
	unsigned int duplicates;
	int ret;

	if ((ret = lmdb_schema_convert_dbi(&up, env->dbi_bodies, "bodies",
					   lmdb_schema_convert_body,
					   error_r)) != 0 ||
	    (ret = lmdb_schema_convert_dbi(&up, env->dbi_links, "links",
					   lmdb_schema_convert_link,
					   error_r)) != 0 ||
	    (ret = lmdb_schema_convert_dbi(&up, env->dbi_mailboxes,
					   "mailboxes",
					   lmdb_schema_convert_mailbox,
					   error_r)) != 0 ||
	    (ret = lmdb_schema_convert_dbi(&up, env->dbi_gc, "gc",
					   lmdb_schema_convert_gc,
					   error_r)) != 0)
		return ret;
	/* schema 2's UIDL index, from the converted links */
	if ((ret = lmdb_uidls_rebuild(env, txn, &duplicates, error_r)) != 0)
		return ret;
	if (duplicates > 0) {
		i_warning("lmdb: %s: %u messages share their POP3 UIDL with "
			  "another message of their mailbox (left as they "
			  "are: doveadm lmdb verify lists them)", env->path,
			  duplicates);
	}
	i_info("lmdb: %s: upgraded from schema 1 to %u (%u records%s)",
	       env->path, LMDB_SCHEMA_VERSION, up.converted,
	       up.damaged == 0 ? "" :
	       t_strdup_printf(", %u damaged ones left as they were",
			       up.damaged));
	return 0;
}

static int lmdb_schema_dbi_entries(MDB_txn *txn, MDB_dbi dbi,
				   uint64_t *entries_r)
{
	MDB_stat st;
	int ret;

	if ((ret = mdb_stat(txn, dbi, &st)) == 0)
		*entries_r = st.ms_entries;
	return ret;
}

int lmdb_schema_recount(struct lmdb_env *env, MDB_txn *txn,
			struct lmdb_env_record *rec, const char **error_r)
{
	struct lmdb_body_record body;
	struct lmdb_link_record link;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	guid_128_t guid;
	uint64_t body_id;
	uint32_t uid;
	int ret;

	rec->links = rec->link_vsize_bytes = 0;
	rec->bodies = rec->body_bytes = 0;
	if ((ret = mdb_cursor_open(txn, env->dbi_bodies, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(bodies) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) T_BEGIN {
		if (lmdb_body_id_decode(key.mv_data, key.mv_size, &body_id) &&
		    lmdb_body_record_decode(body_id, val.mv_data, val.mv_size,
					    pool_datastack_create(), &body,
					    &error) &&
		    body.chunk_size != 0) {
			rec->bodies++;
			rec->body_bytes += body.physical_size;
		}
	} T_END;
	mdb_cursor_close(cursor);
	if (ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("scanning bodies failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	if ((ret = mdb_cursor_open(txn, env->dbi_links, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(links) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) T_BEGIN {
		/* quota counts what can be read: damaged links and links
		   to damaged bodies are not mail */
		if (lmdb_link_key_decode(key.mv_data, key.mv_size, guid, &uid) &&
		    lmdb_link_record_decode(guid, uid, val.mv_data,
					    val.mv_size,
					    pool_datastack_create(), &link,
					    &error) &&
		    lmdb_body_lookup(env, txn, link.body_id,
				     pool_datastack_create(), &body,
				     &error) > 0) {
			rec->links++;
			rec->link_vsize_bytes += body.virtual_size;
		}
	} T_END;
	mdb_cursor_close(cursor);
	if (ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("scanning links failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	return 0;
}

/* The env record is gone or damaged but the environment has records:
   count what it counts again. The generation becomes a new value, which
   only makes processes that had the environment open reopen it. */
static int lmdb_schema_rebuild_env_record(struct lmdb_env *env, MDB_txn *txn,
					  struct lmdb_env_record *rec,
					  const char **error_r)
{
	MDB_cursor *cursor;
	MDB_val key, val;
	uint64_t body_id;
	int ret;

	i_zero(rec);
	rec->generation = ((uint64_t)ioloop_time << 20) ^ (uint64_t)getpid();
	rec->next_body_id = 1;
	rec->created = ioloop_time;
	if ((ret = lmdb_schema_recount(env, txn, rec, error_r)) != 0)
		return ret;
	if ((ret = mdb_cursor_open(txn, env->dbi_bodies, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(bodies) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	while ((ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) T_BEGIN {
		if (lmdb_body_id_decode(key.mv_data, key.mv_size, &body_id)) {
			/* ids are never reused, damaged record or not */
			rec->next_body_id = I_MAX(rec->next_body_id,
						  body_id + 1);
		}
	} T_END;
	mdb_cursor_close(cursor);
	if (ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("scanning bodies failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	/* a body being written may have chunks before its record: its id
	   must not be given out again either */
	if ((ret = mdb_cursor_open(txn, env->dbi_chunks, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(chunks) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	ret = mdb_cursor_get(cursor, &key, &val, MDB_LAST);
	if (ret == 0 && key.mv_size == LMDB_CHUNK_KEY_SIZE &&
	    lmdb_body_id_decode(key.mv_data, LMDB_BODY_ID_SIZE, &body_id))
		rec->next_body_id = I_MAX(rec->next_body_id, body_id + 1);
	mdb_cursor_close(cursor);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("reading chunks failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	return 0;
}

static int lmdb_schema_open_dbis(struct lmdb_env *env, MDB_txn *txn,
				 const char **error_r)
{
	int ret;

	if ((ret = mdb_dbi_open(txn, "meta", MDB_CREATE, &env->dbi_meta)) != 0 ||
	    (ret = mdb_dbi_open(txn, "bodies", MDB_CREATE, &env->dbi_bodies)) != 0 ||
	    (ret = mdb_dbi_open(txn, "chunks", MDB_CREATE, &env->dbi_chunks)) != 0 ||
	    (ret = mdb_dbi_open(txn, "links", MDB_CREATE, &env->dbi_links)) != 0 ||
	    (ret = mdb_dbi_open(txn, "mailboxes", MDB_CREATE, &env->dbi_mailboxes)) != 0 ||
	    (ret = mdb_dbi_open(txn, "gc", MDB_CREATE, &env->dbi_gc)) != 0 ||
	    (ret = mdb_dbi_open(txn, "quarantine", MDB_CREATE, &env->dbi_quarantine)) != 0 ||
	    (ret = mdb_dbi_open(txn, "uidls", MDB_CREATE, &env->dbi_uidls)) != 0) {
		*error_r = t_strdup_printf("mdb_dbi_open() failed: %s",
					   mdb_strerror(ret));
	}
	return ret;
}

/* Which schema do the records of an environment without a readable env
   record have? The first link or body tells (1 or 2; 0 if neither
   decodes). */
static int lmdb_schema_sniff(struct lmdb_env *env, MDB_txn *txn,
			     unsigned int *version_r)
{
	MDB_cursor *cursor;
	MDB_val key, val;
	const unsigned char *p;
	int ret;

	*version_r = 0;
	if ((ret = mdb_cursor_open(txn, env->dbi_links, &cursor)) != 0)
		return ret;
	ret = mdb_cursor_get(cursor, &key, &val, MDB_FIRST);
	if (ret == MDB_NOTFOUND) {
		mdb_cursor_close(cursor);
		if ((ret = mdb_cursor_open(txn, env->dbi_bodies, &cursor)) != 0)
			return ret;
		ret = mdb_cursor_get(cursor, &key, &val, MDB_FIRST);
	}
	if (ret == 0 && val.mv_size > 0) {
		p = val.mv_data;
		if (p[0] == LMDB_RECORD_VERSION_1 ||
		    p[0] == LMDB_RECORD_VERSION)
			*version_r = p[0];
	}
	mdb_cursor_close(cursor);
	return ret == MDB_NOTFOUND ? 0 : ret;
}

/* Does the environment hold anything besides the env record? */
static int lmdb_schema_is_empty(struct lmdb_env *env, MDB_txn *txn,
				bool *empty_r)
{
	uint64_t bodies = 0, chunks = 0, links = 0, mailboxes = 0;
	int ret;

	if ((ret = lmdb_schema_dbi_entries(txn, env->dbi_bodies, &bodies)) != 0 ||
	    (ret = lmdb_schema_dbi_entries(txn, env->dbi_chunks, &chunks)) != 0 ||
	    (ret = lmdb_schema_dbi_entries(txn, env->dbi_links, &links)) != 0 ||
	    (ret = lmdb_schema_dbi_entries(txn, env->dbi_mailboxes, &mailboxes)) != 0)
		return ret;
	*empty_r = bodies + chunks + links + mailboxes == 0;
	return 0;
}

int lmdb_schema_init(struct lmdb_env *env, MDB_txn *txn,
		     const char **error_r)
{
	struct lmdb_env_record rec;
	MDB_val key, val;
	const char *error = "missing", *error_v1;
	bool empty, found;
	int ret;

	if ((ret = lmdb_schema_open_dbis(env, txn, error_r)) != 0)
		return ret;

	key.mv_data = (void *)LMDB_ENV_RECORD_KEY;
	key.mv_size = LMDB_ENV_RECORD_KEY_SIZE;
	ret = mdb_get(txn, env->dbi_meta, &key, &val);
	if (ret != 0 && ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("mdb_get(env) failed: %s",
					   mdb_strerror(ret));
		return ret;
	}
	found = ret == 0;
	if (found && lmdb_env_record_decode(val.mv_data, val.mv_size,
					    &rec, &error)) {
		if (rec.schema_version > LMDB_SCHEMA_VERSION) {
			*error_r = t_strdup_printf(
				"environment has schema version %u, this "
				"module only knows up to %u: upgrade the module",
				rec.schema_version, LMDB_SCHEMA_VERSION);
			return MDB_VERSION_MISMATCH;
		}
		if (rec.schema_version == LMDB_SCHEMA_VERSION)
			return 0;
		/* a current record never carries an older schema */
		i_error("lmdb: %s: env record has schema version %u: "
			"rebuilding it", env->path, rec.schema_version);
		ret = lmdb_schema_rebuild_env_record(env, txn, &rec, error_r);
	} else if (found &&
		   lmdb_env_record_decode_v1(val.mv_data, val.mv_size,
					     &rec, &error_v1) &&
		   rec.schema_version == 1) {
		ret = lmdb_schema_upgrade_v1(env, txn, error_r);
	} else if ((ret = lmdb_schema_is_empty(env, txn, &empty)) != 0) {
		*error_r = t_strdup_printf("mdb_stat() failed: %s",
					   mdb_strerror(ret));
	} else if (empty) {
		/* a new environment */
		i_zero(&rec);
		rec.generation = 1;
		rec.next_body_id = 1;
		rec.created = ioloop_time;
	} else {
		unsigned int version;

		i_error("lmdb: %s: env record is %s: rebuilding it from the "
			"records (doveadm lmdb verify -r recounts the rest)",
			env->path, !found ? "missing" :
			t_strdup_printf("damaged (%s)", error));
		if ((ret = lmdb_schema_sniff(env, txn, &version)) != 0) {
			*error_r = t_strdup_printf("reading records failed: %s",
						   mdb_strerror(ret));
			return ret;
		}
		/* the records of a schema-1 environment are converted as
		   they would have been with their env record intact */
		if (version == LMDB_RECORD_VERSION_1 &&
		    (ret = lmdb_schema_upgrade_v1(env, txn, error_r)) != 0)
			return ret;
		ret = lmdb_schema_rebuild_env_record(env, txn, &rec, error_r);
	}
	if (ret != 0)
		return ret;
	rec.schema_version = LMDB_SCHEMA_VERSION;
	return lmdb_env_record_put(env, txn, &rec, error_r);
}
