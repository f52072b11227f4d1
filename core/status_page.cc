// The status page (see status_page.h). Everything on it is drawn by the script at its end,
// from the /status.json document embedded in <script id="initial">, then from a fetch of
// /status.json a second: the figures, the rates (from two reads), five minutes of charts
// (inline SVG, from the document's history) and the tables.
#include "core/status_page.h"

namespace asyncd {

namespace {

// Up to the embedded document. The source stays ASCII: the page's own non-ASCII characters
// are entities here and \u escapes in the script.
const char kHead[] = R"PAGE(<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>asyncd status</title>
<style>
:root{--fg:#1f2328;--mut:#656d76;--bg:#fff;--card:#f6f8fa;--line:#d0d7de;--grid:#e6e9ed;
--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--mut:#8d96a0;--bg:#0d1117;
--card:#161b22;--line:#30363d;--grid:#262c33;--ok:#3fb950;--warn:#d29922;--bad:#f85149}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0 auto;max-width:1200px;padding:14px 16px 32px;color:var(--fg);background:var(--bg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 14px;margin-bottom:10px}
h1{font-size:20px;margin:0}
h2{font-size:15px;margin:22px 0 6px}
.meta{color:var(--mut)}
.meta b{color:var(--fg);font-weight:600;font-variant-numeric:tabular-nums}
#stale{position:sticky;top:0;z-index:1;margin:0 0 10px;padding:6px 10px;border-radius:6px;
background:#fff8c5;color:#7d4e00;border:1px solid #eed888;font-size:13px}
body.stale main{opacity:.7}
.rates{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:8px}
.rate{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:6px 12px}
.rate .v{display:block;font-size:22px;line-height:1.25;font-weight:600;font-variant-numeric:tabular-nums}
.rate .u{display:block;color:var(--mut);font-size:12px}
.rate .s{display:block;color:var(--mut);font-size:12px;min-height:1.4em}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:10px;margin-top:12px}
figure{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:8px 10px 6px;min-width:0}
figcaption{font-weight:600;display:flex;justify-content:space-between;gap:8px}
figcaption .cur{font-weight:400;color:var(--mut);font-variant-numeric:tabular-nums}
svg{display:block;width:100%;height:auto;overflow:visible}
svg text{fill:var(--mut);font-size:10px;font-family:inherit}
svg text.unit{font-weight:600}
svg .gl{stroke:var(--grid);stroke-width:1}
svg .ax{stroke:var(--line);stroke-width:1}
svg .ln{fill:none;stroke-width:1.6;stroke-linejoin:round;stroke-linecap:round}
.legend{display:flex;flex-wrap:wrap;gap:2px 12px;font-size:12px;color:var(--mut);min-height:1.2em}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;
vertical-align:-1px}
.wrap{overflow-x:auto;-webkit-overflow-scrolling:touch;border:1px solid var(--line);
border-radius:8px}
table{border-collapse:collapse;white-space:nowrap;font-variant-numeric:tabular-nums;min-width:100%}
th,td{padding:4px 8px;text-align:right;border-bottom:1px solid var(--line)}
tr:last-child td{border-bottom:0}
th{font-weight:600;font-size:12px;line-height:1.25;color:var(--mut);background:var(--card);
white-space:normal;vertical-align:bottom}
th:first-child,td:first-child{text-align:left}
th.l,td.l{text-align:left}
.dot{display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:6px}
.up{color:var(--ok)}.down{color:var(--bad)}.other{color:var(--warn)}
#conn-wrap{max-width:560px}
.muted{color:var(--mut)}
@media (max-width:720px){.charts{grid-template-columns:1fr}body{padding:10px 10px 24px}
th{white-space:nowrap}svg text{font-size:12px}}
</style></head>
<body>
<header><h1>asyncd</h1><span class="meta">up <b id="uptime">&ndash;</b> &middot;
<b id="connections">&ndash;</b> connections open &middot; <b id="reloads">&ndash;</b>
reloads<span id="node-box" hidden> &middot; node <b id="node"></b></span></span>
<span class="meta" id="asof"></span></header>
<div id="stale" hidden>not reachable since <span id="stale-since"></span></div>
<main>
<div class="rates">
<div class="rate"><span class="v" id="rate-packets-in">&ndash;</span><span class="u">packets/s in</span></div>
<div class="rate"><span class="v" id="rate-bytes-in">&ndash;</span><span class="u">B/s in</span><span class="s" id="rate-bytes-in-h"></span></div>
<div class="rate"><span class="v" id="rate-bytes-out">&ndash;</span><span class="u">B/s out</span><span class="s" id="rate-bytes-out-h"></span></div>
<div class="rate"><span class="v" id="rate-opened">&ndash;</span><span class="u">connections opened/s</span></div>
<div class="rate"><span class="v" id="rate-closed">&ndash;</span><span class="u">connections closed/s</span></div>
</div>
<div class="charts">
<figure><figcaption>Throughput <span class="cur" id="cur-throughput"></span></figcaption>
<svg id="chart-throughput" viewBox="0 0 400 170" role="img" aria-label="packets per second in, last five minutes"></svg>
<div class="legend" id="legend-throughput"></div></figure>
<figure><figcaption>Open connections <span class="cur" id="cur-connections"></span></figcaption>
<svg id="chart-connections" viewBox="0 0 400 170" role="img" aria-label="open connections, last five minutes"></svg>
<div class="legend" id="legend-connections"></div></figure>
<figure><figcaption>Ring depth per worker <span class="cur" id="cur-ring"></span></figcaption>
<svg id="chart-ring" viewBox="0 0 400 170" role="img" aria-label="ring depth per worker, last five minutes"></svg>
<div class="legend" id="legend-ring"></div></figure>
<figure><figcaption>Handler p99 per worker <span class="cur" id="cur-p99"></span></figcaption>
<svg id="chart-p99" viewBox="0 0 400 170" role="img" aria-label="handler p99 per worker, last five minutes"></svg>
<div class="legend" id="legend-p99"></div></figure>
</div>
<h2>Workers</h2>
<div class="wrap"><table id="workers"><thead><tr><th>worker</th><th>pid</th><th>packets</th>
<th>packets/s</th><th>restarts</th><th>ring depth</th><th>ring peak</th><th>p50 &micro;s</th>
<th>p99 &micro;s</th><th>ring wait p99 &micro;s</th><th class="l">other callbacks, p99 &micro;s</th>
</tr></thead><tbody></tbody></table></div>
<section id="cluster" hidden><h2>Cluster</h2>
<div class="wrap"><table id="nodes"><thead><tr><th>node</th><th class="l">state</th>
<th>RTT &micro;s</th><th>queued</th><th>pending out</th><th>pending in</th><th>calls out</th>
<th>calls in</th><th class="l">errors</th></tr></thead><tbody></tbody></table></div></section>
<h2>Connection counters</h2>
<div class="wrap" id="conn-wrap"><table id="conn"><tbody></tbody></table></div>
</main>
<script id="initial" type="application/json">)PAGE";

