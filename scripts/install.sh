#!/bin/sh
# Installs asyncd, or removes what it installed. `make install` and `make uninstall` call
# it after building; the install test (test/blackbox/install_test.cc) calls it on the built
# files directly. Run it from anywhere: paths are relative to the repository root.
#
#   sh scripts/install.sh install|uninstall [NAME=VALUE ...]
#
#   PREFIX      /usr/local          where everything goes
#   DESTDIR     (empty)             staging root for packagers: files go to DESTDIR/PREFIX/...
#                                   but name PREFIX/... inside (the unit, the configs)
#   SYSCONFDIR  PREFIX/etc          configs in SYSCONFDIR/asyncd, logrotate.d/asyncd beside it
#   UNITDIR     PREFIX/lib/systemd/system
#   LOGDIR      /var/log/asyncd     log_file of the installed configs
#   RUNDIR      /run/asyncd         pid_file of the installed configs
#   ASYNCD      build/asyncd        the binary to install
#   PLUGIN_DIR  build/plugins       where the built example plugins are
#
# ASYNCD, PLUGIN_DIR and DESTDIR may be relative to the current folder; the defaults are in
# the repository's build/.
#
# A config that is already installed and differs from the sample (an operator edited it) is
# kept by install and by uninstall; everything else is overwritten or removed.
set -eu

usage() {
    echo "usage: sh scripts/install.sh install|uninstall [PREFIX=DIR] [DESTDIR=DIR] ..." >&2
    exit 2
}

[ $# -ge 1 ] || usage
action=$1
shift
case $action in install | uninstall) ;; *) usage ;; esac

PREFIX=/usr/local DESTDIR='' SYSCONFDIR='' UNITDIR='' LOGDIR=/var/log/asyncd RUNDIR=/run/asyncd
ASYNCD='' PLUGIN_DIR='' BENCH=''
for arg in "$@"; do
    case $arg in
        PREFIX=*) PREFIX=${arg#*=} ;;
        DESTDIR=*) DESTDIR=${arg#*=} ;;
        SYSCONFDIR=*) SYSCONFDIR=${arg#*=} ;;
        UNITDIR=*) UNITDIR=${arg#*=} ;;
        LOGDIR=*) LOGDIR=${arg#*=} ;;
        RUNDIR=*) RUNDIR=${arg#*=} ;;
        ASYNCD=*) ASYNCD=${arg#*=} ;;
        PLUGIN_DIR=*) PLUGIN_DIR=${arg#*=} ;;
        BENCH=*) BENCH=${arg#*=} ;;
        *) echo "install.sh: unknown setting '$arg'" >&2 && usage ;;
    esac
done
[ -n "$SYSCONFDIR" ] || SYSCONFDIR=$PREFIX/etc
[ -n "$UNITDIR" ] || UNITDIR=$PREFIX/lib/systemd/system

