// See include/cdb.h. The libraries are opened with dlopen on first use; each function pointer is
// resolved once, under pthread_once, so that later calls need no lock.
#include "cdb.h"

#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

// ---- libpq ----

typedef void (*cdb_pg_notice_fn)(void *arg, const char *message);

static struct {
    cdb_pg_conn *(*connectdb_params)(const char *const *, const char *const *, int);
    int (*status)(const cdb_pg_conn *);
    char *(*error_message)(const cdb_pg_conn *);
    char *(*host)(const cdb_pg_conn *);
    char *(*port)(const cdb_pg_conn *);
    char *(*user)(const cdb_pg_conn *);
    int (*socket)(const cdb_pg_conn *);
    int (*consume_input)(cdb_pg_conn *);
    void (*finish)(cdb_pg_conn *);
    cdb_pg_notice_fn (*set_notice_processor)(cdb_pg_conn *, cdb_pg_notice_fn, void *);
    cdb_pg_result *(*exec)(cdb_pg_conn *, const char *);
    cdb_pg_result *(*exec_params)(
        cdb_pg_conn *, const char *, int, const unsigned int *, const char *const *, const int *, const int *, int);
    int (*result_status)(const cdb_pg_result *);
    char *(*result_error_field)(const cdb_pg_result *, int);
    char *(*result_error_message)(const cdb_pg_result *);
    int (*ntuples)(const cdb_pg_result *);
    int (*nfields)(const cdb_pg_result *);
    int (*getisnull)(const cdb_pg_result *, int, int);
    char *(*getvalue)(const cdb_pg_result *, int, int);
    void (*clear)(cdb_pg_result *);
} pq;

static pthread_once_t pq_once = PTHREAD_ONCE_INIT;
static const char *pq_failure;
static char pq_failure_text[512];

#define RESOLVE(handle, table, field, symbol, failure, text)                                                       \
    do {                                                                                                             \
        *(void **)&table.field = dlsym(handle, symbol);                                                              \
        if (table.field == NULL) {                                                                                   \
            snprintf(text, sizeof text, "%s is missing from the database client library", symbol);                 \
            failure = text;                                                                                          \
            return;                                                                                                  \
        }                                                                                                            \
    } while (0)

static void pq_load_once(void) {
    void *handle = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        const char *why = dlerror();
        snprintf(
            pq_failure_text, sizeof pq_failure_text,
            "libpq.so.5 cannot be loaded: %s; install libpq5 (the PostgreSQL client library) to use "
            "postgresql-database-plugin",
            why ? why : "not found");
        pq_failure = pq_failure_text;
        return;
    }
    RESOLVE(handle, pq, connectdb_params, "PQconnectdbParams", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, status, "PQstatus", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, error_message, "PQerrorMessage", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, host, "PQhost", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, port, "PQport", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, user, "PQuser", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, socket, "PQsocket", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, consume_input, "PQconsumeInput", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, finish, "PQfinish", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, set_notice_processor, "PQsetNoticeProcessor", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, exec, "PQexec", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, exec_params, "PQexecParams", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, result_status, "PQresultStatus", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, result_error_field, "PQresultErrorField", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, result_error_message, "PQresultErrorMessage", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, ntuples, "PQntuples", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, nfields, "PQnfields", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, getisnull, "PQgetisnull", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, getvalue, "PQgetvalue", pq_failure, pq_failure_text);
    RESOLVE(handle, pq, clear, "PQclear", pq_failure, pq_failure_text);
}

const char *cdb_pg_load(void) {
    pthread_once(&pq_once, pq_load_once);
    return pq_failure;
}

static void pq_drop_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

cdb_pg_conn *cdb_pg_connect(const char *const *keywords, const char *const *values) {
    cdb_pg_conn *conn = pq.connectdb_params(keywords, values, 1);
    if (conn != NULL) pq.set_notice_processor(conn, pq_drop_notice, NULL);
    return conn;
}

static const char *nonnull(const char *s) { return s ? s : ""; }

