#include "core/plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

namespace asyncd {

namespace {

template <typename Fn>
void find(void *handle, const char *name, Fn *out) {
    *out = reinterpret_cast<Fn>(dlsym(handle, name));
}

}  // namespace

Plugin::~Plugin() {
    // Unless unload() is called, the plugin stays mapped until the process exits: timers or
    // atexit handlers of its own may still point into it.
}

void Plugin::unload() {
    if (handle_) dlclose(handle_);
    handle_ = nullptr;
    fns_ = PluginExports();
}

bool Plugin::load_fresh(const std::string &path, std::string *err) {
    const char *tmp = getenv("TMPDIR");
    std::string copy = std::string(tmp && *tmp ? tmp : "/tmp") + "/asyncd-plugin-XXXXXX";
    int out = mkstemp(&copy[0]);
    if (out < 0) {
        *err = "cannot copy the plugin: mkstemp: " + std::string(strerror(errno));
        return false;
    }
    int in = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    bool ok = in >= 0;
    char buf[65536];
    for (ssize_t n; ok && (n = read(in, buf, sizeof buf)) != 0;)
        ok = n > 0 && write(out, buf, size_t(n)) == n;
    if (in >= 0) close(in);
    close(out);
    if (!ok) {
        unlink(copy.c_str());
        *err = "cannot copy the plugin " + path + ": " + strerror(errno);
        return false;
    }
    ok = load(copy, err);
    unlink(copy.c_str());  // mapped now; the name is not needed
    return ok;
}

bool Plugin::load(const std::string &path, std::string *err) {
    // A path without a slash would make dlopen search the library path instead.
    std::string p = path.find('/') == std::string::npos ? "./" + path : path;
    handle_ = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle_) {
        const char *why = dlerror();
        *err = std::string("cannot load plugin: ") + (why ? why : path.c_str());
        return false;
    }
    auto *abi = static_cast<const int *>(dlsym(handle_, "asyncd_plugin_abi"));
    if (!abi) {
        *err = "plugin " + path +
               " has no asyncd_plugin_abi symbol: build it against plugin_api/asyncd_plugin.h";
        return false;
    }
    if (*abi != ASYNCD_ABI_VERSION) {
        *err = "plugin " + path + " was built for plugin ABI " + std::to_string(*abi) +
               ", this asyncd speaks ABI " + std::to_string(ASYNCD_ABI_VERSION) +
               ": rebuild it against this asyncd's asyncd_plugin.h";
        return false;
    }
    find(handle_, "init_service", &fns_.init_service);
    find(handle_, "fini_service", &fns_.fini_service);
    find(handle_, "get_pkg_len", &fns_.get_pkg_len);
    find(handle_, "select_worker", &fns_.select_worker);
    find(handle_, "link_up_cli", &fns_.link_up_cli);
    find(handle_, "proc_pkg_cli", &fns_.proc_pkg_cli);
    find(handle_, "link_down_cli", &fns_.link_down_cli);
    find(handle_, "proc_events", &fns_.proc_events);
    find(handle_, "proc_pkg_node", &fns_.proc_pkg_node);
    find(handle_, "link_up_node", &fns_.link_up_node);
    find(handle_, "link_down_node", &fns_.link_down_node);
    if (!fns_.proc_pkg_cli) {
        *err = "plugin " + path + " does not export proc_pkg_cli, the one required function";
        return false;
    }
    return true;
}

}  // namespace asyncd
