#include "bench/report.h"

#include <errno.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

namespace asyncd::bench {

namespace {

const double kPercentiles[] = {50, 90, 99, 99.9};

std::string describe(const LoadSpec &spec) {
    std::ostringstream o;
    o << proto_name(spec.proto) << " " << spec.host << ":" << spec.port << ", " << spec.conns
      << " connections, pipeline " << spec.pipeline
      << (spec.rate > 0 ? ""
          : spec.batch  ? " (batch)"
                        : " (window)")
      << ", " << spec.threads << " thread" << (spec.threads == 1 ? "" : "s");
    if (spec.proto == Proto::kEcho32be || spec.proto == Proto::kEcho32le) {
        o << ", payload " << spec.payload << " B";
    }
    if (spec.rate > 0) o << ", open loop at " << spec.rate << " req/s";
    if (spec.idle) o << ", " << spec.idle << " idle connections";
    return o.str();
}

std::string json_escape(const std::string &s) {
    std::string out;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (uint8_t(ch) < 0x20) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\u%04x", ch);
            out += buf;
        } else {
            out += ch;
        }
    }
    return out;
}

bool save(const std::string &path, const std::string &text, std::string *err) {
    std::ofstream out(path);
    out << text;
    out.close();
    if (!out) {
        *err = path + ": " + strerror(errno);
        return false;
    }
    return true;
}

}  // namespace

std::string human_ns(double ns) {
    char buf[32];
    if (ns < 1e3) {
        snprintf(buf, sizeof buf, "%.0f ns", ns);
    } else if (ns < 1e6) {
        snprintf(buf, sizeof buf, "%.1f us", ns / 1e3);
    } else if (ns < 1e9) {
        snprintf(buf, sizeof buf, "%.2f ms", ns / 1e6);
    } else {
        snprintf(buf, sizeof buf, "%.2f s", ns / 1e9);
    }
    return buf;
}

void print_summary(FILE *out, const LoadSpec &spec, const LoadResult &r) {
    double rate = r.elapsed > 0 ? double(r.completed) / r.elapsed : 0;
    fprintf(out, "asyncd-bench: %s\n", describe(spec).c_str());
    fprintf(out, "  requests  %llu in %.2f s: %.0f req/s\n", (unsigned long long)r.completed,
            r.elapsed, rate);
    fprintf(out, "  errors    %llu wrong replies, %llu connect errors, %llu connections dropped\n",
            (unsigned long long)r.errors, (unsigned long long)r.connect_errors,
            (unsigned long long)r.dropped);
    if (!r.first_error.empty()) fprintf(out, "  first error: %s\n", r.first_error.c_str());
    fprintf(out, "  latency   mean %s", human_ns(r.latency.mean()).c_str());
    for (double p : kPercentiles) {
        fprintf(out, "  p%g %s", p, human_ns(double(r.latency.percentile(p))).c_str());
    }
    fprintf(out, "  max %s\n", human_ns(double(r.latency.max())).c_str());
    if (r.server_processes) {
        fprintf(out, "  server    %.0f ns of CPU per request (%d processes, %.2f s of CPU)\n",
                r.completed ? double(r.server_cpu_ns) / double(r.completed) : 0, r.server_processes,
                double(r.server_cpu_ns) / 1e9);
        if (r.server_cpu_by_name.size() > 1 && r.completed) {
            fprintf(out, "  by process");
            for (const auto &p : r.server_cpu_by_name)
                fprintf(out, "  %s %.0f ns", p.first.c_str(),
                        double(p.second) / double(r.completed));
            fprintf(out, "\n");
        }
    }
}

