#ifndef LMDB_CRC32_H
#define LMDB_CRC32_H

/* CRC-32 (the IEEE/zlib polynomial, the same values as Dovecot's
   crc32_data()), computed eight bytes at a time: every chunk is checked
   when a body is opened, so this is on the read path of every message. */
uint32_t lmdb_crc32(const void *data, size_t size);
/* Continue a CRC-32 over more data: lmdb_crc32_update(lmdb_crc32(a), b)
   equals the CRC-32 of a followed by b (zlib's crc32() convention). */
uint32_t lmdb_crc32_update(uint32_t crc, const void *data, size_t size);

#endif
