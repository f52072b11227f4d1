#include "core/status_page.h"
namespace asyncd {
std::string format_status_page(const std::string &json) {
    return "<!doctype html><html><body><h1>asyncd</h1><pre>" + json + "</pre></body></html>\n";
}
}  // namespace asyncd