bool write_json(const std::string &path, const LoadSpec &spec, const LoadResult &r,
                std::string *err) {
    std::ostringstream o;
    o << "{\n  \"params\": {\"host\": \"" << json_escape(spec.host) << "\", \"port\": " << spec.port
      << ", \"protocol\": \"" << proto_name(spec.proto) << "\", \"connections\": " << spec.conns
      << ", \"pipeline\": " << spec.pipeline << ", \"mode\": \""
      << (spec.rate > 0 ? "open"
          : spec.batch  ? "batch"
                        : "window")
      << "\""
      << ", \"threads\": " << spec.threads << ", \"payload\": " << spec.payload
      << ", \"requests\": " << spec.requests << ", \"seconds\": " << spec.seconds
      << ", \"rate\": " << spec.rate << ", \"idle\": " << spec.idle << "},\n";
    double rate = r.elapsed > 0 ? double(r.completed) / r.elapsed : 0;
    o << "  \"completed\": " << r.completed << ",\n  \"elapsed_s\": " << r.elapsed
      << ",\n  \"requests_per_s\": " << rate << ",\n";
    if (r.server_processes) {
        o << "  \"server_cpu_ns\": " << r.server_cpu_ns
          << ",\n  \"server_processes\": " << r.server_processes
          << ",\n  \"server_cpu_ns_per_request\": "
          << (r.completed ? double(r.server_cpu_ns) / double(r.completed) : 0)
          << ",\n  \"server_cpu_ns_per_request_by_process\": {";
        const char *sep = "";
        for (const auto &p : r.server_cpu_by_name) {
            o << sep << "\"" << json_escape(p.first)
              << "\": " << (r.completed ? double(p.second) / double(r.completed) : 0);
            sep = ", ";
        }
        o << "},\n";
    }
    o << "  \"errors\": {\"wrong_replies\": " << r.errors
      << ", \"connect_errors\": " << r.connect_errors << ", \"dropped\": " << r.dropped
      << ", \"first\": \"" << json_escape(r.first_error) << "\"},\n";
    o << "  \"latency_ns\": {\"mean\": " << r.latency.mean() << ", \"min\": " << r.latency.min();
    for (double p : kPercentiles)
        o << ", \"p" << p << "\": " << r.latency.percentile(p);
    o << ", \"max\": " << r.latency.max() << "},\n";
    o << "  \"percentile_curve\": [";
    bool first = true;
    for (double nines = 0; nines <= 5.0001; nines += 0.25) {
        double p = 100.0 * (1.0 - std::pow(10.0, -nines));
        o << (first ? "" : ", ") << "[" << p << ", " << r.latency.percentile(p) << "]";
        first = false;
    }
    o << "],\n  \"per_second\": [";
    for (size_t i = 0; i < r.per_second.size(); i++)
        o << (i ? ", " : "") << r.per_second[i];
    o << "]\n}\n";
    return save(path, o.str(), err);
}

// The percentile curve on the usual "nines" axis (50%, 90%, 99%, ... evenly spaced), and,
// for runs of more than a second, the throughput of each second below it.
bool write_svg(const std::string &path, const LoadSpec &spec, const LoadResult &r,
               std::string *err) {
    const int W = 760, H = 300, L = 70, R = 20, T = 40, B = 40;
    bool timeline = r.per_second.size() > 1;
    int height = timeline ? 2 * H : H;
    std::ostringstream o;
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
    o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    o << "<text x=\"" << L
      << "\" y=\"20\" font-size=\"14\">latency by percentile: " << describe(spec) << "</text>\n";
    const double max_nines = 5;
    double top = double(std::max<uint64_t>(r.latency.max(), 1));
    auto px = [&](double nines) { return L + (W - L - R) * nines / max_nines; };
    auto py = [&](double v) { return T + (H - T - B) * (1.0 - v / top); };
    o << "<line x1=\"" << L << "\" y1=\"" << H - B << "\" x2=\"" << W - R << "\" y2=\"" << H - B
      << "\" stroke=\"black\"/>\n<line x1=\"" << L << "\" y1=\"" << T << "\" x2=\"" << L
      << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n";
    const char *labels[] = {"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"};
    for (int k = 0; k <= 5; k++) {
        o << "<text x=\"" << px(k) - 15 << "\" y=\"" << H - B + 16 << "\">" << labels[k]
          << "</text>\n";
    }
    for (int k = 0; k <= 4; k++) {
        double v = top * k / 4;
        o << "<text x=\"4\" y=\"" << py(v) + 4 << "\">" << human_ns(v) << "</text>\n";
        o << "<line x1=\"" << L << "\" y1=\"" << py(v) << "\" x2=\"" << W - R << "\" y2=\"" << py(v)
          << "\" stroke=\"#ddd\"/>\n";
    }
    o << "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"";
    for (double nines = 0; nines <= max_nines + 1e-9; nines += 0.05) {
        double p = 100.0 * (1.0 - std::pow(10.0, -nines));
        o << px(nines) << "," << py(double(r.latency.percentile(p))) << " ";
    }
    o << "\"/>\n";
    if (timeline) {
        uint64_t peak = *std::max_element(r.per_second.begin(), r.per_second.end());
        double ptop = double(std::max<uint64_t>(peak, 1));
        size_t n = r.per_second.size();
        auto tx = [&](double i) { return L + (W - L - R) * i / double(n); };
        auto ty = [&](double v) { return H + T + (H - T - B) * (1.0 - v / ptop); };
        o << "<text x=\"" << L << "\" y=\"" << H + 20 << "\" font-size=\"14\">replies per second"
          << "</text>\n";
        o << "<line x1=\"" << L << "\" y1=\"" << 2 * H - B << "\" x2=\"" << W - R << "\" y2=\""
          << 2 * H - B << "\" stroke=\"black\"/>\n";
        o << "<text x=\"4\" y=\"" << ty(ptop) + 4 << "\">" << peak << "</text>\n";
        o << "<text x=\"" << W - R - 40 << "\" y=\"" << 2 * H - B + 16 << "\">" << n
          << " s</text>\n";
        o << "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"";
        for (size_t i = 0; i < n; i++) {
            o << tx(double(i)) << "," << ty(double(r.per_second[i])) << " " << tx(double(i + 1))
              << "," << ty(double(r.per_second[i])) << " ";
        }
        o << "\"/>\n";
    }
    o << "</svg>\n";
    return save(path, o.str(), err);
}

}  // namespace asyncd::bench