// After the embedded document: the script that draws it.
const char kTail[] = R"PAGE(</script>
<script>
(function () {
'use strict';
var DASH = '\u2013', MINUS = '\u2212', MU = '\u00b5';
var KINDS = ['packet', 'node', 'timer', 'events', 'call_done', 'link'];
var PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777',
               '#65a30d', '#64748b', '#ea580c'];
var W = 400, H = 170, PL = 42, PR = 14, PT = 22, PB = 20, WIN = 300000;
// prev: the read the rates are taken against, the newest at least MINGAP before cur (with
// one fetch a second, the one before it).
var prev = null, cur = null, reads = [], staleSince = null, MINGAP = 500;
var SVGNS = document.getElementById('chart-throughput').namespaceURI;  // no URL in the page

function $(id) { return document.getElementById(id); }
function obj(v) { return v && typeof v === 'object' && !Array.isArray(v) ? v : {}; }
function arr(v) { return Array.isArray(v) ? v : []; }
function n(v) { return typeof v === 'number' && isFinite(v) ? v : NaN; }
function z(v) { v = n(v); return isNaN(v) ? 0 : v; }
function int(v) { v = n(v); return isNaN(v) ? DASH : String(Math.round(v)); }
function us(ns) { ns = n(ns); return isNaN(ns) ? DASH : (ns / 1000).toFixed(1); }
function color(i) { return i < PALETTE.length ? PALETTE[i] : 'hsl(' + (i * 137.5) % 360 + ',60%,45%)'; }
function pad(v) { return (v < 10 ? '0' : '') + v; }
function hms(ms) { var d = new Date(ms); return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()); }
function txt(id, s) { var e = $(id); if (e && e.textContent !== s) e.textContent = s; }
function el(tag, attrs, kids) {
  var e = document.createElement(tag);
  for (var k in attrs || {}) if (attrs[k] != null) e.setAttribute(k, attrs[k]);
  (kids || []).forEach(function (c) {
    if (c != null) e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  });
  return e;
}
function sv(tag, attrs, text) {
  var e = document.createElementNS(SVGNS, tag);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (text != null) e.textContent = text;
  return e;
}
function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
function dur(s) {
  s = Math.floor(z(s));
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + s % 60 + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor(s % 3600 / 60) + 'm';
  return Math.floor(s / 86400) + 'd ' + Math.floor(s % 86400 / 3600) + 'h';
}
function bytes(v) {
  var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
  v = n(v);
  if (isNaN(v)) return DASH;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(v < 10 ? 1 : 0) : v) + ' ' + u[i];
}
function label(k) {
  var s = k.replace(/^asyncd_/, ''), m = s.match(/^(.*)_total_(.+)$/);
  s = m ? m[1] + ' (' + m[2] + ')' : s.replace(/_total$/, '');
  return s.replace(/_/g, ' ');
}
function byIndex(list) {
  var m = {};
  arr(list).forEach(function (w) { if (w && n(w.index) >= 0) m[w.index] = w; });
  return m;
}

