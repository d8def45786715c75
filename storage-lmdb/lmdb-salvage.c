/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "str.h"
#include "lmdb-records.h"
#include "lmdb-salvage-private.h"

#include <sys/stat.h>

/* The scan of a salvage: every record lmdb-pagescan yields is classified
   by the record type inside its checksum, validated by that type's
   decoder and, if it passes, copied into the new environment. Copies go
   in batches of short write transactions with MDB_NOOVERWRITE: the first
   record of a key wins, and as the scanner yields every TREE record
   before any ORPHAN one, a tree's record always wins over an orphan's. */

struct lmdb_salvage_body *
lmdb_salvage_body_get(struct lmdb_salvage *sv, uint64_t body_id)
{
	struct lmdb_salvage_body *body;

	body = hash_table_lookup(sv->bodies, POINTER_CAST(body_id));
	if (body == NULL) {
		body = p_new(sv->pool, struct lmdb_salvage_body, 1);
		body->id = body_id;
		hash_table_insert(sv->bodies, POINTER_CAST(body_id), body);
	}
	return body;
}

struct lmdb_salvage_box *
lmdb_salvage_box_get(struct lmdb_salvage *sv, const guid_128_t guid)
{
	struct lmdb_salvage_box *box;
	const char *hex = guid_128_to_string(guid);

	box = hash_table_lookup(sv->boxes, hex);
	if (box == NULL) {
		box = p_new(sv->pool, struct lmdb_salvage_box, 1);
		memcpy(box->guid, guid, sizeof(box->guid));
		hash_table_insert(sv->boxes, p_strdup(sv->pool, hex), box);
		array_push_back(&sv->box_list, &box);
	}
	return box;
}

/* --- the whole build --- */

static int lmdb_salvage_stop(const struct lmdb_pagescan_record *rec ATTR_UNUSED,
			     void *context ATTR_UNUSED)
{
	return -1;
}

/* Before the scan proper: which DBIs does the file have, and is its free
   list whole? The trees are walked before the first record is yielded,
   so a run stopped at once knows both. A file without the DBIs schema 2
   added is read as schema 1. */
static void lmdb_salvage_survey(struct lmdb_salvage *sv,
				struct lmdb_pagescan *scan)
{
	const struct lmdb_pagescan_dbi *dbis;
	const struct lmdb_pagescan_damage *damages;
	unsigned int i, count;
	const char *error;

	(void)lmdb_pagescan_run(scan, lmdb_salvage_stop, (void *)NULL, &error);
	sv->allow_v1 = TRUE;
	dbis = lmdb_pagescan_get_dbis(scan, &count);
	for (i = 0; i < count; i++) {
		if (strcmp(dbis[i].name, "uidls") == 0 ||
		    strcmp(dbis[i].name, "quarantine") == 0)
			sv->allow_v1 = FALSE;
	}
	sv->orphans_trusted = TRUE;
	damages = lmdb_pagescan_get_damages(scan, &count);
	for (i = 0; i < count; i++) {
		if (damages[i].tree == LMDB_PAGESCAN_TREE_FREE)
			sv->orphans_trusted = FALSE;
	}
}

static int lmdb_salvage_scan(struct lmdb_salvage *sv, const char **error_r)
{
	const struct lmdb_salvage_settings *set = sv->set;
	struct lmdb_salvage_scan scan;
	struct lmdb_pagescan *pagescan;
	const struct lmdb_pagescan_stats *stats;
	const char *error;
	unsigned int i;
	int ret;

	if (lmdb_pagescan_open(set->data_path, &pagescan, error_r) < 0)
		return -1;
	lmdb_salvage_survey(sv, pagescan);

	i_zero(&scan);
	scan.sv = sv;
	scan.batch_pool = pool_alloconly_create("lmdb salvage batch",
						LMDB_SALVAGE_BATCH_BYTES + 65536);
	i_array_init(&scan.batch, LMDB_SALVAGE_BATCH_RECORDS);
	hash_table_create(&scan.infos, sv->pool, 16, str_hash, strcmp);
	for (i = 0; i < set->mailboxes_count; i++) {
		const char *hex = guid_128_to_string(set->mailboxes[i].guid);

		/* two list entries with one GUID: the first is the one */
		if (hash_table_lookup(scan.infos, hex) == NULL) {
			hash_table_insert(scan.infos, p_strdup(sv->pool, hex),
					  &set->mailboxes[i]);
		}
		lmdb_salvage_box_get(sv, set->mailboxes[i].guid);
	}

	ret = lmdb_pagescan_run(pagescan, lmdb_salvage_scan_record, &scan,
				&error);
	if (ret == 0)
		ret = lmdb_salvage_batch_flush(&scan);
	if (ret < 0)
		*error_r = scan.error != NULL ? scan.error : error;

	stats = lmdb_pagescan_get_stats(pagescan);
	sv->result->scan = *stats;
	sv->result->meta_fallback_reason =
		p_strdup(sv->result->pool, stats->meta_fallback_reason);
	sv->result->scan.meta_fallback_reason =
		sv->result->meta_fallback_reason;
	lmdb_pagescan_close(&pagescan);

	/* the index's view of each mailbox, for the resolution */
	for (i = 0; i < set->mailboxes_count; i++) {
		struct lmdb_salvage_box *box =
			lmdb_salvage_box_get(sv, set->mailboxes[i].guid);

		if (box->info == NULL)
			box->info = &set->mailboxes[i];
	}
	hash_table_destroy(&scan.infos);
	array_free(&scan.batch);
	pool_unref(&scan.batch_pool);
	return ret;
}

