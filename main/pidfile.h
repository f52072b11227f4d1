// The pid file: created and locked (flock) by the running supervisor, so that a second
// instance with the same pid_file refuses to start, and `asyncd -s` finds the first.
#pragma once

#include <sys/types.h>

#include <string>

namespace asyncd {

class PidFile {
  public:
    PidFile() = default;
    ~PidFile();
    PidFile(const PidFile &) = delete;
    PidFile &operator=(const PidFile &) = delete;

    // Opens and locks path. False with *err: who holds it ("asyncd is already running
    // (pid N, pid_file P)"), or the call that failed.
    bool lock(const std::string &path, std::string *err);
    // Writes this process's pid into it (after daemonizing, which changes the pid).
    bool write_pid(std::string *err);
    // Removes the file and drops the lock (at a clean exit).
    void release();
    int fd() const { return fd_; }

  private:
    std::string path_;
    int fd_ = -1;
};

// The pid of the asyncd that holds path's lock. 0 with *why when the file is missing, not
// locked (left by an asyncd that is gone) or names no live process.
pid_t running_pid(const std::string &path, std::string *why);

}  // namespace asyncd
