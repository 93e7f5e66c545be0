// libFuzzer's entry for programs that keep their own main (compiler-rt's FuzzerInterface.h).
// Only `make fuzz` links libFuzzer (libclang_rt.fuzzer_no_main); a normal build never calls this.
#ifndef COFFER_LIBFUZZER_H
#define COFFER_LIBFUZZER_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
