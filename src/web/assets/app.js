// The dashboard's script. The pages are complete without it; it adds:
// - times in the viewer's time zone (<time datetime> holds RFC 3339),
// - live updates from /api/v1/events (state badges, rows, counts, the run page),
// - output that follows a running run,
// - the action buttons, which post to the JSON API (same origin) and show its errors.
(function () {
  'use strict';

  document.documentElement.classList.add('js');

  var FINAL = ['succeeded', 'dead', 'cancelled'];
  function isFinal(state) { return FINAL.indexOf(state) >= 0; }

  // ---- presentation ----

  function pad(n) { return String(n).padStart(2, '0'); }

  function localTime(d) {
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  function localTimes(root) {
    root.querySelectorAll('time[datetime]').forEach(function (t) {
      if (t.dataset.local) return;
      var d = new Date(t.getAttribute('datetime'));
      if (isNaN(d.getTime())) return;
      t.title = t.getAttribute('datetime');
      t.textContent = localTime(d);
      t.dataset.local = '1';
    });
  }

  function timeElement(iso) {
    var t = document.createElement('time');
    t.setAttribute('datetime', iso);
    t.textContent = iso;
    localTimes({ querySelectorAll: function () { return [t]; } });
    return t;
  }

  // The same words as the server's `views::duration_ms`.
  function duration(ms) {
    ms = Math.max(0, ms);
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (Math.floor(ms / 100) / 10).toFixed(1) + ' s';
    var s = Math.floor(ms / 1000);
    if (s < 3600) return Math.floor(s / 60) + ' m ' + pad(s % 60) + ' s';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + pad(Math.floor((s % 3600) / 60)) + ' m';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }

  function setBadge(el, state) {
    if (!el) return;
    el.className = el.className.replace(/\bs-[a-z_]+/g, '').trim() + ' s-' + state;
    el.textContent = state;
  }

  // ---- the API ----

  function api(method, url, body) {
    var opts = { method: method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    return fetch(url, opts).then(function (r) {
      return r.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!r.ok) {
          var msg = data && data.error ? data.error : r.status + ' ' + r.statusText;
          if (r.status === 401) msg = 'your session has ended: log in again (worker ui)';
          throw new Error(msg);
        }
        return data;
      });
    });
  }

  // Where an action says how it went: the `.result` of its form, cell or section.
  function resultFor(el) {
    var scope = el.closest('form, td, .actions, section');
    var out = scope && scope.querySelector('.result');
    if (!out) {
      out = document.createElement('span');
      out.className = 'result';
      out.setAttribute('role', 'status');
      el.insertAdjacentElement('afterend', out);
    }
    return out;
  }

  function say(out, ok, parts) {
    out.className = out.className.replace(/\b(ok|bad)\b/g, '').trim() + (ok ? ' ok' : ' bad');
    out.textContent = '';
    parts.forEach(function (p) { out.append(p); });
  }

  function runLink(id) {
    var a = document.createElement('a');
    a.href = '/runs/' + id;
    a.textContent = '#' + id;
    return a;
  }

  function parseJson(text, what) {
    if (!text.trim()) return undefined;
    try { return JSON.parse(text); } catch (e) { throw new Error(what + ' is not valid JSON: ' + e.message); }
  }

  // ---- actions ----

  function act(el) {
    var kind = el.dataset.action;
    var url = el.dataset.url;
    var out = resultFor(el);
    var body;
    try {
      if (kind === 'enqueue') {
        var input = parseJson(el.elements.input.value, 'The input');
        if (input !== undefined && (input === null || typeof input !== 'object' || Array.isArray(input))) {
          throw new Error('The input must be a JSON object, like {"key": "value"}');
        }
        body = input === undefined ? {} : { input: input };
      } else if (kind === 'retry-from') {
        body = { from_step: el.elements.from_step.value };
      } else if (kind === 'signal') {
        var name = el.elements.name.value.trim();
        if (!name) throw new Error('Name the signal');
        url += encodeURIComponent(name);
        var data = parseJson(el.elements.data.value, 'The data');
        body = data === undefined ? {} : { data: data };
      }
    } catch (e) {
      say(out, false, [e.message]);
      return;
    }
    if (el.dataset.confirm && !window.confirm(el.dataset.confirm)) return;
    var buttons = el.tagName === 'FORM' ? el.querySelectorAll('button') : [el];
    buttons.forEach(function (b) { b.disabled = true; });
    say(out, true, ['…']);
    api('POST', url, body).then(function (o) {
      done(kind, el, out, o);
    }).catch(function (e) {
      say(out, false, [e.message]);
    }).then(function () {
      buttons.forEach(function (b) { b.disabled = false; });
    });
  }

  function done(kind, el, out, o) {
    if (kind === 'enqueue' || kind === 'trigger') {
      say(out, true, ['Run ', runLink(o.id), ' ', o.state]);
      onRun(o);
    } else if (kind === 'retry' || kind === 'retry-from') {
      say(out, true, ['Retried as run ', runLink(o.id)]);
      if (kind === 'retry') el.hidden = true;
      var row = el.closest('tr[data-run-id]');
      if (row) row.classList.add('retried');
      onRun(o);
      refreshRun();
    } else if (kind === 'cancel') {
      say(out, true, [o.state === 'cancelled' ? 'Cancelled' : 'Stopping…']);
      onRun(o);
    } else if (kind === 'signal') {
      say(out, true, [o.waiting ? 'Signal delivered to the waiting step' : 'Signal kept until a step waits for it']);
      refreshRun();
    } else if (kind === 'schedule') {
      showSchedule(el.closest('tr'), o);
      say(out, true, [o.paused ? 'Paused' : 'Resumed']);
    } else if (kind === 'retry-all') {
      var n = (o.retried || []).length;
      say(out, true, ['Retried ' + n + ' run' + (n === 1 ? '' : 's')]);
      document.querySelectorAll('table[data-dlq] tr[data-run-id]').forEach(function (tr) {
        tr.classList.add('retried');
        var b = tr.querySelector('button[data-action=retry]');
        if (b) b.hidden = true;
      });
      var total = document.getElementById('dlq-total');
      if (total) total.textContent = String(Math.max(0, Number(total.textContent) - n));
    }
  }

  function showSchedule(tr, o) {
    if (!tr) return;
    var status = !o.enabled ? 'disabled' : o.paused ? 'paused' : 'active';
    setBadge(tr.querySelector('[data-f=status]'), status);
    tr.querySelectorAll('[data-when]').forEach(function (b) {
      b.hidden = b.dataset.when !== status;
    });
    var next = tr.querySelector('[data-f=next]');
    if (next) {
      next.textContent = '';
      (o.next || []).forEach(function (iso) {
        var div = document.createElement('div');
        div.append(timeElement(iso));
        next.append(div);
      });
      if (!(o.next || []).length) {
        var none = document.createElement('span');
        none.className = 'none';
        none.textContent = '—';
        next.append(none);
      }
    }
  }

  document.addEventListener('click', function (e) {
    var b = e.target.closest('button[data-action]');
    if (b) { e.preventDefault(); act(b); }
  });
  document.addEventListener('submit', function (e) {
    var f = e.target.closest('form[data-action]');
    if (f) { e.preventDefault(); act(f); }
  });

  // ---- live tables of runs ----

  function matches(table, o) {
    var job = table.dataset.job;
    if (job && o.job !== job) return false;
    var states = (table.dataset.states || '').split(',').filter(Boolean);
    if (states.length && states.indexOf(o.state) < 0) return false;
    if ('dlq' in table.dataset && o.retried_by != null) return false;
    return true;
  }

  function updateRow(tr, o) {
    tr.dataset.state = o.state;
    setBadge(tr.querySelector('[data-f=state]'), o.state);
    var attempt = tr.querySelector('[data-f=attempt]');
    if (attempt) attempt.textContent = o.attempt + '/' + o.max_attempts;
    var took = tr.querySelector('[data-f=duration]');
    if (took) took.textContent = o.duration_ms == null ? '' : duration(o.duration_ms);
    var when = tr.querySelector('[data-f=when]');
    var iso = o.finished_at || o.started_at || o.created_at;
    if (when && iso) { when.textContent = ''; when.append(timeElement(iso)); }
    var err = tr.querySelector('[data-f=error]');
    if (err) err.textContent = o.error || '';
  }

  var fetching = {};

  function insertRow(table, id, where) {
    var key = table.dataset.insert + ':' + id;
    if (fetching[key]) return;
    fetching[key] = true;
    fetch('/fragments/run-row/' + id, { credentials: 'same-origin' }).then(function (r) {
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (!html || table.querySelector('tr[data-run-id="' + id + '"]')) return;
      var t = document.createElement('template');
      t.innerHTML = html.trim();
      var tr = t.content.firstElementChild;
      if (!tr) return;
      var body = table.tBodies[0];
      body.querySelectorAll('tr.empty').forEach(function (e) { e.remove(); });
      if (where === 'bottom') {
        body.append(tr);
      } else {
        var before = Array.prototype.find.call(body.rows, function (row) {
          return Number(row.dataset.runId) < id;
        });
        body.insertBefore(tr, before || null);
      }
      tr.classList.add('fresh');
      localTimes(tr);
      if ('dlq' in table.dataset) {
        decorateDlq(tr);
        var total = document.getElementById('dlq-total');
        if (total) total.textContent = String(Number(total.textContent) + 1);
      }
      var slot = table.closest('.chain-slot');
      if (slot) slot.hidden = false;
    }).catch(function () {}).then(function () { delete fetching[key]; });
  }

  function decorateDlq(tr) {
    if (tr.querySelector('.retry-cell')) return;
    var td = document.createElement('td');
    td.className = 'js-only retry-cell';
    var b = document.createElement('button');
    b.type = 'button';
    b.textContent = 'Retry';
    b.dataset.action = 'retry';
    b.dataset.url = '/api/v1/runs/' + tr.dataset.runId + '/retry';
    b.setAttribute('aria-label', 'Retry run ' + tr.dataset.runId);
    td.append(b);
    tr.append(td);
  }

  // ---- the page of one run ----

  var runId = Number(document.body.dataset.runId || 0);
  var refreshTimer = null;

  function refreshRun() {
    if (!runId) return;
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(function () {
      var box = document.getElementById('run-live');
      if (!box) return;
      fetch(box.dataset.fragment, { credentials: 'same-origin' }).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (html == null) return;
        var open = {};
        box.querySelectorAll('details[open]').forEach(function (d, i) { open[i] = true; });
        box.innerHTML = html;
        box.querySelectorAll('details').forEach(function (d, i) { if (open[i]) d.open = true; });
        localTimes(box);
      }).catch(function () {});
    }, 250);
  }

  function showRunState(o) {
    document.body.dataset.runState = o.state;
    setBadge(document.getElementById('run-state'), o.state);
    document.querySelectorAll('[data-when]').forEach(function (el) {
      if (el.closest('tr[data-schedule]')) return;
      var w = el.dataset.when;
      el.hidden = !(w === 'unfinished' ? !isFinal(o.state)
        : w === 'finished' ? isFinal(o.state)
        : w === 'dead' ? o.state === 'dead' && o.retried_by == null
        : true);
    });
  }

  function onStep(o) {
    if (o.run_id !== runId) return;
    document.querySelectorAll('[data-step="' + CSS.escape(o.name) + '"]').forEach(function (el) {
      if (el.tagName === 'g') {
        el.setAttribute('class', 'node s-' + o.state);
        var s = el.querySelector('[data-f=state]');
        if (s) s.textContent = o.state;
      } else {
        setBadge(el.querySelector('[data-f=state]'), o.state);
      }
    });
    refreshRun();
  }

  // ---- output ----

  var log = document.getElementById('log');
  var logTarget = document.getElementById('log-target');
  var logFollow = document.getElementById('log-follow');
  var logCtrl = null;
  var following = false;

  function logNote(text) {
    var s = document.createElement('span');
    s.className = 'status';
    s.textContent = text;
    log.append(s);
  }

  function atEnd() {
    if (logFollow && logFollow.checked) log.scrollTop = log.scrollHeight;
  }

  function loadLog() {
    if (!log) return;
    if (logCtrl) logCtrl.abort();
    var ctrl = new AbortController();
    logCtrl = ctrl;
    var follow = !isFinal(document.body.dataset.runState || '');
    var q = [];
    if (logTarget && logTarget.value) q.push(logTarget.value);
    if (follow) q.push('follow=1');
    log.textContent = '';
    following = follow;
    var got = false;
    fetch(log.dataset.url + (q.length ? '?' + q.join('&') : ''), {
      credentials: 'same-origin', signal: ctrl.signal
    }).then(function (r) {
      if (!r.ok) {
        return r.json().catch(function () { return {}; }).then(function (e) {
          var state = document.body.dataset.runState;
          logNote(state === 'queued' || state === 'delayed' || state === 'waiting'
            ? '(no output yet: the run has not started)'
            : '(' + (e.error || 'no output') + ')');
        });
      }
      var reader = r.body.getReader();
      var dec = new TextDecoder();
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) {
            var rest = dec.decode();
            if (rest) log.append(rest);
            return;
          }
          var text = dec.decode(chunk.value, { stream: true });
          if (text) { got = true; log.append(text); atEnd(); }
          return pump();
        });
      }
      return pump();
    }).catch(function (e) {
      if (e.name !== 'AbortError') logNote('(output: ' + e.message + ')');
    }).then(function () {
      if (logCtrl !== ctrl) return;
      following = false;
      if (!got && !log.textContent) logNote('(no output)');
      atEnd();
    });
  }

  if (log) {
    log.addEventListener('scroll', function () {
      if (!logFollow) return;
      logFollow.checked = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    });
    if (logFollow) logFollow.addEventListener('change', atEnd);
    if (logTarget) logTarget.addEventListener('change', loadLog);
    // A step in the graph shows its own output.
    document.addEventListener('click', function (e) {
      var a = e.target.closest('svg.graph a');
      var node = a && a.querySelector('[data-step]');
      if (!node || !logTarget) return;
      var v = 'step=' + encodeURIComponent(node.dataset.step);
      if (Array.prototype.some.call(logTarget.options, function (o) { return o.value === v; })) {
        logTarget.value = v;
        loadLog();
      }
    });
  }

  // ---- events ----

  var countsTimer = null;

  function refreshCounts() {
    if (!document.querySelector('[data-counts]')) return;
    clearTimeout(countsTimer);
    countsTimer = setTimeout(function () {
      api('GET', '/api/v1/queue/stats').then(function (jobs) {
        var totals = {};
        jobs.forEach(function (j) {
          Object.keys(j.counts || {}).forEach(function (s) { totals[s] = (totals[s] || 0) + j.counts[s]; });
        });
        document.querySelectorAll('[data-count]').forEach(function (el) {
          el.textContent = String(totals[el.dataset.count] || 0);
        });
      }).catch(function () {});
    }, 500);
  }

  function onRun(o) {
    document.querySelectorAll('table[data-runs]').forEach(function (table) {
      var tr = table.querySelector('tr[data-run-id="' + o.id + '"]');
      if (tr) {
        updateRow(tr, o);
        if ('drop' in table.dataset && !matches(table, o)) tr.remove();
        return;
      }
      var mode = table.dataset.insert;
      if (mode === 'top' && matches(table, o)) {
        insertRow(table, o.id, 'top');
      } else if (mode === 'chain' && o.retry_of != null &&
                 table.querySelector('tr[data-run-id="' + o.retry_of + '"]')) {
        insertRow(table, o.id, 'bottom');
      }
    });
    if (o.id === runId) {
      var was = document.body.dataset.runState;
      showRunState(o);
      refreshRun();
      if (o.state === 'running' && (!following || was !== 'running')) loadLog();
    }
    if (isFinal(o.state)) {
      var job = document.querySelector('tr[data-job-row="' + CSS.escape(o.job) + '"] [data-f=last]');
      if (job && o.finished_at) {
        job.textContent = '';
        var b = document.createElement('span');
        b.className = 'badge';
        b.dataset.f = 'state';
        setBadge(b, o.state);
        job.append(b, ' ', timeElement(o.finished_at));
      }
    }
    refreshCounts();
  }

  var live = document.getElementById('live');

  function liveSays(text, cls) {
    if (!live) return;
    live.textContent = text;
    live.className = 'live js-only ' + cls;
  }

  function connect() {
    if (!window.EventSource) { liveSays('no live updates in this browser', 'off'); return; }
    var es = new EventSource('/api/v1/events');
    es.addEventListener('open', function () {
      liveSays('live', 'on');
      // What changed between the page's render (or a lost connection) and now.
      refreshRun();
      refreshCounts();
    });
    es.addEventListener('error', function () {
      liveSays(es.readyState === EventSource.CLOSED ? 'offline: reload the page' : 'reconnecting…', 'off');
    });
    es.addEventListener('run', function (e) {
      try { onRun(JSON.parse(e.data)); } catch (err) { console.error(err); }
    });
    es.addEventListener('step', function (e) {
      try { onStep(JSON.parse(e.data)); } catch (err) { console.error(err); }
    });
    es.addEventListener('reset', function () { window.location.reload(); });
    window.addEventListener('pagehide', function () { es.close(); });
  }

  function start() {
    localTimes(document);
    var foot = document.querySelector('.foot');
    var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (foot && tz) foot.append(' · times in ' + tz);
    document.querySelectorAll('table[data-dlq] tr[data-run-id]').forEach(decorateDlq);
    loadLog();
    connect();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
}());
