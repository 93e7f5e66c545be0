/* A PKCS#11 module for tests, in front of a real one (SoftHSM2): every call goes to the real
 * module, except that
 *   - each C_Login is appended, with its result, to the file named by COFFER_TEST_P11_LOG
 *     ("C_Login 0x0", "C_Login 0xa0" for CKR_PIN_INCORRECT), so a test can count login attempts;
 *   - while the file named by COFFER_TEST_P11_UNPLUG exists, C_EncryptInit and C_DecryptInit fail
 *     with CKR_DEVICE_REMOVED, as when the HSM goes away.
 * The real module is COFFER_TEST_P11_REAL, default /usr/lib/softhsm/libsofthsm2.so.
 * Used by Tests/PKCS11SealTests and Tests/compat/test_pkcs11_server.py, which build it with
 *   cc -shared -fPIC pkcs11_test_module.c -o libcoffer-test-p11.so -ldl
 */
#include <p11-kit-1/p11-kit/pkcs11.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static CK_FUNCTION_LIST wrapped;
static CK_FUNCTION_LIST_PTR real = NULL;

static CK_RV logged_login(CK_SESSION_HANDLE session, CK_USER_TYPE type, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len) {
    CK_RV rv = real->C_Login(session, type, pin, pin_len);
    const char *log = getenv("COFFER_TEST_P11_LOG");
    if (log != NULL) {
        FILE *f = fopen(log, "a");
        if (f != NULL) {
            fprintf(f, "C_Login 0x%lx\n", (unsigned long)rv);
            fclose(f);
        }
    }
    return rv;
}

static int unplugged(void) {
    const char *path = getenv("COFFER_TEST_P11_UNPLUG");
    return path != NULL && access(path, F_OK) == 0;
}

static CK_RV encrypt_init(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key) {
    return unplugged() ? CKR_DEVICE_REMOVED : real->C_EncryptInit(session, mechanism, key);
}

static CK_RV decrypt_init(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key) {
    return unplugged() ? CKR_DEVICE_REMOVED : real->C_DecryptInit(session, mechanism, key);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
    if (list == NULL) return CKR_ARGUMENTS_BAD;
    if (real == NULL) {
        const char *path = getenv("COFFER_TEST_P11_REAL");
        void *handle = dlopen(path != NULL ? path : "/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW | RTLD_LOCAL);
        CK_C_GetFunctionList get;
        CK_FUNCTION_LIST_PTR functions = NULL;
        if (handle == NULL) return CKR_GENERAL_ERROR;
        get = (CK_C_GetFunctionList)dlsym(handle, "C_GetFunctionList");
        if (get == NULL || get(&functions) != CKR_OK || functions == NULL) return CKR_GENERAL_ERROR;
        wrapped = *functions;
        wrapped.C_GetFunctionList = C_GetFunctionList;
        wrapped.C_Login = logged_login;
        wrapped.C_EncryptInit = encrypt_init;
        wrapped.C_DecryptInit = decrypt_init;
        real = functions;
    }
    *list = &wrapped;
    return CKR_OK;
}
