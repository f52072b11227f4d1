/* A plugin built for another ABI: it defines the version symbol itself, with a value no
 * asyncd speaks. */
#include <stddef.h>
#include <stdint.h>

const int asyncd_plugin_abi = 999;

int proc_pkg_cli(uint64_t conn, const void *pkg, size_t len) {
    (void)conn;
    (void)pkg;
    (void)len;
    return 0;
}