int lmdb_salvage_build(const struct lmdb_salvage_settings *set,
		       struct lmdb_salvage_result **result_r,
		       const char **error_r)
{
	struct lmdb_salvage sv;
	struct lmdb_salvage_result *result;
	struct lmdb_env_settings env_set = set->env_set;
	struct stat st;
	pool_t pool;
	int ret;

	*result_r = NULL;
	/* records already there would win over the salvaged ones */
	if (stat(t_strconcat(set->dest_dir, "/data.mdb", NULL), &st) == 0) {
		*error_r = t_strdup_printf("%s already holds an environment",
					   set->dest_dir);
		return -1;
	}
	pool = pool_alloconly_create("lmdb salvage result", 16384);
	result = p_new(pool, struct lmdb_salvage_result, 1);
	result->pool = pool;
	p_array_init(&result->lost, pool, 16);
	p_array_init(&result->restored, pool, 16);
	p_array_init(&result->relinked, pool, 4);
	p_array_init(&result->mailboxes, pool, 4);

	i_zero(&sv);
	sv.set = set;
	sv.result = result;
	sv.pool = pool_alloconly_create("lmdb salvage", 65536);
	hash_table_create_direct(&sv.bodies, sv.pool, 1024);
	hash_table_create(&sv.boxes, sv.pool, 16, str_hash, strcmp);
	p_array_init(&sv.box_list, sv.pool, 16);
	i_array_init(&sv.links, 1024);

	/* durability comes from one sync of the finished file: a crash
	   during the build leaves only the directory the caller removes */
	env_set.no_sync = TRUE;
	/* room for everything at once: lmdb_body_rebuild() can't report a
	   full map as such (the map is shrunk again before the last
	   commit, lmdb-salvage-resolve.c) */
	if (stat(set->data_path, &st) == 0) {
		uint64_t size = (uint64_t)st.st_size;

		size += size / 4 + LMDB_SALVAGE_MAP_SLACK;
		env_set.map_size_initial = I_MAX(env_set.map_size_initial,
						 size);
		env_set.map_size_max = I_MAX(env_set.map_size_max, size * 4);
	}
	if (lmdb_env_open(set->dest_dir, &env_set, &sv.env, error_r) < 0) {
		*error_r = t_strdup_printf("creating the new environment "
					   "failed: %s", *error_r);
		ret = -1;
	} else {
		ret = lmdb_salvage_scan(&sv, error_r);
		if (ret == 0)
			ret = lmdb_salvage_resolve(&sv, error_r);
		if (ret == 0 && mdb_env_sync(sv.env->env, 1) != 0) {
			*error_r = t_strdup_printf("mdb_env_sync(%s) failed: %m",
						   set->dest_dir);
			ret = -1;
		}
		lmdb_env_unref(&sv.env);
		/* closed now, not kept for a next open: the caller moves
		   the file */
		lmdb_env_deinit();
	}
	hash_table_destroy(&sv.bodies);
	hash_table_destroy(&sv.boxes);
	array_free(&sv.links);
	pool_unref(&sv.pool);
	if (ret < 0) {
		pool_unref(&pool);
		return -1;
	}
	*result_r = result;
	return 0;
}

void lmdb_salvage_result_free(struct lmdb_salvage_result **_result)
{
	struct lmdb_salvage_result *result = *_result;

	if (result == NULL)
		return;
	*_result = NULL;
	pool_unref(&result->pool);
}

/* --- Message-ID --- */

#define LMDB_SALVAGE_MESSAGE_ID_MAX_LEN 255

static bool lmdb_salvage_header_is(const unsigned char *p, size_t len,
				   const char *name)
{
	size_t name_len = strlen(name);

	return len > name_len && p[name_len] == ':' &&
		strncasecmp((const char *)p, name, name_len) == 0;
}

const char *lmdb_salvage_parse_message_id(const void *data, size_t size)
{
	const unsigned char *p = data, *end = p + size, *eol, *line;
	string_t *str = NULL;
	size_t len;

	while (p < end) {
		line = p;
		eol = memchr(p, '\n', end - p);
		if (eol == NULL)
			eol = end;
		len = eol - line;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		p = eol < end ? eol + 1 : end;
		if (len == 0)
			break;
		if (str != NULL) {
			/* a folded continuation, else the header is over */
			if (line[0] != ' ' && line[0] != '\t')
				break;
		} else if (lmdb_salvage_header_is(line, len, "Message-ID")) {
			str = t_str_new(64);
			line += 11;
			len -= 11;
		} else {
			continue;
		}
		for (size_t i = 0; i < len; i++) {
			/* whitespace and control bytes go; what is left
			   is printed in a tab-separated report */
			if (line[i] > 0x20 && line[i] < 0x7f &&
			    str_len(str) < LMDB_SALVAGE_MESSAGE_ID_MAX_LEN)
				str_append_c(str, line[i]);
		}
	}
	return str == NULL || str_len(str) == 0 ? NULL : str_c(str);
}
