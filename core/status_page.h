#pragma once
#include <string>
namespace asyncd { std::string format_status_page(const std::string &json); }
