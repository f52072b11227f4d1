// What ps shows: the command line is rewritten in place, as nginx does ("asyncd: work 0"),
// and the thread name set with prctl ("asyncd-work0").
#pragma once

namespace asyncd {

// Call once at the start of main, before anything reads environ: moves the environment out
// of the way so the whole argv/environ area can hold a title.
void proctitle_init(int argc, char **argv);

// Sets the command line to `title` and the prctl name to `name` (15 characters at most).
void proctitle_set(const char *title, const char *name);

}  // namespace asyncd
