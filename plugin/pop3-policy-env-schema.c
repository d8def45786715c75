/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "ioloop.h"
#include "hex-binary.h"
#include "pop3-policy-env.h"

/* The DBIs and the schema version. Every process opens the environment,
   so when everything is there and current the DBIs are opened in a read
   transaction; creating them or converting an older schema takes the
   writer, once, and both happen in one transaction: a conversion that
   fails leaves the old schema as it was.

   Versions:
   1  meta, msgs, uidls
   2  + downloads: the index of msgs by first download
   3  every value in record version 2: with a CRC over type, key and
      value (pop3-policy-records.c) */

static const char *const pop3_policy_env_dbi_names[] = {
	"meta", "msgs", "uidls", "downloads"
};

static MDB_dbi *
pop3_policy_env_dbi(struct pop3_policy_env *env, unsigned int i)
{
	switch (i) {
	case 0:
		return &env->dbi_meta;
	case 1:
		return &env->dbi_msgs;
	case 2:
		return &env->dbi_uidls;
	case 3:
		return &env->dbi_downloads;
	}
	i_unreached();
}

static int
pop3_policy_env_schema_get(struct pop3_policy_env *env, MDB_txn *txn,
			   struct pop3_policy_schema_record *rec_r,
			   const char **error_r)
{
	const char *error;
	MDB_val key, val;
	int ret;

	key.mv_data = (void *)POP3_POLICY_META_KEY_SCHEMA;
	key.mv_size = strlen(POP3_POLICY_META_KEY_SCHEMA);
	ret = mdb_get(txn, env->dbi_meta, &key, &val);
	if (ret == MDB_NOTFOUND)
		return 0;
	if (ret != 0) {
		*error_r = t_strdup_printf("mdb_get(%s, schema) failed: %s",
					   env->path, mdb_strerror(ret));
		return -1;
	}
	/* an environment of schema 1 or 2 has a version-1 record (no CRC),
	   which says so */
	if (!pop3_policy_schema_record_decode(val.mv_data, val.mv_size,
					      rec_r, &error) &&
	    (val.mv_size == 0 ||
	     *(const uint8_t *)val.mv_data != POP3_POLICY_RECORD_VERSION_V1 ||
	     !pop3_policy_schema_record_decode_v1(val.mv_data, val.mv_size,
						  rec_r, &error))) {
		*error_r = t_strdup_printf("%s: corrupted schema record: %s",
					   env->path, error);
		return -1;
	}
	if (rec_r->schema_version > POP3_POLICY_SCHEMA_VERSION) {
		*error_r = t_strdup_printf(
			"%s has schema version %u, this module knows only up "
			"to %u: upgrade the module", env->path,
			rec_r->schema_version, POP3_POLICY_SCHEMA_VERSION);
		return -1;
	}
	return 1;
}

/* 1 to 2: index every downloaded message by its first download. A
   record that can't be decoded is left alone (the sweep reports it), and
   so is one under a key the plugin never writes (see
   pop3_policy_msg_key()): longer than a GUID key or with a NUL. No GUID
   leads to such a record, an index entry couldn't name it (LMDB's 511
   bytes leave 503 for it), and failing the conversion on it would lock
   the user out of every policy. */
