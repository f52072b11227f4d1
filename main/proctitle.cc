#include "main/proctitle.h"

#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdlib>

extern char **environ;

namespace asyncd {

namespace {

// The argv/environ area of this process; set once by proctitle_init.
char *g_title_start = nullptr;
size_t g_title_size = 0;

}  // namespace

void proctitle_init(int argc, char **argv) {
    if (argc < 1 || !argv[0]) return;
    char *start = argv[0];
    char *end = argv[argc - 1] + strlen(argv[argc - 1]) + 1;
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    for (size_t i = 0; i < nenv; i++) {
        if (environ[i] == end) end = environ[i] + strlen(environ[i]) + 1;
    }
    // The environment moves to the heap; the strings in argv stay readable until a title
    // overwrites them, so callers copy what they need from argv first.
    char **copy = static_cast<char **>(malloc((nenv + 1) * sizeof(char *)));
    if (!copy) return;
    for (size_t i = 0; i < nenv; i++)
        copy[i] = strdup(environ[i]);
    copy[nenv] = nullptr;
    environ = copy;
    g_title_start = start;
    g_title_size = size_t(end - start);
}

void proctitle_set(const char *title, const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0);
    if (!g_title_start || g_title_size < 2) return;
    size_t n = strlen(title);
    if (n > g_title_size - 1) n = g_title_size - 1;
    memcpy(g_title_start, title, n);
    memset(g_title_start + n, 0, g_title_size - n);
}

}  // namespace asyncd
