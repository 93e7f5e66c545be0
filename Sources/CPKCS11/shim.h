#ifndef COFFER_CPKCS11_SHIM_H
#define COFFER_CPKCS11_SHIM_H

/* PKCS#11 v2.40 types from p11-kit's header (apt libp11-kit-dev) in its compatibility mode, which
   gives the standard names (CK_GCM_PARAMS with pIv, ulIvLen, ulIvBits, ...). Only the header is
   used, by its path under /usr/include (no pkg-config, so nothing links libp11-kit): modules are
   loaded at run time by absolute path, never linked. */
#include <p11-kit-1/p11-kit/pkcs11.h>
#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

static inline void *coffer_p11_dlopen(const char *path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }
static inline const char *coffer_p11_dlerror(void) { return dlerror(); }
static inline CK_C_GetFunctionList coffer_p11_get_function_list(void *handle) {
    return (CK_C_GetFunctionList)dlsym(handle, "C_GetFunctionList");
}

/* Constants defined with casts or as ~0UL, which Swift does not import. */
static const CK_ULONG coffer_ck_unavailable_information = CK_UNAVAILABLE_INFORMATION;
static const CK_ULONG coffer_ck_effectively_infinite = CK_EFFECTIVELY_INFINITE;

#endif
