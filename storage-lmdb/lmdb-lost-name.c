/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "dlmdb-compat.h"
#include "mail-namespace.h"
#include "mailbox-list-private.h"
#include "lmdb-link.h"
#include "lmdb-storage.h"

/* A mailbox whose index and list entry were lost, found again by its GUID.

   With LAYOUT=index a mailbox's directory is named by its GUID and only
   the list index knows its name. When that index is lost, Dovecot's list
   rebuild (force-resync) recreates each GUID it finds under a placeholder
   name, "recovered-lost-folder-<GUID>", and at its next open renames it
   to the name kept in the mailbox index's own "box-name" header. That
   index is usually lost too. LMDB still knows the name: it goes into the
   header here, so that Dovecot's rename brings the mailbox back under it,
   and the record keeps it (the placeholder must not overwrite it, or
   `doveadm lmdb recover` could not find the name either). */

/* The record keeps the virtual name with the separator it had then */
static const char *
lmdb_lost_name_storage_name(struct mailbox *box,
			    const struct lmdb_mailbox_record *rec)
{
	char ns_sep = mail_namespace_get_sep(box->list->ns);
	const char *vname = rec->name;

	if (rec->hierarchy_sep != '\0' && rec->hierarchy_sep != ns_sep)
		vname = t_str_replace(vname, rec->hierarchy_sep, ns_sep);
	return mailbox_list_get_storage_name(box->list, vname);
}

int lmdb_mailbox_lost_name_restore(struct lmdb_mailbox *mbox,
				   const guid_128_t guid,
				   struct mail_index_transaction *trans,
				   uint32_t *uid_validity_r)
{
	struct mailbox *box = &mbox->box;
	struct lmdb_env *env = mbox->storage->env;
	struct lmdb_mailbox_record rec;
	const char *error, *name;
	const unsigned char *hdr;
	size_t len;
	MDB_txn *txn;
	int ret;

	*uid_validity_r = 0;
	if (lmdb_env_read_begin(env, &txn, &error) < 0) {
		mailbox_set_critical(box, "lmdb: %s", error);
		return -1;
	}
	ret = lmdb_mailbox_get(env, txn, guid, pool_datastack_create(),
			       &rec, &error);
	lmdb_env_read_end(env, &txn);
	if (ret < 0) {
		/* a damaged record: the placeholder name stays, and the
		   record is rewritten from the index like any damaged one */
		e_error(box->event, "lmdb: Can't restore the name of lost "
			"mailbox %s: %s", guid_128_to_string(guid), error);
		return 0;
	}
	if (ret == 0 || rec.state != LMDB_MAILBOX_STATE_ACTIVE)
		return 0;

	/* the header holds the name with its levels separated by NULs, in
	   the form this Dovecot version reads back (see
	   dlmdb_mailbox_name_hdr_encode()) */
	name = lmdb_lost_name_storage_name(box, &rec);
	hdr = dlmdb_mailbox_name_hdr_encode(box->list, name, &len);
	mail_index_ext_resize_hdr(trans, box->box_name_hdr_ext_id, len);
	mail_index_update_header_ext(trans, box->box_name_hdr_ext_id, 0,
				     hdr, len);
	*uid_validity_r = rec.uid_validity;
	e_warning(box->event, "lmdb: Lost mailbox %s is %s: restoring its name "
		  "from LMDB", guid_128_to_string(guid), rec.name);
	return 1;
}
