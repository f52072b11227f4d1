// The status page that admin_listen serves at `GET /`: one self-contained document (HTML,
// CSS and inline JS, no external assets) that draws /status.json and reads it again every
// second.
#pragma once

#include <string>

namespace asyncd {

// The status page: plain HTML, CSS and inline JS, no external assets. `json` is the
// current /status.json document, embedded so that the first paint needs no request.
std::string format_status_page(const std::string &json);

}  // namespace asyncd