int cdb_pg_status(const cdb_pg_conn *conn) { return pq.status(conn); }
const char *cdb_pg_error_message(const cdb_pg_conn *conn) { return nonnull(pq.error_message(conn)); }
const char *cdb_pg_host(const cdb_pg_conn *conn) { return nonnull(pq.host(conn)); }
const char *cdb_pg_port(const cdb_pg_conn *conn) { return nonnull(pq.port(conn)); }
const char *cdb_pg_user(const cdb_pg_conn *conn) { return nonnull(pq.user(conn)); }
int cdb_pg_socket(const cdb_pg_conn *conn) { return pq.socket(conn); }
int cdb_pg_consume_input(cdb_pg_conn *conn) { return pq.consume_input(conn); }
void cdb_pg_finish(cdb_pg_conn *conn) { pq.finish(conn); }
cdb_pg_result *cdb_pg_exec(cdb_pg_conn *conn, const char *sql) { return pq.exec(conn, sql); }
cdb_pg_result *cdb_pg_exec_params(cdb_pg_conn *conn, const char *sql, int count, const char *const *values) {
    return pq.exec_params(conn, sql, count, NULL, values, NULL, NULL, 0);
}
int cdb_pg_result_status(const cdb_pg_result *result) { return pq.result_status(result); }
const char *cdb_pg_result_error_field(const cdb_pg_result *result, int field) {
    return pq.result_error_field(result, field);
}
const char *cdb_pg_result_error_message(const cdb_pg_result *result) {
    return nonnull(pq.result_error_message(result));
}
int cdb_pg_ntuples(const cdb_pg_result *result) { return pq.ntuples(result); }
int cdb_pg_nfields(const cdb_pg_result *result) { return pq.nfields(result); }
int cdb_pg_getisnull(const cdb_pg_result *result, int row, int column) { return pq.getisnull(result, row, column); }
const char *cdb_pg_getvalue(const cdb_pg_result *result, int row, int column) {
    return pq.getvalue(result, row, column);
}
void cdb_pg_clear(cdb_pg_result *result) { pq.clear(result); }

// ---- libmariadb / libmysqlclient ----

static struct {
    int (*server_init)(int, char **, char **);
    cdb_my_conn *(*init)(cdb_my_conn *);
    int (*options)(cdb_my_conn *, int, const void *);
    cdb_my_conn *(*real_connect)(
        cdb_my_conn *, const char *, const char *, const char *, const char *, unsigned int, const char *,
        unsigned long);
    int (*real_query)(cdb_my_conn *, const char *, unsigned long);
    cdb_my_result *(*store_result)(cdb_my_conn *);
    unsigned int (*field_count)(cdb_my_conn *);
    unsigned int (*num_fields)(cdb_my_result *);
    char **(*fetch_row)(cdb_my_result *);
    unsigned long *(*fetch_lengths)(cdb_my_result *);
    void (*free_result)(cdb_my_result *);
    unsigned int (*err_no)(cdb_my_conn *);
    const char *(*error)(cdb_my_conn *);
    const char *(*sqlstate)(cdb_my_conn *);
    unsigned long (*real_escape_string)(cdb_my_conn *, char *, const char *, unsigned long);
    int (*get_socket)(cdb_my_conn *);  // optional: MariaDB Connector/C has it
    void (*close)(cdb_my_conn *);
} my;

static pthread_once_t my_once = PTHREAD_ONCE_INIT;
static const char *my_failure;
static char my_failure_text[768];

