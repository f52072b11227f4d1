#include "bench/report.h"

#include <errno.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <vector>

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

namespace {

const char *const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

// Text cut into lines of at most `width` characters, at spaces.
std::vector<std::string> wrap(const std::string &text, size_t width) {
    std::vector<std::string> lines;
    std::string line, word;
    std::istringstream in(text);
    while (in >> word) {
        if (!line.empty() && line.size() + 1 + word.size() > width) {
            lines.push_back(line);
            line.clear();
        }
        if (word.size() > width) word = word.substr(0, width - 3) + "...";
        line += (line.empty() ? "" : " ") + word;
    }
    if (!line.empty()) lines.push_back(line);
    return lines;
}

std::string xml_escape(const std::string &s) {
    std::string out;
    for (char ch : s) {
        if (ch == '<')
            out += "&lt;";
        else if (ch == '>')
            out += "&gt;";
        else if (ch == '&')
            out += "&amp;";
        else
            out += ch;
    }
    return out;
}

std::string human_rate(double v) {
    char buf[32];
    if (v >= 1e6)
        snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
    else if (v >= 1e3)
        snprintf(buf, sizeof buf, "%.0fk", v / 1e3);
    else
        snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
}

std::string tick_seconds(double t) {  // 0.75, 1.5, 3
    char buf[32];
    snprintf(buf, sizeof buf, "%.3g", t);
    return buf;
}

}  // namespace

SvgRun svg_run(const std::string &label, const LoadResult &r) {
    SvgRun run;
    run.label = label;
    for (double nines = 0; nines <= 5 + 1e-9; nines += 0.05) {
        double p = 100.0 * (1.0 - std::pow(10.0, -nines));
        run.curve.push_back({nines, double(r.latency.percentile(p))});
    }
    for (uint64_t v : r.per_second)
        run.per_second.push_back(double(v));
    return run;
}

// The percentile curves on the usual "nines" axis (50%, 90%, 99%, ... evenly spaced), and,
// for runs of more than a second, the throughput of each second below them. Both charts
// start their value axis at 0 and name its unit; several runs share the axes, each in its
// colour, with a legend.
bool write_svg_runs(const std::string &path, const std::string &title,
                    const std::vector<SvgRun> &runs, std::string *err) {
    const int W = 760, L = 80, R = 20, B = 50;
    std::vector<std::string> title_lines = wrap(title, 95);
    const int T = 30 + 16 * int(title_lines.size()) + (runs.size() > 1 ? 16 * int(runs.size()) : 0);
    const int H = T + 260;
    bool timeline = false;
    double top = 1, peak = 1;
    size_t seconds = 0;
    for (const SvgRun &run : runs) {
        for (auto &pt : run.curve)
            top = std::max(top, pt.second);
        if (run.per_second.size() > 1) timeline = true;
        for (double v : run.per_second)
            peak = std::max(peak, v);
        seconds = std::max(seconds, run.per_second.size());
    }
    const int H2 = 260;
    int height = H + (timeline ? H2 : 0);
    std::ostringstream o;
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << W << " " << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
    o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    for (size_t i = 0; i < title_lines.size(); i++) {
        o << "<text x=\"10\" y=\"" << 20 + 16 * int(i) << "\" font-size=\"13\">"
          << xml_escape(title_lines[i]) << "</text>\n";
    }
    if (runs.size() > 1) {
        for (size_t i = 0; i < runs.size(); i++) {
            int y = 20 + 16 * int(title_lines.size() + i);
            o << "<line x1=\"10\" y1=\"" << y - 4 << "\" x2=\"34\" y2=\"" << y - 4 << "\" stroke=\""
              << kColors[i % 6] << "\" stroke-width=\"3\"/>\n";
            o << "<text class=\"legend\" x=\"40\" y=\"" << y << "\">"
              << xml_escape(wrap(runs[i].label, 110).front()) << "</text>\n";
        }
    }
    const double max_nines = 5;
    auto px = [&](double nines) { return L + (W - L - R) * nines / max_nines; };
    auto py = [&](double v) { return T + (H - T - B) * (1.0 - v / top); };
    o << "<line x1=\"" << L << "\" y1=\"" << H - B << "\" x2=\"" << W - R << "\" y2=\"" << H - B
      << "\" stroke=\"black\"/>\n<line x1=\"" << L << "\" y1=\"" << T << "\" x2=\"" << L
      << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n";
    const char *labels[] = {"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"};
    for (int k = 0; k <= 5; k++) {
        o << "<text x=\"" << px(k) << "\" y=\"" << H - B + 16 << "\" text-anchor=\""
          << (k == 0   ? "start"
              : k == 5 ? "end"
                       : "middle")
          << "\">" << labels[k] << "</text>\n";
    }
    o << "<text x=\"" << (L + W - R) / 2 - 40 << "\" y=\"" << H - B + 34
      << "\">percentile of requests</text>\n";
    o << "<text x=\"14\" y=\"" << (T + H - B) / 2 << "\" transform=\"rotate(-90 14 "
      << (T + H - B) / 2 << ")\">latency</text>\n";
    for (int k = 0; k <= 4; k++) {
        double v = top * k / 4;
        o << "<text class=\"ytick\" x=\"24\" y=\"" << py(v) + 4 << "\">" << human_ns(v)
          << "</text>\n";
        o << "<line x1=\"" << L << "\" y1=\"" << py(v) << "\" x2=\"" << W - R << "\" y2=\"" << py(v)
          << "\" stroke=\"#ddd\"/>\n";
    }
    for (size_t i = 0; i < runs.size(); i++) {
        o << "<polyline class=\"curve\" fill=\"none\" stroke=\"" << kColors[i % 6]
          << "\" stroke-width=\"2\" points=\"";
        for (auto &pt : runs[i].curve)
            o << px(pt.first) << "," << py(pt.second) << " ";
        o << "\"/>\n";
    }
    if (timeline) {
        auto tx = [&](double t) { return L + (W - L - R) * t / double(seconds); };
        auto ty = [&](double v) { return H + 30 + (H2 - 30 - B) * (1.0 - v / peak); };
        o << "<text x=\"10\" y=\"" << H + 18 << "\" font-size=\"13\">replies per second</text>\n";
        o << "<line x1=\"" << L << "\" y1=\"" << ty(0) << "\" x2=\"" << W - R << "\" y2=\"" << ty(0)
          << "\" stroke=\"black\"/>\n<line x1=\"" << L << "\" y1=\"" << ty(peak) << "\" x2=\"" << L
          << "\" y2=\"" << ty(0) << "\" stroke=\"black\"/>\n";
        for (int k = 0; k <= 4; k++) {
            double v = peak * k / 4;
            o << "<text class=\"ytick\" x=\"24\" y=\"" << ty(v) + 4 << "\">" << human_rate(v)
              << "/s</text>\n";
            o << "<line x1=\"" << L << "\" y1=\"" << ty(v) << "\" x2=\"" << W - R << "\" y2=\""
              << ty(v) << "\" stroke=\"#ddd\"/>\n";
        }
        for (size_t k = 0; k <= 4; k++) {
            double t = double(seconds) * double(k) / 4;
            o << "<text x=\"" << tx(t) << "\" y=\"" << ty(0) + 16 << "\" text-anchor=\""
              << (k == 0   ? "start"
                  : k == 4 ? "end"
                           : "middle")
              << "\">" << tick_seconds(t) << " s</text>\n";
        }
        o << "<text x=\"" << (L + W - R) / 2 - 30 << "\" y=\"" << ty(0) + 34
          << "\">time into the run</text>\n";
        for (size_t i = 0; i < runs.size(); i++) {
            if (runs[i].per_second.size() < 2) continue;
            o << "<polyline class=\"rate\" fill=\"none\" stroke=\"" << kColors[i % 6]
              << "\" stroke-width=\"2\" points=\"";
            for (size_t s2 = 0; s2 < runs[i].per_second.size(); s2++) {
                double v = runs[i].per_second[s2];
                o << tx(double(s2)) << "," << ty(v) << " " << tx(double(s2 + 1)) << "," << ty(v)
                  << " ";
            }
            o << "\"/>\n";
        }
    }
    o << "</svg>\n";
    return save(path, o.str(), err);
}

