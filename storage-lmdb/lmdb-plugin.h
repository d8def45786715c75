#ifndef LMDB_PLUGIN_H
#define LMDB_PLUGIN_H

extern const char *storage_lmdb_plugin_version;

void storage_lmdb_plugin_init(struct module *module);
void storage_lmdb_plugin_deinit(void);

#endif