// Rates between two reads of the counters (a older than b), per second; null when unknown.
function point(t, p, bi, bo, acc, open) {
  return {t: n(t), p: n(p), bi: n(bi), bo: n(bo), acc: n(acc), cl: n(acc) - n(open)};
}
function fromDoc(j) {
  var c = obj(j.conn);
  return point(j._t, c.asyncd_packets_in_total, c.asyncd_bytes_in_total,
               c.asyncd_bytes_out_total, c.asyncd_connections_accepted_total, j.connections);
}
function fromSample(s) {
  s = obj(s);
  return point(s.unix_ms, s.packets_in, s.bytes_in, s.bytes_out, s.accepted, s.connections);
}
function rate(a, b, k, clamp) {
  var dt = (b.t - a.t) / 1000, d = b[k] - a[k];
  if (!(dt > 0) || isNaN(d)) return NaN;
  if (d < 0) return clamp ? 0 : NaN;  // a counter that went back: unknown until the next read
  return d / dt;
}

function header(j) {
  var e = $('uptime');
  txt('uptime', isNaN(n(j.uptime_s)) ? DASH : dur(j.uptime_s));
  e.title = isNaN(n(j.uptime_s)) ? '' : j.uptime_s + ' s';
  txt('connections', int(j.connections));
  txt('reloads', int(j.reloads));
  var named = typeof j.node === 'string' && j.node !== '';
  $('node-box').hidden = !named;
  txt('node', named ? j.node : '');
  txt('asof', isNaN(n(j.unix_ms)) ? '' : 'at ' + hms(j.unix_ms));
}

function rates(j) {
  var a = null, b = null, ss = arr(obj(j.history).samples);
  if (prev) { a = fromDoc(prev); b = fromDoc(j); }
  else if (ss.length >= 2) { a = fromSample(ss[ss.length - 2]); b = fromSample(ss[ss.length - 1]); }
  function show(id, k, clamp, human) {
    var v = a ? rate(a, b, k, clamp) : NaN;
    txt(id, int(v));
    if (human) txt(id + '-h', !isNaN(v) && v >= 10240 ? '\u2248 ' + bytes(v) + '/s' : '');
  }
  show('rate-packets-in', 'p');
  show('rate-bytes-in', 'bi', false, true);
  show('rate-bytes-out', 'bo', false, true);
  show('rate-opened', 'acc');
  show('rate-closed', 'cl', true);
}

