// The functions plugins call. They are exported from the asyncd executable (it links with
// -rdynamic) and resolved when a plugin is loaded.
#include <stdarg.h>
#include <time.h>

#include "core/clock.h"
#include "plugin_api/asyncd_plugin.h"
#include "work/worker.h"

using asyncd::work::current_worker;

extern "C" {

int net_send_cli(asyncd_conn_t conn, const void *buf, size_t len) {
    asyncd::work::Worker *w = current_worker();
    return w ? w->send(conn, buf, len) : -1;
}

int net_close_cli(asyncd_conn_t conn) {
    asyncd::work::Worker *w = current_worker();
    return w ? w->close_conn(conn) : -1;
}

uint64_t asyncd_timer_add(uint32_t ms, asyncd_timer_fn fn, void *arg) {
    asyncd::work::Worker *w = current_worker();
    return w ? w->timer_add(ms, fn, arg) : 0;
}

int asyncd_timer_cancel(uint64_t timer_id) {
    asyncd::work::Worker *w = current_worker();
    return w ? w->timer_cancel(timer_id) : -1;
}

uint64_t asyncd_now_ms(void) {
    return asyncd::monotonic_ms();
}

void asyncd_log(int level, const char *fmt, ...) {
    asyncd::work::Worker *w = current_worker();
    if (!w) return;
    if (level < 0) level = 0;
    if (level > int(asyncd::LogLevel::kAlert)) level = int(asyncd::LogLevel::kAlert);
    va_list ap;
    va_start(ap, fmt);
    w->log()->vwrite(asyncd::LogLevel(level), fmt, ap);
    va_end(ap);
}

int asyncd_worker_index(void) {
    asyncd::work::Worker *w = current_worker();
    return w ? w->index() : -1;
}

int asyncd_worker_count(void) {
    asyncd::work::Worker *w = current_worker();
    return w ? w->count() : 0;
}

const char *asyncd_config(const char *key) {
    asyncd::work::Worker *w = current_worker();
    return w && key ? w->config().plugin_value(key) : nullptr;
}

asyncd_call_t node_call(const char *node, const char *service, int route, uint64_t key,
                        const void *msg, size_t len, uint32_t timeout_ms, asyncd_call_fn fn,
                        void *arg) {
    asyncd::work::Worker *w = current_worker();
    return w ? w->node_call(node, service, route, key, msg, len, timeout_ms, fn, arg) : 0;
}

int node_send(const char *node, const char *service, int route, uint64_t key, const void *msg,
              size_t len) {
    asyncd::work::Worker *w = current_worker();
    return w ? w->node_send(node, service, route, key, msg, len) : ASYNCD_NODE_STOPPING;
}

int node_reply(asyncd_req_t req, int status, const void *buf, size_t len) {
    asyncd::work::Worker *w = current_worker();
    return w ? w->node_reply(req, status, buf, len) : -1;
}

const char *asyncd_node_name(void) {
    asyncd::work::Worker *w = current_worker();
    return w ? w->node_name() : "";
}

}  // extern "C"