# The paths asyncd will see at run time, which the unit, the configs and the logrotate
# snippet name. They end up in config lines and ExecStart=, which split on blanks.
for dir in "$PREFIX" "$SYSCONFDIR" "$UNITDIR" "$LOGDIR" "$RUNDIR"; do
    case $dir in
        /*) ;;
        *) echo "install.sh: '$dir' is not an absolute path" >&2 && exit 2 ;;
    esac
    case $dir in
        *[[:space:]]*)
            echo "install.sh: '$dir' contains a blank, which configs and units cannot hold" >&2
            exit 2
            ;;
    esac
done
BINDIR=$PREFIX/bin
INCLUDEDIR=$PREFIX/include/asyncd
PKGCONFIGDIR=$PREFIX/lib/pkgconfig
LIBDIR=$PREFIX/lib/asyncd
PLUGINDIR=$LIBDIR/plugins
DATADIR=$PREFIX/share/asyncd
EXAMPLEDIR=$DATADIR/examples
CONFDIR=$SYSCONFDIR/asyncd
LOGROTATEDIR=$SYSCONFDIR/logrotate.d

# Relative paths given are the caller's; from here on the current folder is the repository
# root.
here=$(pwd)
abs() { case $1 in /*) echo "$1" ;; *) echo "$here/$1" ;; esac; }
[ -z "$DESTDIR" ] || DESTDIR=$(abs "$DESTDIR")
[ -z "$ASYNCD" ] || ASYNCD=$(abs "$ASYNCD")
[ -z "$PLUGIN_DIR" ] || PLUGIN_DIR=$(abs "$PLUGIN_DIR")
[ -z "$BENCH" ] || BENCH=$(abs "$BENCH")
cd "$(dirname "$0")/.."
[ -n "$ASYNCD" ] || ASYNCD=$(pwd)/build/asyncd
[ -n "$PLUGIN_DIR" ] || PLUGIN_DIR=$(pwd)/build/plugins
[ -n "$BENCH" ] || BENCH=$(pwd)/build/asyncd-bench
CONFIGS="asyncd resp http"
EXAMPLES=$(for f in plugin_api/examples/*; do basename "$f"; done)
PLUGINS=$(for f in plugin_api/examples/*.c; do basename "$f" .c; done | sed 's/$/.so/')

# Escapes a value for the right-hand side of a sed s|...|...| command.
esc() { printf '%s\n' "$1" | sed 's/[\\|&]/\\&/g'; }

# The substitutions that turn a file of etc/ into its installed form.
subst() {
    sed -e "s|@BINDIR@|$(esc "$BINDIR")|g" \
        -e "s|@SYSCONFDIR@|$(esc "$SYSCONFDIR")|g" \
        -e "s|@CONFDIR@|$(esc "$CONFDIR")|g" \
        -e "s|@PLUGINDIR@|$(esc "$PLUGINDIR")|g" \
        -e "s|@LOGDIR@|$(esc "$LOGDIR")|g" \
        -e "s|@RUNDIR@|$(esc "$RUNDIR")|g" "$@"
}

# The unit: systemd makes LOGDIR and RUNDIR itself when they are under /var/log and /run
# (LogsDirectory=, RuntimeDirectory=); anywhere else they must exist, and those lines go.
unit() {
    logs=${LOGDIR#/var/log/}
    [ "$logs" != "$LOGDIR" ] && [ -n "$logs" ] || logs=''
    runtime=${RUNDIR#/run/}
    [ "$runtime" != "$RUNDIR" ] && [ -n "$runtime" ] || runtime=''
    subst etc/asyncd.service |
        sed -e "s|@LOGS_DIRECTORY@|$(esc "$logs")|" \
            -e "s|@RUNTIME_DIRECTORY@|$(esc "$runtime")|" \
            -e '/^LogsDirectory=$/d' -e '/^RuntimeDirectory=$/d'
}

# An installed config, from etc/NAME.conf: the plugin by its installed absolute path, the
# log in LOGDIR/NAME.log, the pid file in RUNDIR/NAME.pid (so that `asyncd -s` works).
config() {
    name=$1
    printf '# Installed by "make install" from etc/%s.conf, with plugin, log_file and\n' "$name"
    printf '# pid_file naming the installed paths.\n'
    sed -e "s|^\\(plugin[[:space:]]*\\)\\(\\.\\./\\)*build/plugins/|\\1$(esc "$PLUGINDIR")/|" \
        -e "s|^\\(log_file[[:space:]]*\\).*|\\1$(esc "$LOGDIR/$name.log")|" \
        -e "s|^\\(pid_file[[:space:]]*\\).*|\\1$(esc "$RUNDIR/$name.pid")|" \
        -e "s|build/asyncd -c etc/|$(esc "$BINDIR")/asyncd -c $(esc "$CONFDIR")/|g" \
        -e "s|what .make run. starts|what the systemd unit asyncd.service runs|" \
        -e "s|; paths are relative to this file's folder\\.|.|" \
        "etc/$name.conf"
    grep -q '^pid_file' "etc/$name.conf" || printf 'pid_file    %s\n' "$RUNDIR/$name.pid"
    grep -q '^log_file' "etc/$name.conf" || printf 'log_file    %s\n' "$LOGDIR/$name.log"
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/asyncd-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [ "$action" = install ]; then
    missing=''
    for f in "$ASYNCD" "$BENCH" $(for p in $PLUGINS; do echo "$PLUGIN_DIR/$p"; done); do
        [ -f "$f" ] || missing="$missing $f"
    done
    if [ -n "$missing" ]; then
        echo "install.sh: not built:$missing (run make first, or make install)" >&2
        exit 1
    fi
    set -x
    install -D -m 0755 "$ASYNCD" "$DESTDIR$BINDIR/asyncd"
    install -D -m 0755 "$BENCH" "$DESTDIR$BINDIR/asyncd-bench"
    install -D -m 0644 plugin_api/asyncd_plugin.h "$DESTDIR$INCLUDEDIR/asyncd_plugin.h"
    { set +x; } 2>/dev/null
    # The ZooKeeper discovery module, where it was built (libzookeeper-mt-dev installed).
    zk_module=$(dirname "$ASYNCD")/asyncd_zk.so
    if [ -f "$zk_module" ]; then
        set -x
        install -D -m 0644 "$zk_module" "$DESTDIR$LIBDIR/asyncd_zk.so"
        { set +x; } 2>/dev/null
    fi
    # pkg-config's description, so that a plugin builds as with any other C library:
    #   cc $(pkg-config --cflags asyncd) -std=c99 -O2 -fPIC -shared hello.c -o hello.so
    abi=$(sed -n 's/^#define ASYNCD_ABI_VERSION \([0-9]*\).*/\1/p' plugin_api/asyncd_plugin.h)
    printf '%s\n' "prefix=$PREFIX" 'includedir=${prefix}/include' '' 'Name: asyncd' \
        'Description: the asyncd plugin API (#include <asyncd/asyncd_plugin.h>)' \
        "Version: $abi" 'Cflags: -I${includedir}' >"$tmp/asyncd.pc"
    set -x
    install -D -m 0644 "$tmp/asyncd.pc" "$DESTDIR$PKGCONFIGDIR/asyncd.pc"
    for p in $PLUGINS; do
        install -D -m 0644 "$PLUGIN_DIR/$p" "$DESTDIR$PLUGINDIR/$p"
    done
    { set +x; } 2>/dev/null
    # The example sources include what they need by repository paths; installed, they take
    # the header from PREFIX/include and their parsers from beside them:
    #   cc -std=c99 -O2 -fPIC -shared -I PREFIX/include PREFIX/share/asyncd/examples/echo.c
    for e in $EXAMPLES; do
        sed -e 's|^#include "plugin_api/asyncd_plugin.h"|#include <asyncd/asyncd_plugin.h>|' \
            -e 's|^#include "plugin_api/examples/|#include "|' "plugin_api/examples/$e" >"$tmp/$e"
        (set -x && install -D -m 0644 "$tmp/$e" "$DESTDIR$EXAMPLEDIR/$e")
    done
    for c in $CONFIGS; do
        config "$c" >"$tmp/$c.conf"
        dest=$DESTDIR$CONFDIR/$c.conf
        if [ -f "$dest" ] && ! cmp -s "$tmp/$c.conf" "$dest"; then
            echo "install.sh: keeping $dest, which differs from the sample"
        else
            (set -x && install -D -m 0644 "$tmp/$c.conf" "$dest")
        fi
    done
    unit >"$tmp/asyncd.service"
    subst etc/asyncd.logrotate >"$tmp/asyncd.logrotate"
    set -x
    install -D -m 0644 "$tmp/asyncd.service" "$DESTDIR$UNITDIR/asyncd.service"
    install -D -m 0644 "$tmp/asyncd.logrotate" "$DESTDIR$LOGROTATEDIR/asyncd"
    { set +x; } 2>/dev/null
    exit 0