static int
pop3_policy_env_upgrade_downloads(struct pop3_policy_env *env, MDB_txn *txn,
				  const char **error_r)
{
	struct pop3_policy_msg_record rec;
	MDB_cursor *cursor;
	MDB_val key, val;
	const char *error;
	int ret, put_ret = 0;

	if ((ret = mdb_cursor_open(txn, env->dbi_msgs, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(%s) failed: %s",
					   env->path, mdb_strerror(ret));
		return ret;
	}
	while (put_ret == 0 &&
	       (ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) T_BEGIN {
		if (key.mv_size <= POP3_POLICY_GUID_KEY_MAX_LEN &&
		    memchr(key.mv_data, '\0', key.mv_size) == NULL &&
		    pop3_policy_msg_record_decode(key.mv_data, key.mv_size,
						  val.mv_data, val.mv_size,
						  &rec, &error) &&
		    rec.first_download != 0) {
			put_ret = pop3_policy_env_download_put(env, txn,
				rec.first_download,
				t_strndup(key.mv_data, key.mv_size), error_r);
		}
	} T_END_PASS_STR_IF(put_ret != 0, error_r);
	mdb_cursor_close(cursor);
	if (put_ret != 0)
		return put_ret;
	if (ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("mdb_cursor_get(%s) failed: %s",
					   env->path, mdb_strerror(ret));
		return ret;
	}
	return 0;
}

/* The type of the record under key in a DBI, for the conversion; FALSE
   for a "meta" key the plugin doesn't write (left as it is) and for the
   schema record (rewritten after the conversion). */
static bool
pop3_policy_env_record_type(struct pop3_policy_env *env, MDB_dbi dbi,
			    const MDB_val *key,
			    enum pop3_policy_record_type *type_r)
{
	static const struct {
		const char *key;
		enum pop3_policy_record_type type;
	} meta_keys[] = {
		{ POP3_POLICY_META_KEY_FLAG, POP3_POLICY_RECORD_TYPE_FLAG },
		{ POP3_POLICY_META_KEY_SWEEP, POP3_POLICY_RECORD_TYPE_SWEEP },
	};
	unsigned int i;

	if (dbi == env->dbi_msgs)
		*type_r = POP3_POLICY_RECORD_TYPE_MSG;
	else if (dbi == env->dbi_uidls)
		*type_r = POP3_POLICY_RECORD_TYPE_UIDL;
	else if (dbi == env->dbi_downloads)
		*type_r = POP3_POLICY_RECORD_TYPE_DOWNLOAD;
	else {
		for (i = 0; i < N_ELEMENTS(meta_keys); i++) {
			if (key->mv_size == strlen(meta_keys[i].key) &&
			    memcmp(key->mv_data, meta_keys[i].key,
				   key->mv_size) == 0) {
				*type_r = meta_keys[i].type;
				return TRUE;
			}
		}
		return FALSE;
	}
	return TRUE;
}

/* 2 to 3: rewrite every value of one DBI as version 2, with its CRC. A
   value that doesn't decode as version 1 is left as it is and counted:
   it was damaged before, and every reader reports it as damaged after
   (a version-1 value fails every decoder). */
static int
pop3_policy_env_upgrade_crc_dbi(struct pop3_policy_env *env, MDB_txn *txn,
				MDB_dbi dbi, const char *name,
				const char **error_r)
{
	enum pop3_policy_record_type type;
	MDB_cursor *cursor;
	MDB_val key, val, new_key, new_val;
	buffer_t *key_copy, *out;
	const char *error;
	int ret, put_ret = 0;

	if ((ret = mdb_cursor_open(txn, dbi, &cursor)) != 0) {
		*error_r = t_strdup_printf("mdb_cursor_open(%s, %s) failed: %s",
					   env->path, name, mdb_strerror(ret));
		return ret;
	}
	while (put_ret == 0 &&
	       (ret = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) == 0) T_BEGIN {
		if (pop3_policy_env_record_type(env, dbi, &key, &type)) {
			/* in this frame: a buffer of the outer one can't
			   grow here */
			out = t_buffer_create(val.mv_size + 8);
			if (!pop3_policy_record_upgrade_v1(type, key.mv_data,
							   key.mv_size,
							   val.mv_data,
							   val.mv_size, out,
							   &error)) {
				if (env->conversion_damaged++ == 0) {
					i_free(env->conversion_report);
					env->conversion_report = i_strdup_printf(
						"%s record %s: %s", name,
						binary_to_hex(key.mv_data,
							      key.mv_size),
						error);
				}
			} else {
				/* our own copy of the key: the put may move
				   the bytes LMDB returned */
				key_copy = t_buffer_create(key.mv_size);
				buffer_append(key_copy, key.mv_data,
					      key.mv_size);
				new_key.mv_data = (void *)key_copy->data;
				new_key.mv_size = key_copy->used;
				new_val.mv_data = (void *)out->data;
				new_val.mv_size = out->used;
				put_ret = mdb_cursor_put(cursor, &new_key,
							 &new_val, MDB_CURRENT);
			}
		}
	} T_END;
	mdb_cursor_close(cursor);
	if (put_ret != 0) {
		/* MDB_MAP_FULL reaches pop3_policy_env_write(), which grows
		   the map and runs the whole conversion again */
		*error_r = t_strdup_printf("mdb_cursor_put(%s, %s) failed: %s",
					   env->path, name,
					   mdb_strerror(put_ret));
		return put_ret;
	}
	if (ret != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("mdb_cursor_get(%s, %s) failed: %s",
					   env->path, name, mdb_strerror(ret));
		return ret;
	}
	return 0;
}

static int
pop3_policy_env_upgrade_crc(struct pop3_policy_env *env, MDB_txn *txn,
			    const char **error_r)
{
	unsigned int i;
	int ret;

	for (i = 0; i < N_ELEMENTS(pop3_policy_env_dbi_names); i++) {
		ret = pop3_policy_env_upgrade_crc_dbi(env, txn,
			*pop3_policy_env_dbi(env, i),
			pop3_policy_env_dbi_names[i], error_r);
		if (ret != 0)
			return ret;
	}
	return 0;
}

static int
pop3_policy_env_init_schema(struct pop3_policy_env *env, MDB_txn *txn,
			    void *context ATTR_UNUSED, const char **error_r)
{
	struct pop3_policy_schema_record rec;
	buffer_t *buf;
	MDB_val key, val;
	unsigned int i, old_version = 0;
	int ret;

	for (i = 0; i < N_ELEMENTS(pop3_policy_env_dbi_names); i++) {
		ret = mdb_dbi_open(txn, pop3_policy_env_dbi_names[i],
				   MDB_CREATE, pop3_policy_env_dbi(env, i));
		if (ret != 0) {
			*error_r = t_strdup_printf(
				"mdb_dbi_open(%s, %s) failed: %s", env->path,
				pop3_policy_env_dbi_names[i],
				mdb_strerror(ret));
			return ret;
		}
	}
	ret = pop3_policy_env_schema_get(env, txn, &rec, error_r);
	if (ret < 0)
		return MDB_INCOMPATIBLE;
	if (ret == 0) {
		i_zero(&rec);
		rec.created = ioloop_time != 0 ? ioloop_time : time(NULL);
	} else if (rec.schema_version == POP3_POLICY_SCHEMA_VERSION) {
		return 0;
	} else {
		/* the CRCs first: the index is then built with the current
		   decoders */
		env->conversion_damaged = 0;
		if ((ret = pop3_policy_env_upgrade_crc(env, txn,
						       error_r)) != 0)
			return ret;
		if (rec.schema_version < 2 &&
		    (ret = pop3_policy_env_upgrade_downloads(env, txn,
							     error_r)) != 0)
			return ret;
		old_version = rec.schema_version;
	}
	rec.schema_version = POP3_POLICY_SCHEMA_VERSION;
	buf = t_buffer_create(32);
	pop3_policy_schema_record_encode(buf, &rec);
	key.mv_data = (void *)POP3_POLICY_META_KEY_SCHEMA;
	key.mv_size = strlen(POP3_POLICY_META_KEY_SCHEMA);
	val.mv_data = (void *)buf->data;
	val.mv_size = buf->used;
	if ((ret = mdb_put(txn, env->dbi_meta, &key, &val, 0)) != 0) {
		*error_r = t_strdup_printf("mdb_put(%s, schema) failed: %s",
					   env->path, mdb_strerror(ret));
		return ret;
	}
	if (old_version != 0) {
		const char *damaged = env->conversion_damaged == 0 ? "" :
			t_strdup_printf(": %u record(s) that don't decode "
					"were left as they were (damaged), "
					"the first: %s",
					env->conversion_damaged,
					env->conversion_report);
		i_free(env->conversion_report);
		env->conversion_report = i_strdup_printf(
			"%s: converted from schema %u to %u%s", env->path,
			old_version, POP3_POLICY_SCHEMA_VERSION, damaged);
	}
	return 0;
}

/* 1 if every DBI is there and the schema is current (the handles are
   kept), 0 if the writer is needed, -1 on error. */
static int pop3_policy_env_open_dbis_readonly(struct pop3_policy_env *env,
					      const char **error_r)
{
	struct pop3_policy_schema_record rec;
	MDB_txn *txn;
	unsigned int i;
	int ret = 1;

	if (pop3_policy_env_read_begin(env, &txn, error_r) < 0)
		return -1;
	for (i = 0; i < N_ELEMENTS(pop3_policy_env_dbi_names); i++) {
		if (mdb_dbi_open(txn, pop3_policy_env_dbi_names[i], 0,
				 pop3_policy_env_dbi(env, i)) != 0) {
			ret = 0;
			break;
		}
	}
	if (ret > 0) {
		ret = pop3_policy_env_schema_get(env, txn, &rec, error_r);
		if (ret > 0 && rec.schema_version < POP3_POLICY_SCHEMA_VERSION)
			ret = 0;
	}
	if (ret <= 0) {
		pop3_policy_env_read_end(env, &txn);
		return ret;
	}
	/* DBI handles opened in a transaction live on only if it
	   commits, read-only or not */
	env->open_txns--;
	if ((ret = mdb_txn_commit(txn)) != 0) {
		*error_r = t_strdup_printf("mdb_txn_commit(%s) failed: %s",
					   env->path, mdb_strerror(ret));
		return -1;
	}
	return 1;
}

int pop3_policy_env_open_dbis(struct pop3_policy_env *env,
			      const char **error_r)
{
	int ret;

	ret = pop3_policy_env_open_dbis_readonly(env, error_r);
	if (ret != 0)
		return ret < 0 ? -1 : 0;
	if (pop3_policy_env_write(env, pop3_policy_env_init_schema, NULL,
				  error_r) != 0)
		return -1;
	return 0;
}
