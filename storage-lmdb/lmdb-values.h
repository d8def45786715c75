#ifndef LMDB_VALUES_H
#define LMDB_VALUES_H

/* The strings lmdb stores (UIDLs, keywords, message GUIDs, mailbox
   names) and what makes each valid. They come from clients, from dsync,
   from other storages, and back from disk: the record decoders refuse
   invalid ones as damage, and the save and copy paths check values from
   outside before they reach an encoder. No lib-storage types here. */

#include "lmdb-records.h"

/* RFC 1939: 1..70 characters 0x21..0x7E. Longer ones (up to
   LMDB_UIDL_MAX_LEN) are kept, as other servers hand them out. */
bool lmdb_uidl_is_valid(const char *uidl);
/* An IMAP flag keyword: 1..LMDB_KEYWORD_MAX_LEN atom characters, not a
   system flag (no leading backslash). */
bool lmdb_keyword_is_valid(const char *keyword);
/* A message GUID as lmdb keeps it: 1..LMDB_GUID_MAX_LEN bytes with no
   control characters. */
bool lmdb_guid_is_valid(const char *guid);
/* A mailbox name: 1..LMDB_NAME_MAX_LEN bytes of UTF-8 without control
   characters. */
bool lmdb_mailbox_name_is_valid(const char *name);

/* What a GUID or UIDL that can't be kept as given becomes: 32 hex
   digits of the 128-bit digest Dovecot makes of a non-GUID string
   (mail_generate_guid_128_hash(): the last 16 bytes of its SHA-1), which
   is also what dsync compares for storages with 128-bit GUIDs. The same
   input always gives the same value, so a repeated import (or the other
   replica) agrees. Returned from the data stack. */
const char *lmdb_value_digest(const char *value);

#endif