static void my_load_once(void) {
    void *handle = dlopen("libmariadb.so.3", RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        char first[300];
        const char *why = dlerror();
        snprintf(first, sizeof first, "%s", why ? why : "not found");
        handle = dlopen("libmysqlclient.so.21", RTLD_NOW | RTLD_LOCAL);
        if (handle == NULL) {
            snprintf(
                my_failure_text, sizeof my_failure_text,
                "libmariadb.so.3 cannot be loaded: %s (nor libmysqlclient.so.21); install libmariadb3 (the "
                "MariaDB client library) to use mysql-database-plugin",
                first);
            my_failure = my_failure_text;
            return;
        }
    }
    RESOLVE(handle, my, server_init, "mysql_server_init", my_failure, my_failure_text);
    RESOLVE(handle, my, init, "mysql_init", my_failure, my_failure_text);
    RESOLVE(handle, my, options, "mysql_options", my_failure, my_failure_text);
    RESOLVE(handle, my, real_connect, "mysql_real_connect", my_failure, my_failure_text);
    RESOLVE(handle, my, real_query, "mysql_real_query", my_failure, my_failure_text);
    RESOLVE(handle, my, store_result, "mysql_store_result", my_failure, my_failure_text);
    RESOLVE(handle, my, field_count, "mysql_field_count", my_failure, my_failure_text);
    RESOLVE(handle, my, num_fields, "mysql_num_fields", my_failure, my_failure_text);
    RESOLVE(handle, my, fetch_row, "mysql_fetch_row", my_failure, my_failure_text);
    RESOLVE(handle, my, fetch_lengths, "mysql_fetch_lengths", my_failure, my_failure_text);
    RESOLVE(handle, my, free_result, "mysql_free_result", my_failure, my_failure_text);
    RESOLVE(handle, my, err_no, "mysql_errno", my_failure, my_failure_text);
    RESOLVE(handle, my, error, "mysql_error", my_failure, my_failure_text);
    RESOLVE(handle, my, sqlstate, "mysql_sqlstate", my_failure, my_failure_text);
    RESOLVE(handle, my, real_escape_string, "mysql_real_escape_string", my_failure, my_failure_text);
    RESOLVE(handle, my, close, "mysql_close", my_failure, my_failure_text);
    *(void **)&my.get_socket = dlsym(handle, "mysql_get_socket");
    // mysql_init would call this itself, but not thread-safely.
    if (my.server_init(0, NULL, NULL) != 0) {
        snprintf(my_failure_text, sizeof my_failure_text, "mysql_library_init failed");
        my_failure = my_failure_text;
    }
}

const char *cdb_my_load(void) {
    pthread_once(&my_once, my_load_once);
    return my_failure;
}

cdb_my_conn *cdb_my_init(void) { return my.init(NULL); }
int cdb_my_options(cdb_my_conn *conn, int option, const void *value) { return my.options(conn, option, value); }
unsigned int cdb_my_connect(
    cdb_my_conn *conn, const char *host, const char *user, const char *password, const char *db, unsigned int port,
    const char *unix_socket) {
    if (my.real_connect(conn, host, user, password, db, port, unix_socket, 0) != NULL) return 0;
    unsigned int number = my.err_no(conn);
    return number ? number : 2000;  // CR_UNKNOWN_ERROR
}
int cdb_my_query(cdb_my_conn *conn, const char *sql, unsigned long length) {
    return my.real_query(conn, sql, length);
}
cdb_my_result *cdb_my_store_result(cdb_my_conn *conn) { return my.store_result(conn); }
unsigned int cdb_my_field_count(cdb_my_conn *conn) { return my.field_count(conn); }
unsigned int cdb_my_num_fields(cdb_my_result *result) { return my.num_fields(result); }
char **cdb_my_fetch_row(cdb_my_result *result, unsigned long **lengths) {
    char **row = my.fetch_row(result);
    if (row != NULL && lengths != NULL) *lengths = my.fetch_lengths(result);
    return row;
}
void cdb_my_free_result(cdb_my_result *result) { my.free_result(result); }
unsigned int cdb_my_errno(cdb_my_conn *conn) { return my.err_no(conn); }
const char *cdb_my_error(cdb_my_conn *conn) { return nonnull(my.error(conn)); }
const char *cdb_my_sqlstate(cdb_my_conn *conn) { return nonnull(my.sqlstate(conn)); }
unsigned long cdb_my_escape(cdb_my_conn *conn, char *to, const char *from, unsigned long length) {
    return my.real_escape_string(conn, to, from, length);
}
int cdb_my_socket(cdb_my_conn *conn) { return my.get_socket ? my.get_socket(conn) : -1; }
void cdb_my_close(cdb_my_conn *conn) { my.close(conn); }

// ---- Both ----

int cdb_socket_unusable(int fd) {
    if (fd < 0) return 1;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready;
    do {
        ready = poll(&p, 1, 0);
    } while (ready < 0 && errno == EINTR);
    if (ready == 0) return 0;
    if (ready < 0) return 1;
    // Readable on an idle connection: end of stream (the server closed it), an error, or a message
    // nobody asked for (a termination notice). None of these leaves the connection worth reusing.
    return 1;
}
