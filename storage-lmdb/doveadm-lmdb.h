#ifndef DOVEADM_LMDB_H
#define DOVEADM_LMDB_H

/* doveadm lmdb ...: the commands share how they find the user's lmdb
   storage. Each command lives in its own file. */

struct doveadm_mail_cmd_context;
struct mail_user;
struct lmdb_storage;

/* The user's lmdb storage, or NULL with the command failed (logged). */
struct lmdb_storage *
doveadm_lmdb_get_storage(struct doveadm_mail_cmd_context *ctx,
			 struct mail_user *user);

struct doveadm_mail_cmd_context *doveadm_lmdb_cmd_verify_alloc(void);
struct doveadm_mail_cmd_context *doveadm_lmdb_cmd_salvage_alloc(void);

#endif
