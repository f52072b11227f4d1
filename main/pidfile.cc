#include "main/pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

namespace asyncd {

namespace {

pid_t read_pid(int fd) {
    char buf[32] = "";
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return 0;
    buf[n] = '\0';
    long v = strtol(buf, nullptr, 10);
    return v > 0 ? pid_t(v) : 0;
}

}  // namespace

PidFile::~PidFile() {
    if (fd_ >= 0) close(fd_);
}

bool PidFile::lock(const std::string &path, std::string *err) {
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        *err = "pid_file " + path + ": " + strerror(errno);
        return false;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        pid_t other = read_pid(fd);
        close(fd);
        if (e == EWOULDBLOCK) {
            *err = "asyncd is already running (pid " + std::to_string(other) + ", pid_file " +
                   path + ")";
        } else {
            *err = "pid_file " + path + ": flock: " + strerror(e);
        }
        return false;
    }
    path_ = path;
    fd_ = fd;
    return true;
}

bool PidFile::write_pid(std::string *err) {
    std::string text = std::to_string(getpid()) + "\n";
    if (ftruncate(fd_, 0) != 0 ||
        pwrite(fd_, text.data(), text.size(), 0) != ssize_t(text.size())) {
        *err = "pid_file " + path_ + ": " + strerror(errno);
        return false;
    }
    return true;
}

void PidFile::release() {
    if (fd_ < 0) return;
    unlink(path_.c_str());  // while still locked: a new instance cannot have taken it
    close(fd_);
    fd_ = -1;
}

pid_t running_pid(const std::string &path, std::string *why) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *why = "no pid_file " + path + " (" + strerror(errno) + "): asyncd is not running";
        return 0;
    }
    pid_t pid = read_pid(fd);
    // A lock we can take is one nobody holds: the file was left by an asyncd that is gone.
    bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    if (!held || pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH)) {
        *why = "asyncd is not running (pid_file " + path + " is stale)";
        return 0;
    }
    return pid;
}

}  // namespace asyncd
