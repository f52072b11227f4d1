// Unit tests of the example plugins' parsers (plugin_api/examples/*_parse.h): the RESP and
// HTTP framers on split, pipelined and malformed input, as conn drives them.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "plugin_api/examples/http_parse.h"
#include "plugin_api/examples/resp_parse.h"

namespace {

using FrameFn = size_t (*)(const char *, size_t);

// Feeds `stream` to `frame` in chunks cut at `cuts`, the way conn's decoder does with
// get_pkg_len: buffer what came, take every whole request off the front. Returns the requests; what
// is left stays in *rest.
std::vector<std::string> frame_all(FrameFn frame, const std::string &stream,
                                   const std::vector<size_t> &cuts, std::string *rest) {
    std::vector<std::string> out;
    std::string buf;
    size_t at = 0;
    auto take = [&] {
        for (;;) {
            // 0, or a length past what is there (known before the body came): wait.
            size_t n = frame(buf.data(), buf.size());
            if (n == 0 || n > buf.size()) return;
            out.push_back(buf.substr(0, n));
            buf.erase(0, n);
        }
    };
    for (size_t cut : cuts) {
        buf.append(stream, at, cut - at);
        at = cut;
        take();
    }
    buf.append(stream, at, std::string::npos);
    take();
    *rest = buf;
    return out;
}

// Every way of cutting the stream once and twice, and random cuts, gives the same requests.
// want is the requests in order; the stream is them back to back.
void expect_split_independent(FrameFn frame, const std::vector<std::string> &want) {
    std::string stream;
    for (const auto &r : want)
        stream += r;
    std::string rest;
    EXPECT_EQ(frame_all(frame, stream, {}, &rest), want);
    EXPECT_EQ(rest, "");
    for (size_t a = 0; a <= stream.size(); a++) {
        EXPECT_EQ(frame_all(frame, stream, {a}, &rest), want) << "cut at " << a;
        EXPECT_EQ(rest, "");
    }
    std::mt19937 rng(7);
    for (int round = 0; round < 500; round++) {
        std::vector<size_t> cuts;
        for (size_t at = 0; at < stream.size();) {
            at += 1 + rng() % 9;
            if (at < stream.size()) cuts.push_back(at);
        }
        ASSERT_EQ(frame_all(frame, stream, cuts, &rest), want) << "round " << round;
    }
}

std::vector<std::string> resp_args(const std::string &req, long *argc, const char **err) {
    std::vector<resp_str> args(64);
    *err = nullptr;
    *argc = resp_split(req.data(), req.size(), args.data(), args.size(), err);
    std::vector<std::string> out;
    for (long i = 0; i < *argc && i < 64; i++)
        out.emplace_back(args[size_t(i)].p, args[size_t(i)].n);
    return out;
}

TEST(RespParse, PipelinedMultibulkAndInlineWhereverTheStreamIsCut) {
    std::vector<std::string> want = {
        "*1\r\n$4\r\nPING\r\n",
        "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$10\r\nva\r\nl\nue\r\n\r\n",  // CRLF inside a bulk
        "GET key\r\n",
        "\r\n",  // an empty inline line
        "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
        "*0\r\n",
        "  ping   hello\tthere \n",
    };
    expect_split_independent(resp_frame, want);

    long argc;
    const char *err;
    EXPECT_EQ(resp_args(want[1], &argc, &err),
              (std::vector<std::string>{"SET", "key", "va\r\nl\nue\r\n"}));
    EXPECT_EQ(resp_args(want[2], &argc, &err), (std::vector<std::string>{"GET", "key"}));
    resp_args(want[3], &argc, &err);
    EXPECT_EQ(argc, 0);
    EXPECT_EQ(resp_args(want[4], &argc, &err), (std::vector<std::string>{"ECHO", ""}));
    resp_args(want[5], &argc, &err);
    EXPECT_EQ(argc, 0);
    EXPECT_EQ(resp_args(want[6], &argc, &err),
              (std::vector<std::string>{"ping", "hello", "there"}));
}

TEST(RespParse, MalformedRequestsAreFramedWholeAndNamed) {
    struct Case {
        std::string in;
        const char *err;
    } cases[] = {
        {"*x\r\n", "invalid multibulk length"},
        {"*\r\n", "invalid multibulk length"},
        {"*2\rX", "invalid multibulk length"},
        {"*2000000\r\n", "invalid multibulk length"},  // above redis's 1M arguments
        {"*1\r\n+PING\r\n", "expected '$'"},
        {"*1\r\n$-3\r\n", "invalid bulk length"},
        {"*1\r\n$abc\r\n", "invalid bulk length"},
        {"*1\r\n$999999999999\r\n", "invalid bulk length"},
        {"*1\r\n$4\r\nPINGXY", "expected CRLF"},
    };
    for (const auto &c : cases) {
        // The framer takes all of it as one request, so the plugin can answer the error.
        EXPECT_EQ(resp_frame(c.in.data(), c.in.size()), c.in.size()) << c.in;
        long argc;
        const char *err;
        resp_args(c.in, &argc, &err);
        EXPECT_EQ(argc, -1) << c.in;
        ASSERT_NE(err, nullptr) << c.in;
        EXPECT_NE(std::string(err).find(c.err), std::string::npos) << c.in << ": " << err;
    }
    // An inline request with no line end is waited for up to 64 KiB, then framed as bad.
    std::string line(RESP_MAX_INLINE - 1, 'a');
    EXPECT_EQ(resp_frame(line.data(), line.size()), 0u);
    line += 'a';
    EXPECT_EQ(resp_frame(line.data(), line.size()), line.size());
    long argc;
    const char *err;
    resp_args(line, &argc, &err);
    EXPECT_EQ(argc, -1);
    // A multibulk request still arriving is not an error at any point.
    std::string ok = "*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
    for (size_t n = 0; n < ok.size(); n++)
        EXPECT_EQ(resp_frame(ok.data(), n), 0u) << n;
}

TEST(RespParse, MoreArgumentsThanRoomAreCounted) {
    std::string req = "*20\r\n";
    for (int i = 0; i < 20; i++)
        req += "$1\r\n" + std::to_string(i % 10) + "\r\n";
    resp_str args[4];
    const char *err = nullptr;
    EXPECT_EQ(resp_split(req.data(), req.size(), args, 4, &err), 20);
    EXPECT_EQ(std::string(args[3].p, args[3].n), "3");
    resp_str word = {"GeT", 3};
    EXPECT_TRUE(resp_is(&word, "get"));
    EXPECT_FALSE(resp_is(&word, "ge"));
}

size_t http_frame_fn(const char *d, size_t n) {
    return http_frame(d, n);
}

int http_status(const std::string &req, http_req *r) {
    size_t hl = http_header_end(req.data(), req.size());
    if (hl == 0) return -1;
    return http_parse_header(req.data(), hl, r);
}

TEST(HttpParse, PipelinedRequestsWithBodiesWhereverTheStreamIsCut) {
    std::vector<std::string> want = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello\r\n\r\nxx",
        "\r\n",                                            // a stray line end between requests
        "GET /x HTTP/1.1\nHost: a\ncontent-length:0\n\n",  // bare LF line ends
        "HEAD / HTTP/1.0\r\n\r\n",
    };
    expect_split_independent(http_frame_fn, want);

