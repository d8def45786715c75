#ifndef DLMDB_COMPAT_H
#define DLMDB_COMPAT_H

/* dovecot-lmdb builds from one tree against Dovecot 2.3 and 2.4.
   What differs between the two lives here, as small inline wrappers,
   and where a whole concept differs, in per-version files that the
   Makefiles choose (AM_CONDITIONAL DOVECOT_24 from configure):

     compat/dlmdb-uidl-format-{23,24}.c     pop3_uidl_format expansion
     storage-lmdb/lmdb-settings-{23,24}.c   lmdb_* settings, the mail
                                            location checks
     storage-lmdb/lmdb-settings-info.c      2.4's declaration of them
     plugin/pop3-policy-settings-{23,24}.c  pop3_policy_* settings
     plugin/pop3-policy-settings-info.c     2.4's declaration of them
     plugin/pop3-policy-quota-{23,24}.c     the quota plugin's hook

   No other file tests the version (docs/design.md, "Compatibility
   layer"). Include after lib.h. */

#define DLMDB_DOVECOT_24 DOVECOT_PREREQ(2, 4, 0)

struct doveadm_mail_cmd_context;

/* Functions of the compat/ files are linked into each module that uses
   them: keep them out of the module's exported symbols, so that two of
   our modules in one process never bind to each other's copy. */
#define DLMDB_COMPAT_LOCAL __attribute__((visibility("hidden")))

/* 2.4 gave str_begins() a third argument (the rest of the string) and
   named the two-argument form str_begins_with(). */
#if DLMDB_DOVECOT_24
#  define dlmdb_str_begins(str, prefix) str_begins_with(str, prefix)
#else
#  define dlmdb_str_begins(str, prefix) str_begins(str, prefix)
#endif

/* A time interval setting's value: 2.4 moved the parser to lib/. */
#if DLMDB_DOVECOT_24
#  include "str-parse.h"
#  define dlmdb_parse_time(str, secs_r, error_r) \
	str_parse_get_interval(str, secs_r, error_r)
#else
#  include "settings-parser.h"
#  define dlmdb_parse_time(str, secs_r, error_r) \
	settings_get_time(str, secs_r, error_r)
#endif

/* LMTP's and LDA's internal user that only parses incoming mail. */
#if DLMDB_DOVECOT_24
#  define dlmdb_mail_user_is_raw(user) \
	((user)->autocreated && strcmp((user)->username, "raw-mail-user") == 0)
#else
#  define dlmdb_mail_user_is_raw(user) \
	((user)->_service_user == NULL && \
	 strcmp((user)->username, "raw mail user") == 0)
#endif

/* doveadm mail commands. 2.3 passes init() the positional arguments and
   hands every named option to parse_arg(), refusing the option when the
   command has none; 2.4 has no parse_arg() and reads every parameter
   from ctx->cctx. Our commands read their options from ctx->cctx in
   init() on both (2.3 fills cctx as well) and declare their init as
     static void x_init(DLMDB_DOVEADM_INIT_PARAMS(ctx))
   and call dlmdb_doveadm_cmd_accept_options() in their alloc(). */
#if DLMDB_DOVECOT_24
#  define DLMDB_DOVEADM_INIT_PARAMS(ctx) \
	struct doveadm_mail_cmd_context *ctx
#  define dlmdb_doveadm_cmd_accept_options(ctx, getopt_args) \
	((void)(ctx), (void)(getopt_args))
#else
#  define DLMDB_DOVEADM_INIT_PARAMS(ctx) \
	struct doveadm_mail_cmd_context *ctx, \
	const char *const args[] ATTR_UNUSED
static inline bool
dlmdb_doveadm_parse_arg_accept(struct doveadm_mail_cmd_context *ctx ATTR_UNUSED,
			       int c ATTR_UNUSED)
{
	/* the value is read from ctx->cctx in init() */
	return TRUE;
}
#  define dlmdb_doveadm_cmd_accept_options(ctx, getopt_args_) STMT_START { \
	(ctx)->getopt_args = (getopt_args_); \
	(ctx)->v.parse_arg = dlmdb_doveadm_parse_arg_accept; \
	} STMT_END
#endif

/* A mailbox index's "box-name" header: the name with its levels
   separated by NULs. 2.3 keeps the storage name there; 2.4 the levels
   unescaped (mailbox_list_storage_escape_char: "x/../y" is stored as
   "x/^2e./y" and its header says "x\0..\0y"), and escapes them again
   when it reads the name back. */
#if DLMDB_DOVECOT_24
#  include "mailbox-list-index.h"
#  define dlmdb_mailbox_name_hdr_encode(list, storage_name, len_r) \
	mailbox_name_hdr_encode(list, storage_name, len_r)
#else
#  include "mailbox-list.h"
static inline const unsigned char *
dlmdb_mailbox_name_hdr_encode(struct mailbox_list *list,
			      const char *storage_name, size_t *len_r)
{
	char sep = mailbox_list_get_hierarchy_sep(list);
	size_t i, len = strlen(storage_name);
	unsigned char *hdr = t_malloc_no0(len > 0 ? len : 1);

	for (i = 0; i < len; i++)
		hdr[i] = storage_name[i] == sep ? '\0' : storage_name[i];
	*len_r = len;
	return hdr;
}
#endif

/* pop3_uidl_format: 2.3 writes %u %v %g %m %f (or %{uid}...), 2.4
   %{uid | hex(8)} etc. (compat/dlmdb-uidl-format-{23,24}.c) */
struct dlmdb_uidl_vars {
	uint32_t uid, uid_validity;
	/* "" when not looked up (the format doesn't use them) */
	const char *guid, *md5, *filename;
};
enum dlmdb_uidl_var {
	DLMDB_UIDL_VAR_UID,
	DLMDB_UIDL_VAR_UIDVALIDITY,
	DLMDB_UIDL_VAR_GUID,
	DLMDB_UIDL_VAR_MD5,
	DLMDB_UIDL_VAR_FILENAME,
};
/* Does the format use this variable? FALSE also for a format that
   doesn't parse (expanding it reports the error). */
bool dlmdb_uidl_format_uses(const char *format, enum dlmdb_uidl_var var)
	DLMDB_COMPAT_LOCAL;
/* Expand the format into dest. -1 with *error_r if it doesn't parse. */
int dlmdb_uidl_format_expand(string_t *dest, const char *format,
			     const struct dlmdb_uidl_vars *vars,
			     const char **error_r) DLMDB_COMPAT_LOCAL;
/* How the variable is written in this version's syntax, for messages. */
const char *dlmdb_uidl_var_name(enum dlmdb_uidl_var var) DLMDB_COMPAT_LOCAL;

#endif
