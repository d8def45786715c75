/* confdefs.h */
#define PACKAGE_NAME "dovecot-lmdb"
#define PACKAGE_TARNAME "dovecot-lmdb"
#define PACKAGE_VERSION "0.1.0"
#define PACKAGE_STRING "dovecot-lmdb 0.1.0"
#define PACKAGE_BUGREPORT ""
#define PACKAGE_URL ""