// The y axis' top: a round number of the unit that fits max (1, 2 or 5 times a power of ten).
function scaleFor(max, base, units) {
  var s = 1, i = 0;
  while (max >= base && i < units.length - 1) { max /= base; s *= base; i++; }
  var top = 1;
  if (max > 0) {
    var e = Math.pow(10, Math.floor(Math.log(max) / Math.LN10)), f = max / e;
    top = (f <= 1.0001 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * e;
  }
  if (top >= base && i < units.length - 1) { top /= base; s *= base; i++; }
  return {top: top * s, s: s, unit: units[i]};
}
function fmt(v) { return String(+v.toFixed(2)); }

// One chart: series [{key, color, pts: [[unix_ms, value]]}], the newest sample at the right.
function chart(id, series, now, gap, base, units) {
  var svg = $(id);
  clear(svg);
  var x0 = PL, x1 = W - PR, y0 = H - PB, y1 = PT, from = now - WIN, max = 0, any = false;
  series.forEach(function (s) {
    s.pts = s.pts.filter(function (p) { return p[0] >= from && p[0] <= now; });
    s.pts.forEach(function (p) { if (!isNaN(p[1])) { any = true; if (p[1] > max) max = p[1]; } });
  });
  var sc = scaleFor(max, base, units);
  function X(t) { return x0 + (t - from) / WIN * (x1 - x0); }
  function Y(v) { return y0 - v / sc.top * (y0 - y1); }
  for (var g = 0; g <= 2; g++) {
    var y = Y(sc.top * g / 2);
    svg.appendChild(sv('line', {x1: x0, x2: x1, y1: y, y2: y, 'class': g ? 'gl' : 'ax'}));
    svg.appendChild(sv('text', {x: x0 - 5, y: y + 3.5, 'text-anchor': 'end'}, fmt(sc.top * g / 2 / sc.s)));
  }
  svg.appendChild(sv('text', {x: 2, y: 10, 'class': 'unit'}, sc.unit));
  for (var m = 0; m <= 5; m++) {
    var x = X(now - m * 60000);
    if (m > 0 && m < 5) svg.appendChild(sv('line', {x1: x, x2: x, y1: y1, y2: y0, 'class': 'gl'}));
    svg.appendChild(sv('text', {x: x, y: H - 5, 'text-anchor': m === 5 ? 'start' : m === 0 ? 'end' : 'middle'},
                       m === 0 ? 'now' : m === 5 ? MINUS + '5 min' : MINUS + m));
  }
  svg.appendChild(sv('line', {x1: x0, x2: x0, y1: y1, y2: y0, 'class': 'ax'}));
  if (!any) {
    svg.appendChild(sv('text', {x: (x0 + x1) / 2, y: (y0 + y1) / 2, 'text-anchor': 'middle'},
                       'collecting samples\u2026'));
    return;
  }
  series.forEach(function (s) {
    var d = '', last = null, run = 0;
    s.pts.forEach(function (p) {
      if (isNaN(p[1])) { last = null; return; }
      var px = X(p[0]).toFixed(1), py = Y(p[1]).toFixed(1);
      var join = last !== null && p[0] - last <= gap;
      if (!join && run === 1) d += 'h0.01';  // a lone point still shows as a dot
      d += (join ? 'L' : 'M') + px + ' ' + py;
      run = join ? run + 1 : 1;
      last = p[0];
    });
    if (run === 1) d += 'h0.01';
    if (d) svg.appendChild(sv('path', {d: d, 'class': 'ln', stroke: s.color}));
  });
}

function legend(id, series) {
  var e = $(id);
  clear(e);
  series.forEach(function (s) {
    e.appendChild(el('span', {}, [el('i', {style: 'background:' + s.color}), 'worker ' + s.key]));
  });
}

function charts(j) {
  var h = obj(j.history), ss = arr(h.samples), iv = n(h.interval_ms) > 0 ? h.interval_ms : 1000;
  var gap = iv * 2.5, tp = [], cn = [], ring = {}, p99 = {};
  var now = ss.length ? n(obj(ss[ss.length - 1]).unix_ms) : n(j.unix_ms);
  if (isNaN(now)) now = Date.now();
  for (var i = 0; i < ss.length; i++) {
    var s = obj(ss[i]), t = n(s.unix_ms);
    if (isNaN(t)) continue;
    cn.push([t, n(s.connections)]);
    if (i > 0) tp.push([t, rate(fromSample(ss[i - 1]), fromSample(s), 'p')]);
    arr(s.workers).forEach(function (w) {
      var k = n(obj(w).index);
      if (isNaN(k)) return;
      (ring[k] = ring[k] || []).push([t, n(w.ring_depth)]);
      (p99[k] = p99[k] || []).push([t, n(w.p99_ns) / 1000]);
    });
  }
  function perWorker(m) {
    return Object.keys(m).map(Number).sort(function (a, b) { return a - b; }).map(function (k) {
      return {key: k, color: color(k), pts: m[k]};
    });
  }
  function lastOf(pts) {
    for (var q = pts.length - 1; q >= 0; q--) if (!isNaN(pts[q][1])) return pts[q][1];
    return NaN;
  }
  var rs = perWorker(ring), ps = perWorker(p99), dec = ['', 'k', 'M', 'G'];
  txt('cur-throughput', isNaN(lastOf(tp)) ? '' : int(lastOf(tp)) + ' packets/s');
  txt('cur-connections', isNaN(lastOf(cn)) ? '' : int(lastOf(cn)) + ' open');
  var rmax = NaN, pmax = NaN;
  rs.forEach(function (s) { var v = lastOf(s.pts); if (!(v <= rmax)) rmax = v; });
  ps.forEach(function (s) { var v = lastOf(s.pts); if (!(v <= pmax)) pmax = v; });
  txt('cur-ring', isNaN(rmax) ? '' : 'deepest ' + bytes(rmax));
  txt('cur-p99', isNaN(pmax) ? '' : 'worst ' + pmax.toFixed(1) + ' ' + MU + 's');
  chart('chart-throughput', [{color: PALETTE[0], pts: tp}], now, gap, 1000,
        dec.map(function (u) { return u + (u ? ' ' : '') + 'pkt/s'; }));
  chart('chart-connections', [{color: PALETTE[2], pts: cn}], now, gap, 1000, dec);
  chart('chart-ring', rs, now, gap, 1024, ['B', 'KiB', 'MiB', 'GiB']);
  chart('chart-p99', ps, now, gap, 1000, [MU + 's', 'ms', 's']);
  legend('legend-ring', rs);
  legend('legend-p99', ps);
}

function workers(j) {
  var body = $('workers').tBodies[0], was = prev ? byIndex(prev.workers) : {};
  var dt = prev ? (j._t - prev._t) / 1000 : NaN;
  var rows = arr(j.workers).map(function (w) {
    w = obj(w);
    var i = w.index, hd = obj(w.handler), pk = obj(hd.packet), old = was[i], pps = NaN;
    if (old && dt > 0 && z(w.packets) >= z(old.packets)) pps = (z(w.packets) - z(old.packets)) / dt;
    var others = [], tips = [];
    KINDS.slice(1).forEach(function (k) {
      var s = obj(hd[k]);
      if (z(s.count) > 0) {
        others.push(k + ' ' + us(s.p99_ns));
        tips.push(k + ': ' + int(s.count) + ' timed, p50 ' + us(s.p50_ns) + ', p99 ' + us(s.p99_ns) +
                  ', max ' + us(s.max_ns) + ' ' + MU + 's');
      }
    });
    var down = !(z(w.pid) > 0);
    return el('tr', {}, [
      el('td', {}, [el('span', {'class': 'dot', style: 'background:' + color(z(i))}), int(i)]),
      el('td', down ? {'class': 'down', title: 'down'} : {}, [down ? 'down' : int(w.pid)]),
      el('td', {id: 'w' + i + '-packets'}, [int(w.packets)]),
      el('td', {id: 'w' + i + '-rate'}, [int(pps)]),
      el('td', {}, [int(w.restarts)]),
      el('td', {title: int(w.ring_depth) + ' B'}, [bytes(w.ring_depth)]),
      el('td', {title: int(w.ring_peak) + ' B'}, [bytes(w.ring_peak)]),
      el('td', {id: 'w' + i + '-p50'}, [us(pk.p50_ns)]),
      el('td', {id: 'w' + i + '-p99', title: 'max ' + us(pk.max_ns) + ' ' + MU + 's'}, [us(pk.p99_ns)]),
      el('td', {id: 'w' + i + '-wait-p99'}, [us(obj(w.ring_wait).p99_ns)]),
      el('td', {'class': 'l' + (others.length ? '' : ' muted'), title: tips.join('\n')},
         [others.length ? others.join(', ') : DASH])
    ]);
  });
  if (!rows.length) rows = [el('tr', {}, [el('td', {colspan: 11, 'class': 'muted'}, ['no workers'])])];
  clear(body);
  rows.forEach(function (r) { body.appendChild(r); });
}

function nodes(j) {
  var list = arr(j.nodes), body = $('nodes').tBodies[0];
  $('cluster').hidden = !list.length;
  clear(body);
  list.forEach(function (nd) {
    nd = obj(nd);
    var name = String(nd.name), st = String(nd.state || DASH), c = obj(nd.completions), errs = [];
    Object.keys(c).forEach(function (k) { if (k !== 'ok' && z(c[k]) > 0) errs.push(k + ' ' + int(c[k])); });
    body.appendChild(el('tr', {}, [
      el('td', {}, [name]),
      el('td', {id: 'n-' + name + '-state', 'class': 'l ' + (st === 'up' ? 'up' : st === 'down' ? 'down' : 'other')}, [st]),
      el('td', {}, [int(nd.rtt_us)]),
      el('td', {}, [int(nd.queued)]),
      el('td', {}, [int(nd.pending_out)]),
      el('td', {}, [int(nd.pending_in)]),
      el('td', {id: 'n-' + name + '-calls-out'}, [int(nd.calls_out)]),
      el('td', {}, [int(nd.calls_in)]),
      el('td', {'class': 'l' + (errs.length ? ' down' : ' muted')}, [errs.length ? errs.join(', ') : DASH])
    ]));
  });
}

function counters(j) {
  var c = obj(j.conn), body = $('conn').tBodies[0];
  clear(body);
  Object.keys(c).forEach(function (k) {
    body.appendChild(el('tr', {}, [el('td', {title: k}, [label(k)]),
                                   el('td', {'data-metric': k}, [int(c[k])])]));
  });
}

function render(j) {
  [header, rates, charts, workers, nodes, counters].forEach(function (f) {
    try { f(j); } catch (e) { if (window.console) console.error(e); }
  });
}

function stale(on) {
  if (on && staleSince === null) { staleSince = Date.now(); txt('stale-since', hms(staleSince)); }
  if (!on) staleSince = null;
  $('stale').hidden = !on;
  document.body.className = on ? 'stale' : '';
}

function received(j) {
  j = obj(j);
  j._t = isNaN(n(j.unix_ms)) ? Date.now() : j.unix_ms;
  stale(false);
  if (cur && j._t === cur._t) return;  // the same read again: keep the rates of the last two
  if (cur && j._t < cur._t) reads = [];  // the clock went back: start the rates again
  else if (cur) reads.push(cur);
  if (reads.length > 5) reads.shift();
  prev = null;
  for (var i = reads.length - 1; i >= 0 && !prev; i--) if (j._t - reads[i]._t >= MINGAP) prev = reads[i];
  cur = j;
  render(cur);
}

function poll() {
  var ctl = window.AbortController ? new AbortController() : null;
  var timer = ctl ? setTimeout(function () { ctl.abort(); }, 5000) : 0;
  fetch('/status.json', {cache: 'no-store', signal: ctl ? ctl.signal : undefined})
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
      .then(received, function () { stale(true); })
      .catch(function (e) { if (window.console) console.error(e); })
      .then(function () { clearTimeout(timer); setTimeout(poll, 1000); });
}

var first = null;
try { first = JSON.parse($('initial').textContent); } catch (e) { first = null; }
if (first && typeof first === 'object') received(first); else { render({}); stale(true); }
setTimeout(poll, 1000);
})();
</script>
</body></html>
)PAGE";

}  // namespace

std::string format_status_page(const std::string &json) {
    std::string out;
    out.reserve(sizeof kHead + json.size() + json.size() / 16 + sizeof kTail);
    out += kHead;
    // Nothing in the document may end the script element: `</` becomes `<\/`, and `<!` (which
    // could open a comment the parser would look for `</script>` inside) `\u003c!`. Outside
    // strings JSON has no `<`, inside them both are escapes that JSON.parse reads back.
    for (size_t i = 0; i < json.size(); i++) {
        char c = json[i], next = i + 1 < json.size() ? json[i + 1] : '\0';
        if (c == '<' && next == '/') {
            out += "<\\/";
            i++;
        } else if (c == '<' && next == '!') {
            out += "\\u003c";
        } else {
            out += c;
        }
    }
    out += kTail;
    return out;
}

}  // namespace asyncd
