#ifndef COFFER_CSQLITE_SHIM_H
#define COFFER_CSQLITE_SHIM_H

#include <sqlite3.h>

/* SQLITE_TRANSIENT is a macro casting -1 to a function pointer; Swift cannot import it. */
static inline sqlite3_destructor_type coffer_sqlite_transient(void) { return SQLITE_TRANSIENT; }

/* sqlite3_config is variadic, which Swift cannot call. Memory statistics take a mutex shared by every
 * connection on every allocation; Coffer does not read them. Fails harmlessly (SQLITE_MISUSE) if
 * SQLite was initialised already by someone else in the process. */
static inline int coffer_sqlite_disable_memstatus(void) { return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }

#endif
