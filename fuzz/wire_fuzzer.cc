// libFuzzer target for the cluster's frame reader (scenario C10): any bytes from a peer are
// refused or read, the same however they are cut, within the bounds. `make fuzz` runs it a
// little while, `make reliability` for a minute. It links cluster/frames.cc and
// cluster/wire.cc and nothing else.
#include <stdio.h>
#include <stdlib.h>

#include "fuzz/wire_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len) {
    std::string err = asyncd::wirefuzz::check_wire_stream(data, len);
    if (!err.empty()) {
        fprintf(stderr, "wire fuzzer: %s\n", err.c_str());
        abort();
    }
    return 0;
}
