// Loads a plugin .so and finds its exports. Used by the work process (every export) and by
// the conn process (get_pkg_len, select_worker), and by `asyncd -t`.
#pragma once

#include <string>

#include "plugin_api/asyncd_plugin.h"

namespace asyncd {

struct PluginExports {
    int (*init_service)(int) = nullptr;
    void (*fini_service)(int) = nullptr;
    int (*get_pkg_len)(asyncd_conn_t, const void *, size_t) = nullptr;
    int (*select_worker)(asyncd_conn_t, const void *, size_t, int) = nullptr;
    void (*link_up_cli)(asyncd_conn_t, const asyncd_peer_t *) = nullptr;
    int (*proc_pkg_cli)(asyncd_conn_t, const void *, size_t) = nullptr;
    void (*link_down_cli)(asyncd_conn_t, int) = nullptr;
    void (*proc_events)(void) = nullptr;
    void (*proc_pkg_node)(asyncd_req_t, const char *, const char *, const void *, size_t,
                          uint64_t) = nullptr;
    void (*link_up_node)(const char *) = nullptr;
    void (*link_down_node)(const char *, int) = nullptr;
};

class Plugin {
  public:
    Plugin() = default;
    ~Plugin();
    Plugin(const Plugin &) = delete;
    Plugin &operator=(const Plugin &) = delete;

    // dlopen with every symbol resolved now; checks asyncd_plugin_abi against ours and
    // that proc_pkg_cli is there. On failure returns false with one clear sentence in *err.
    [[nodiscard]] bool load(const std::string &path, std::string *err);
    // load() of a private copy of path: the new code even when a plugin of that name is
    // already loaded in this process (rebuilt in place), which dlopen would hand back.
    [[nodiscard]] bool load_fresh(const std::string &path, std::string *err);

    const PluginExports &exports() const { return fns_; }

    // dlclose, for a process that knows no code of this plugin can run any more: conn, once a
    // reload has replaced the plugin it frames and routes with (it calls into a plugin only
    // from its own loop, so nothing of the old one is on the stack). The exports are gone.
    void unload();

  private:
    void *handle_ = nullptr;
    PluginExports fns_;
};

}  // namespace asyncd
