// tcplab film: shows a run's trace at the viewer's position. The data (film-data) is made by
// controller/film/html.py from the trace; this script only places it in time.
// Position: `cur`, the index of the last moment that has happened (-1 before the first), and `now`,
// the trace time (s). Everything with a moment (packets, states, console lines, steps) is shown up to
// the current moment's record; netstat panes are the backdrop and follow `now`, timers counting down.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("film-data").textContent);
  const M = D.moments;
  const HOSTS = D.hosts;
  const ROLE = D.roles;
  const SLOW_MIN_GAP_S = D.slow_min_s;  // slow motion: every gap between moments lasts at least this long
  const LONG_GAP_S = D.long_gap_s;  // the long-gap rule (controller/film/gaps.py): the scrubber draws longer
                                    // quiet stretches (TIME_WAIT) this long
  const SPEEDS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 20];
  const $ = (id) => document.getElementById(id);
  const fmt = (t) => t.toFixed(3);

  let cur = -1, now = 0, playing = false, speed = 1, slow = false, filmPos = 0, lastTick = null, shown = null;
  let visiblePackets = 0;  // rows 0 .. visiblePackets-1 are shown (packets are in record order)
  const consoleShown = {};

  // ---- time axes: piecewise linear maps from trace time to an axis where each gap is reshaped ----
  const knotTimes = Array.from(new Set([0].concat(M.map((m) => m.t), [D.t_end]))).sort((a, b) => a - b);
  function axis(gap) {
    const f = [0];
    for (let i = 1; i < knotTimes.length; i++) f.push(f[i - 1] + gap(knotTimes[i] - knotTimes[i - 1]));
    return f;
  }
  function interp(xs, ys, x) {
    if (x <= xs[0]) return ys[0];
    if (x >= xs[xs.length - 1]) return ys[ys.length - 1];
    let lo = 0, hi = xs.length - 1;
    while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (xs[mid] <= x) lo = mid; else hi = mid; }
    const span = xs[hi] - xs[lo];
    return span ? ys[lo] + (ys[hi] - ys[lo]) * (x - xs[lo]) / span : ys[lo];
  }
  const scrubAxis = axis((g) => (g > LONG_GAP_S ? LONG_GAP_S : g));
  // Playing runs along knots, one per moment (plus the start and the end), so moments at one time
  // each get a slot of their own in slow motion; knot k >= 1 is moment k - 1.
  const playT = [0].concat(M.map((m) => m.t), [D.t_end]);
  function playAxis() {
    const f = [0];
    for (let k = 1; k < playT.length; k++) {
      const gap = playT[k] - playT[k - 1];
      f.push(f[k - 1] + (slow ? Math.max(gap, SLOW_MIN_GAP_S) : gap));
    }
    return f;
  }
  let playF = null;
  function knotAt(f) {  // the last knot at or before film time f
    let lo = 0, hi = playF.length;
    while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (playF[mid] <= f) lo = mid; else hi = mid; }
    return lo;
  }
  function filmPosOf(i, t) {  // moment i at trace time t -> film time
    const k = i + 1, next = Math.min(k + 1, playT.length - 1);
    const span = playT[next] - playT[k];
    return playF[k] + (span > 0 ? Math.min(1, Math.max(0, (t - playT[k]) / span)) * (playF[next] - playF[k]) : 0);
  }

  function momentAt(t) {  // the last moment at or before t
    let lo = -1, hi = M.length;
    while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (M[mid].t <= t) lo = mid; else hi = mid; }
    return lo;
  }

  // ---- static parts ----
  const tbody = $("packet-rows");
  const rows = D.packets.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.no = p.no;
    tr.className = ROLE[p.host] + (p.retransmission ? " retransmission" : "") + " future";
    const length = p.length === null || p.length === undefined ? "" : String(p.length);
    for (const [cls, text] of [["no", p.no], ["time", p.t.toFixed(6)], ["src", p.source], ["dst", p.destination],
      ["proto", p.protocol], ["len", length], ["capture", p.host + (p.dir === "out" ? " out" : " in")],
      ["info", p.info]]) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = text;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
    return tr;
  });
  const pane = {};
  for (const h of HOSTS) {
    const role = ROLE[h];
    pane[h] = { console: document.querySelector(`#console-${role} pre`), netstat: document.querySelector(`#netstat-${role} pre`) };
    document.querySelector(`#console-${role} h2`).textContent = `${h} (${role}) console`;
    document.querySelector(`#netstat-${role} h2`).textContent = `${h} (${role}) netstat -nao | grep ${D.port}`;
  }
  const markers = $("markers");
  const scrubEnd = scrubAxis[scrubAxis.length - 1] || 1;
  for (const s of D.steps) {
    const span = document.createElement("span");
    span.style.left = `${(100 * interp(knotTimes, scrubAxis, s.t) / scrubEnd).toFixed(3)}%`;
    span.title = `step ${s.index}: ${s.action} ${s.target} (${s.status})`;
    span.dataset.step = s.index;
    if (s.status === "failed") span.className = "failed";
    markers.appendChild(span);
  }
  $("scrub").max = String(scrubEnd);

  // ---- what happened by the current moment ----
  function record() { return cur >= 0 ? M[cur].record : -1; }

  function lastTransition(host, rec) {
    let last = null;
    for (const tr of D.transitions) if (tr.host === host && tr.record <= rec) last = tr;
    return last;
  }

  function stateBox(tr) {  // the diagram box a host is in: [state, atEnd]
    if (!tr) return ["CLOSED", false];
    const end = tr.to === "CLOSED" && !["CLOSED", "LISTEN", "SYN_SENT"].includes(tr.from);
    return [tr.to, end];
  }

  function renderDiagram(rec) {
    const at = {};
    const last = {};
    for (const h of HOSTS) {
      last[h] = lastTransition(h, rec);
      const [state, end] = stateBox(last[h]);
      const key = state + (end ? "/end" : "");
      (at[key] = at[key] || []).push(h);
    }
    document.querySelectorAll("#state-diagram .state").forEach((g) => {
      const key = g.dataset.state + (g.dataset.end ? "/end" : "");
      const hs = at[key] || [];
      g.classList.remove("server", "client", "both");
      if (hs.length === 2) g.classList.add("both");
      else if (hs.length === 1) g.classList.add(ROLE[hs[0]]);
      g.dataset.hosts = hs.join(",");
    });
    document.querySelectorAll("#state-diagram .edge").forEach((g) => {
      g.classList.remove("taken", "server", "client");
      g.dataset.hosts = "";
    });
    const cause = $("cause");
    cause.textContent = "";
    const newest = HOSTS.map((h) => last[h]).filter(Boolean).sort((a, b) => b.record - a.record);
    for (const tr of newest) {
      const edge = document.querySelector(`#state-diagram .edge[data-from="${tr.from}"][data-to="${tr.to}"]`);
      if (edge) {
        edge.classList.add("taken", ROLE[tr.host]);
        edge.dataset.hosts = edge.dataset.hosts ? edge.dataset.hosts + "," + tr.host : tr.host;
      }
      const line = document.createElement("div");
      line.className = "transition" + (cur >= 0 && M[cur].record === tr.record ? " now" : "");
      line.dataset.host = tr.host;
      const who = document.createElement("span");
      who.className = ROLE[tr.host];
      who.textContent = `${tr.host} (${ROLE[tr.host]})`;
      line.appendChild(who);
      line.appendChild(document.createTextNode(
        `: ${tr.from} → ${tr.to} at ${fmt(tr.t)} s, because ${tr.because}` +
        (tr.packet ? ` [#${tr.packet}]` : "") + (tr.rfc ? ` (RFC: ${tr.rfc})` : " (not an edge of RFC 9293's diagram" +
          (tr.rule ? `; its text: ${tr.rule})` : ")"))));
      if (line.classList.contains("now")) line.style.fontWeight = "bold";
      cause.appendChild(line);
    }
  }

  function renderPackets(rec) {
    let lo = 0, hi = D.packets.length;  // how many packets have happened by record rec
    while (lo < hi) { const mid = (lo + hi) >> 1; if (D.packets[mid].record <= rec) lo = mid + 1; else hi = mid; }
    const was = visiblePackets;
    if (was > 0) rows[was - 1].classList.remove("current");
    for (let i = Math.min(was, lo); i < Math.max(was, lo); i++) rows[i].classList.toggle("future", i >= lo);
    visiblePackets = lo;
    if (lo > 0) {
      rows[lo - 1].classList.add("current");
      rows[lo - 1].scrollIntoView({ block: "nearest" });
    }
  }

  function renderConsoles(rec) {
    for (const h of HOSTS) {
      const lines = [];
      for (const c of D.commands[h] || []) if (c.record <= rec) lines.push({ record: c.record, text: `${h}$ ${c.text}`, cls: "cmd" });
      for (const c of D.console) {
        if (c.host === h && c.record <= rec) lines.push({ record: c.record, text: c.text, cls: c.stream === "stdin" ? "typed" : c.stream });
      }
      lines.sort((a, b) => a.record - b.record);
      if (consoleShown[h] === lines.length) continue;
      consoleShown[h] = lines.length;
      const pre = pane[h].console;
      pre.textContent = "";
      for (const l of lines) {
        const div = document.createElement("div");
        div.className = l.cls;
        div.textContent = l.text;
        pre.appendChild(div);
      }
      pre.scrollTop = pre.scrollHeight;
    }
  }

  const TIMER = /^(\S+) \(([0-9.]+)\/(\d+)\/(\d+)\)$/;
  function countdown(timer, elapsed) {
    const m = TIMER.exec(timer);
    if (!m || m[1] === "off") return timer;
    return `${m[1]} (${Math.max(0, parseFloat(m[2]) - elapsed).toFixed(2)}/${m[3]}/${m[4]})`;
  }
  const pad = (s, n) => (String(s) + " ".repeat(n)).slice(0, Math.max(n, String(s).length));
  const lpad = (s, n) => (" ".repeat(n) + String(s)).slice(-Math.max(n, String(s).length));
  function renderNetstat() {
    for (const h of HOSTS) {
      const snaps = D.netstat[h] || [];
      let lo = -1, hi = snaps.length;  // the last snapshot at or before now
      while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (snaps[mid].t <= now) lo = mid; else hi = mid; }
      const snap = lo >= 0 ? snaps[lo] : null;
      const out = ["Proto Recv-Q Send-Q Local Address           Foreign Address         State       Timer"];
      if (snap) {
        for (const r of snap.rows) {
          out.push(`${pad(r.proto, 5)} ${lpad(r.recv_q, 6)} ${lpad(r.send_q, 6)} ${pad(r.local, 23)} ${pad(r.foreign, 23)} ` +
            `${pad(r.state, 11)} ${countdown(r.timer, now - snap.t)}`);
        }
      }
      pane[h].netstat.textContent = out.join("\n");
    }
  }

  function render() {
    const rec = record();
    if (shown !== cur) {
      renderDiagram(rec);
      renderPackets(rec);
      renderConsoles(rec);
      $("moment").textContent = cur >= 0 ? `[${cur + 1}/${M.length}] ${fmt(M[cur].t)} s  ${M[cur].label}` : `[0/${M.length}] start: press ▶ or →`;
      shown = cur;
    }
    renderNetstat();
    $("clock").textContent = `${fmt(now)} s / ${fmt(D.t_end)} s`;
    $("scrub").value = String(interp(knotTimes, scrubAxis, now));
    $("play").textContent = playing ? "❚❚" : "▶";
    document.body.dataset.moment = String(cur);
    document.body.dataset.now = fmt(now);
  }

  // ---- position, URL fragment ----
  function setHash() {
    const frag = cur >= 0 && Math.abs(M[cur].t - now) < 1e-9 ? `#m=${cur + 1}` : `#t=${now.toFixed(9)}`;
    if (location.hash !== frag) history.replaceState(null, "", frag);
  }
  function goMoment(i) {
    cur = Math.max(-1, Math.min(M.length - 1, i));
    now = cur >= 0 ? M[cur].t : 0;
    render();
    setHash();
  }
  function goTime(t) {
    now = Math.max(0, Math.min(D.t_end, t));
    cur = momentAt(now);
    render();
    setHash();
  }
  function fromHash(hash) {
    const m = /^#(m|t)=([0-9.]+)$/.exec(hash);
    if (!m) return false;
    if (m[1] === "m") goMoment(parseInt(m[2], 10) - 1); else goTime(parseFloat(m[2]));
    return true;
  }

  // ---- playing ----
  function tick(ts) {
    if (!playing) return;
    if (lastTick !== null) {
      filmPos += (ts - lastTick) / 1000 * speed;
      const k = knotAt(filmPos), next = Math.min(k + 1, playT.length - 1);
      const span = playF[next] - playF[k];
      cur = Math.min(M.length - 1, k - 1);
      now = Math.min(D.t_end, playT[k] + (span > 0 ? (filmPos - playF[k]) / span : 0) * (playT[next] - playT[k]));
      if (filmPos >= playF[playF.length - 1]) { playing = false; now = D.t_end; setHash(); }
      render();
    }
    lastTick = ts;
    if (playing) requestAnimationFrame(tick);
  }
  function play(on) {
    if (on && now >= D.t_end) goMoment(-1);
    playing = on;
    lastTick = null;
    playF = playAxis();
    filmPos = filmPosOf(cur, now);
    if (playing) requestAnimationFrame(tick); else setHash();
    render();
  }
  function setSpeed(s) {
    speed = s;
    $("speed").value = String(s);
  }
  function stepSpeed(dir) {
    const i = SPEEDS.indexOf(speed);
    setSpeed(SPEEDS[Math.max(0, Math.min(SPEEDS.length - 1, (i < 0 ? 3 : i) + dir))]);
  }
  function setSlow(on) {
    slow = on;
    $("slow").checked = on;
    playF = playAxis();
    filmPos = filmPosOf(cur, now);
  }

  $("play").addEventListener("click", () => play(!playing));
  $("next").addEventListener("click", () => { play(false); goMoment(cur + 1); });
  $("prev").addEventListener("click", () => { play(false); goMoment(cur - 1); });
  $("speed").addEventListener("change", (e) => setSpeed(parseFloat(e.target.value)));
  $("slow").addEventListener("change", (e) => setSlow(e.target.checked));
  $("scrub").addEventListener("input", (e) => { play(false); goTime(interp(scrubAxis, knotTimes, parseFloat(e.target.value))); });
  window.addEventListener("hashchange", () => {
    const hash = location.hash;  // read first: stopping would write the position it is leaving
    playing = false;
    fromHash(hash);
  });
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;  // the browser's own shortcuts (zoom, save)
    if (e.target && (e.target.tagName === "SELECT" || e.target.tagName === "INPUT") && e.key !== " ") return;
    const keys = {
      " ": () => play(!playing),
      ArrowRight: () => { play(false); goMoment(cur + 1); },
      ArrowLeft: () => { play(false); goMoment(cur - 1); },
      "+": () => stepSpeed(1), "=": () => stepSpeed(1), "-": () => stepSpeed(-1),
      s: () => setSlow(!slow),
      Home: () => { play(false); goMoment(-1); },
      End: () => { play(false); goMoment(M.length - 1); },
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  });

  if (!fromHash(location.hash)) render();
})();
