// The database client libraries (libpq, libmariadb/libmysqlclient), loaded with dlopen on first use so
// that libcoffer.so does not need them unless the database secrets engine connects to a database.
//
// Our own minimal prototypes and opaque types: building needs neither libpq-fe.h nor mysql.h. The
// enum values below are the libraries' stable ABI values. Every name is cdb_* (never coffer_*: the
// library exports coffer_* only, and these stay local to it).
#ifndef CDB_H
#define CDB_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cdb_pg_conn cdb_pg_conn;      // PGconn
typedef struct cdb_pg_result cdb_pg_result;  // PGresult
typedef struct cdb_my_conn cdb_my_conn;      // MYSQL
typedef struct cdb_my_result cdb_my_result;  // MYSQL_RES

// ConnStatusType, ExecStatusType, PGTransactionStatusType (libpq-fe.h).
enum {
    CDB_PG_CONNECTION_OK = 0,
    CDB_PG_CONNECTION_BAD = 1,
};
enum {
    CDB_PGRES_EMPTY_QUERY = 0,
    CDB_PGRES_COMMAND_OK = 1,
    CDB_PGRES_TUPLES_OK = 2,
    CDB_PGRES_BAD_RESPONSE = 5,
    CDB_PGRES_NONFATAL_ERROR = 6,
    CDB_PGRES_FATAL_ERROR = 7,
};
// Error fields (postgres_ext.h: PG_DIAG_*).
enum {
    CDB_PG_DIAG_SEVERITY = 'S',
    CDB_PG_DIAG_SEVERITY_NONLOCALIZED = 'V',
    CDB_PG_DIAG_SQLSTATE = 'C',
    CDB_PG_DIAG_MESSAGE_PRIMARY = 'M',
};

// enum mysql_option: these first values are the same in MariaDB Connector/C and libmysqlclient.
enum {
    CDB_MYSQL_OPT_CONNECT_TIMEOUT = 0,
    CDB_MYSQL_SET_CHARSET_NAME = 7,
    CDB_MYSQL_OPT_PROTOCOL = 9,
    CDB_MYSQL_OPT_READ_TIMEOUT = 11,
    CDB_MYSQL_OPT_WRITE_TIMEOUT = 12,
};
// enum mysql_protocol_type.
enum {
    CDB_MYSQL_PROTOCOL_TCP = 1,
    CDB_MYSQL_PROTOCOL_SOCKET = 2,
};

// ---- Loading ----

/// Loads libpq.so.5 once (thread-safe). NULL when it is loaded, else why not (a static string).
const char *cdb_pg_load(void);
/// Loads libmariadb.so.3 (or libmysqlclient.so.21) once and initialises it (thread-safe). NULL when
/// it is loaded, else why not (a static string).
const char *cdb_my_load(void);

// ---- PostgreSQL (libpq). Call only after cdb_pg_load() returned NULL. ----

/// PQconnectdbParams with expand_dbname = 1; installs a notice processor that drops notices (libpq
/// would print them on stderr). Never NULL unless out of memory.
cdb_pg_conn *cdb_pg_connect(const char *const *keywords, const char *const *values);
int cdb_pg_status(const cdb_pg_conn *conn);
/// Never NULL ("" when none).
const char *cdb_pg_error_message(const cdb_pg_conn *conn);
const char *cdb_pg_host(const cdb_pg_conn *conn);
const char *cdb_pg_port(const cdb_pg_conn *conn);
const char *cdb_pg_user(const cdb_pg_conn *conn);
int cdb_pg_socket(const cdb_pg_conn *conn);
/// PQconsumeInput: 1 on success, 0 when the connection failed.
int cdb_pg_consume_input(cdb_pg_conn *conn);
void cdb_pg_finish(cdb_pg_conn *conn);
cdb_pg_result *cdb_pg_exec(cdb_pg_conn *conn, const char *sql);
/// PQexecParams with text parameters (NULL entries are SQL NULL) and text results.
cdb_pg_result *cdb_pg_exec_params(cdb_pg_conn *conn, const char *sql, int count, const char *const *values);
int cdb_pg_result_status(const cdb_pg_result *result);
/// NULL when the field is absent.
const char *cdb_pg_result_error_field(const cdb_pg_result *result, int field);
/// Never NULL ("" when none).
const char *cdb_pg_result_error_message(const cdb_pg_result *result);
int cdb_pg_ntuples(const cdb_pg_result *result);
int cdb_pg_nfields(const cdb_pg_result *result);
int cdb_pg_getisnull(const cdb_pg_result *result, int row, int column);
const char *cdb_pg_getvalue(const cdb_pg_result *result, int row, int column);
void cdb_pg_clear(cdb_pg_result *result);

// ---- MySQL / MariaDB. Call only after cdb_my_load() returned NULL. ----

cdb_my_conn *cdb_my_init(void);
int cdb_my_options(cdb_my_conn *conn, int option, const void *value);
/// mysql_real_connect: 0 on success, else the error number (the message in cdb_my_error).
unsigned int cdb_my_connect(
    cdb_my_conn *conn, const char *host, const char *user, const char *password, const char *db, unsigned int port,
    const char *unix_socket);
/// mysql_real_query: 0 on success.
int cdb_my_query(cdb_my_conn *conn, const char *sql, unsigned long length);
/// mysql_store_result; NULL for a statement without a result set (or on error: see cdb_my_errno).
cdb_my_result *cdb_my_store_result(cdb_my_conn *conn);
unsigned int cdb_my_field_count(cdb_my_conn *conn);
unsigned int cdb_my_num_fields(cdb_my_result *result);
/// The next row's values (NULL entries are SQL NULL) and lengths; NULL after the last row.
char **cdb_my_fetch_row(cdb_my_result *result, unsigned long **lengths);
void cdb_my_free_result(cdb_my_result *result);
unsigned int cdb_my_errno(cdb_my_conn *conn);
const char *cdb_my_error(cdb_my_conn *conn);
const char *cdb_my_sqlstate(cdb_my_conn *conn);
/// mysql_real_escape_string: `to` must hold 2 * length + 1 bytes; returns the escaped length.
unsigned long cdb_my_escape(cdb_my_conn *conn, char *to, const char *from, unsigned long length);
int cdb_my_socket(cdb_my_conn *conn);
void cdb_my_close(cdb_my_conn *conn);

// ---- Both ----

/// 1 when an idle connection's socket shows the server closed it (or sent something unasked), 0 when
/// it looks usable. Does not block or consume anything.
int cdb_socket_unusable(int fd);

#ifdef __cplusplus
}
#endif

#endif
