#ifndef LMDB_CRC32_H
#define LMDB_CRC32_H

/* CRC-32 (the IEEE/zlib polynomial, the same values as Dovecot's
   crc32_data()), computed eight bytes at a time: every chunk is checked
   when a body is opened, so this is on the read path of every message. */
uint32_t lmdb_crc32(const void *data, size_t size);

#endif