fi

# uninstall: exactly the files install writes, then the folders of asyncd's own that are
# left empty (never bin/, lib/systemd/system/ and the like).
rm_file() {
    [ -e "$1" ] || [ -L "$1" ] || return 0
    echo "rm -f $1"
    rm -f "$1"
}
rm_file "$DESTDIR$BINDIR/asyncd"
rm_file "$DESTDIR$BINDIR/asyncd-bench"
rm_file "$DESTDIR$LIBDIR/asyncd_zk.so"
rm_file "$DESTDIR$INCLUDEDIR/asyncd_plugin.h"
rm_file "$DESTDIR$PKGCONFIGDIR/asyncd.pc"
for p in $PLUGINS; do rm_file "$DESTDIR$PLUGINDIR/$p"; done
for e in $EXAMPLES; do rm_file "$DESTDIR$EXAMPLEDIR/$e"; done
for c in $CONFIGS; do
    dest=$DESTDIR$CONFDIR/$c.conf
    config "$c" >"$tmp/$c.conf"
    if [ -f "$dest" ] && ! cmp -s "$tmp/$c.conf" "$dest"; then
        echo "install.sh: keeping $dest, which was changed after install"
    else
        rm_file "$dest"
    fi
done
rm_file "$DESTDIR$UNITDIR/asyncd.service"
rm_file "$DESTDIR$LOGROTATEDIR/asyncd"
for d in "$INCLUDEDIR" "$PLUGINDIR" "$LIBDIR" "$EXAMPLEDIR" "$DATADIR" "$CONFDIR"; do
    if [ -d "$DESTDIR$d" ] && rmdir "$DESTDIR$d" 2>/dev/null; then echo "rmdir $DESTDIR$d"; fi
done
exit 0