    http_req r;
    ASSERT_EQ(http_status(want[1], &r), 0);
    EXPECT_EQ(std::string(r.method, r.method_len), "POST");
    EXPECT_EQ(std::string(r.target, r.target_len), "/form");
    EXPECT_EQ(r.content_length, 11u);
    EXPECT_EQ(r.header_len + r.content_length, want[1].size());
    ASSERT_EQ(http_status(want[3], &r), 0);
    EXPECT_EQ(std::string(r.target, r.target_len), "/x");
}

TEST(HttpParse, KeepAliveFollowsVersionAndConnectionHeader) {
    struct Case {
        std::string req;
        int keep;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nHost: a\r\nconnection: Upgrade, CLOSE\r\n\r\n", 0},
        {"GET / HTTP/1.0\r\n\r\n", 0},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1},
    };
    for (const auto &c : cases) {
        http_req r;
        ASSERT_EQ(http_status(c.req, &r), 0) << c.req;
        EXPECT_EQ(r.keep_alive, c.keep) << c.req;
    }
}

TEST(HttpParse, MalformedRequestsGetTheirStatus) {
    struct Case {
        std::string req;
        int status;
    } cases[] = {
        {"GARBAGE\r\n\r\n", 400},
        {"GET /\r\n\r\n", 400},
        {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n\r\n", 400},  // 1.1 without Host
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
        {"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 12x\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
    };
    for (const auto &c : cases) {
        http_req r;
        EXPECT_EQ(http_status(c.req, &r), c.status) << c.req;
        // The framer hands a bad header block over as it is, for the plugin to answer.
        EXPECT_EQ(http_frame(c.req.data(), c.req.size()), c.req.size()) << c.req;
    }
    // A header block that never ends is waited for up to 16 KiB, then handed over whole.
    std::string endless = "GET / HTTP/1.1\r\nX: " + std::string(HTTP_MAX_HEADER, 'a');
    EXPECT_EQ(http_frame(endless.data(), HTTP_MAX_HEADER - 1), 0u);
    EXPECT_EQ(http_frame(endless.data(), endless.size()), endless.size());
}

}  // namespace