bool write_svg(const std::string &path, const LoadSpec &spec, const LoadResult &r,
               std::string *err) {
    return write_svg_runs(path, "latency by percentile: " + describe(spec), {svg_run("", r)}, err);
}

// What a result file written by --json holds for a chart: its percentile curve, its
// throughput per second, and a label from its parameters.
bool read_svg_run(const std::string &path, SvgRun *run, std::string *err) {
    std::ifstream in(path);
    std::string j((std::istreambuf_iterator<char>(in)), {});
    if (!in && j.empty()) {
        *err = path + ": " + strerror(errno);
        return false;
    }
    size_t at = j.find("\"percentile_curve\": [");
    if (at == std::string::npos) {
        *err = path + ": not a result of asyncd-bench --json (no percentile_curve)";
        return false;
    }
    const char *p = j.c_str() + at + strlen("\"percentile_curve\": [");
    while (true) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p != '[') break;
        char *end;
        double pct = strtod(p + 1, &end);
        if (*end != ',') break;
        double ns = strtod(end + 1, &end);
        if (*end != ']') break;
        double nines = pct >= 100 ? 5 : -std::log10(1.0 - pct / 100.0);
        run->curve.push_back({std::min(nines, 5.0), ns});
        p = end + 1;
    }
    if (run->curve.size() < 2) {
        *err = path + ": its percentile_curve has fewer than two points";
        return false;
    }
    at = j.find("\"per_second\": [");
    if (at != std::string::npos) {
        p = j.c_str() + at + strlen("\"per_second\": [");
        while (*p && *p != ']') {
            char *end;
            double v = strtod(p, &end);
            if (end == p) break;
            run->per_second.push_back(v);
            p = end;
            while (*p == ',' || *p == ' ')
                p++;
        }
    }
    auto field = [&](const char *name) {
        size_t f = j.find(std::string("\"") + name + "\": ");
        if (f == std::string::npos) return std::string("?");
        f += strlen(name) + 4;
        size_t e = j.find_first_of(",}", f);
        std::string v = j.substr(f, e - f);
        if (v.size() >= 2 && v.front() == '"') v = v.substr(1, v.size() - 2);
        return v;
    };
    size_t slash = path.rfind('/');
    run->label = (slash == std::string::npos ? path : path.substr(slash + 1)) + ": " +
                 field("protocol") + " c=" + field("connections") + " P=" + field("pipeline") +
                 " " + field("mode") + ", " + human_rate(atof(field("requests_per_s").c_str())) +
                 " req/s";
    return true;
}

}  // namespace asyncd::bench
