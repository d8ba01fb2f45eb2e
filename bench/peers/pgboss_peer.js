// pg-boss peer for bench/peers/drive (node, with bench/peers/node_modules).
//
//   node pgboss_peer.js worker C B   one worker process: a PgBoss instance whose work() runs C
//                                    polling workers (localConcurrency C), each fetching B jobs
//   node pgboss_peer.js client       prepares the queue and enqueues on request, one JSON line each
//
// PostgreSQL at $PG_URL (a libpq URL naming the database; drive creates a fresh database per run
// and drops it afterwards). Schema pgboss (the default), created by the client's start(). Queue
// "bench", created with createQueue's defaults (policy standard, retryLimit 2, retention and
// deletion defaults; no LISTEN/NOTIFY). Each job's data is {argv, i}: the handler spawns argv
// (stdio ignored) and the job succeeds exactly when it exits 0; i is the job's index, reported back
// so drive can check every job ran exactly once.
//
// Settings. pg-boss's polling defaults cannot drain a backlog: work() fetches batchSize (default
// 1) jobs, runs them, and then waits out pollingIntervalSeconds (default 2 s) before the next
// fetch; its docs: "The default options for work() is 1 job every 2 seconds" per worker, i.e.
// ~1 job/s at C = 2 (measured: see README.md). pollingIntervalSeconds cannot go below 0.5 s.
// LISTEN/NOTIFY (useListenNotify + a notify queue) only wakes workers when a job is *created*, so
// it does not help a drain, and raises the wait between fetches to notifyPollingIntervalSeconds
// (30 s). What pg-boss documents for a backlog is burst mode: with burstWhenBatchFull: true (only
// effective with batchSize > 1) a worker whose fetch came back full fetches again at once, and
// falls back to the 2 s poll after the first short fetch. (burstWhenReadyExceeds would also work
// with batchSize 1, but keys off a queue-stats cache refreshed every 60 s, which may not yet have
// seen the backlog when the workers start.) So each worker process calls
//   work('bench', {localConcurrency: C, batchSize: B, burstWhenBatchFull: true, perJobResults: true}, handler)
// with B from drive (default 10; drive's --batch), and everything else default:
// pollingIntervalSeconds 2, priority ordering, orderByCreatedOn, no heartbeats, pool max 10,
// supervise/schedule/migrate on (maintenance in each process, as in a normal deployment). The
// handler runs its batch's B jobs one after another, so each process runs at most C jobs at once,
// and returns one result per job (perJobResults: a failed command fails its own job only; pg-boss
// settles the completed ones with one UPDATE per batch). Errors and warnings go to stderr.
//
// worker: imports pg-boss, start()s it (pool opened, schema checked, maintenance armed) and
// prints "ready". On the line "go" it calls work() (its C workers fetch at once) and from then on
// reports progress, at most every 25 ms while batches finish:
//   {"ok", "errors", "go_mono", "first_start_mono", "last_ok_mono"}   (CLOCK_MONOTONIC ns strings)
// ok/errors count jobs whose command exited 0 / did not, when the handler returns its batch (the
// jobs are marked completed in the database right after: drive takes the end of the drain from
// their completed_on). On the line "ids" it answers {"ids": [data.i of each success]}.
// SIGTERM/SIGINT or EOF on stdin: stop({graceful: true, timeout: 5000}), exit.
//
// client requests (JSON lines on stdin):
//   {"cmd": "prepare"}                    -> {"seconds"}: start() (creates the schema) + createQueue
//   {"cmd": "enqueue", "n": N, "argv": [...]}
//                                         -> {"seconds", "added"}: ONE bulk insert('bench', jobs)
//                                            call with N jobs {data: {argv, i}}
//   {"cmd": "check"}                      -> {"states": {state: count}, "max_retry_count",
//                                            "last_completed_us", "first_started_us"} over the
//                                            queue's rows in pgboss.job (DB clock, us since epoch)
//   {"cmd": "clock"}                      -> {"db_us", "mono_before", "mono_after"}: the server's
//                                            clock_timestamp() bracketed by CLOCK_MONOTONIC reads
//   {"cmd": "versions"}                   -> {"pg_boss", "pg", "node", "server"}
'use strict';
const { spawn } = require('child_process');
const readline = require('readline');

const PG_URL = process.env.PG_URL;
const QUEUE = 'bench';
const say = (obj) => process.stdout.write((typeof obj === 'string' ? obj : JSON.stringify(obj)) + '\n');
const mono = () => process.hrtime.bigint().toString(); // CLOCK_MONOTONIC on Linux (libuv)
const pkgVersion = (name) => JSON.parse(require('fs').readFileSync(
  require('path').join(__dirname, 'node_modules', name, 'package.json'), 'utf8')).version;

function runArgv(argv) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code, sig) =>
      code === 0 ? resolve() : reject(new Error(`${argv[0]} exited ${code ?? sig}`)));
  });
}

// pg-boss ships as an ES module; a dynamic import loads it from CommonJS on every Node version
// that has it, without require(esm)'s experimental warning on Node 20.
const load = async () => (await import('pg-boss')).PgBoss;

function listen(boss) {
  boss.on('error', (err) => console.error('[pg-boss error]', err && err.message || err));
  boss.on('warning', (w) => console.error('[pg-boss warning]', w && (w.message || JSON.stringify(w))));
}

// Lines from stdin as an async queue; EOF resolves next() with null.
function stdinLines() {
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  const buf = [], waiters = [];
  let closed = false;
  rl.on('line', (l) => (waiters.length ? waiters.shift()(l) : buf.push(l)));
  rl.on('close', () => { closed = true; while (waiters.length) waiters.shift()(null); });
  return { next: () => (buf.length ? Promise.resolve(buf.shift()) : closed ? Promise.resolve(null)
                                   : new Promise((r) => waiters.push(r))) };
}

async function worker(concurrency, batchSize) {
  const PgBoss = await load();
  const boss = new PgBoss({ connectionString: PG_URL });
  listen(boss);
  await boss.start();

  const done = [];
  let ok = 0, errors = 0, goMono = null, firstStart = null, lastOk = null, timer = null;
  const report = () => { timer = null; say({ ok, errors, go_mono: goMono, first_start_mono: firstStart, last_ok_mono: lastOk }); };
  const soon = () => { if (!timer) timer = setTimeout(report, 25); };
  const handler = async (jobs) => {
    if (!firstStart) firstStart = mono();
    const results = [];
    for (const job of jobs) {
      try {
        await runArgv(job.data.argv);
        results.push({ id: job.id, status: 'completed' });
        ok++;
        done.push(job.data.i);
      } catch (err) {
        results.push({ id: job.id, status: 'failed', output: { message: err.message } });
        errors++;
        console.error('[pg-boss job failed]', job.id, err.message);
      }
    }
    lastOk = mono();
    soon();
    return results;
  };

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    try { await boss.stop({ graceful: true, timeout: 5000 }); } catch (err) { console.error('[pg-boss stop]', err.message); }
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  say('ready');
  const lines = stdinLines();
  let started = false;
  for (let line; (line = await lines.next()) !== null;) {
    line = line.trim();
    if (line === 'go' && !started) {
      started = true;
      goMono = mono();
      await boss.work(QUEUE, { localConcurrency: concurrency, batchSize, burstWhenBatchFull: true,
                               perJobResults: true }, handler);
      soon();
    } else if (line === 'ids') {
      if (timer) { clearTimeout(timer); report(); }
      say({ ids: done });
    }
  }
  await stop();
}

async function client() {
  const PgBoss = await load();
  const { Client } = require('pg');
  // A producer-only instance: no maintenance or cron in the client (the workers run those).
  const boss = new PgBoss({ connectionString: PG_URL, supervise: false, schedule: false });
  listen(boss);
  const db = new Client({ connectionString: PG_URL });
  await db.connect();
  const lines = stdinLines();
  for (let line; (line = await lines.next()) !== null;) {
    if (!line.trim()) continue;
    const req = JSON.parse(line);
    let reply;
    try {
      if (req.cmd === 'prepare') {
        const t = process.hrtime.bigint();
        await boss.start();
        await boss.createQueue(QUEUE);
        reply = { seconds: Number(process.hrtime.bigint() - t) / 1e9 };
      } else if (req.cmd === 'enqueue') {
        const jobs = Array.from({ length: req.n }, (_, i) => ({ data: { argv: req.argv, i } }));
        const t = process.hrtime.bigint();
        const ids = await boss.insert(QUEUE, jobs);
        reply = { seconds: Number(process.hrtime.bigint() - t) / 1e9, added: ids ? ids.length : null };
      } else if (req.cmd === 'check') {
        const { rows } = await db.query(
          `select state::text as state, count(*)::int as n, max(retry_count)::int as max_retry,
                  (extract(epoch from max(completed_on)) * 1000000)::bigint::text as last_completed_us,
                  (extract(epoch from min(started_on)) * 1000000)::bigint::text as first_started_us
             from pgboss.job where name = $1 group by state`, [QUEUE]);
        const states = Object.fromEntries(rows.map((r) => [r.state, r.n]));
        const completed = rows.find((r) => r.state === 'completed');
        reply = { states, max_retry_count: Math.max(0, ...rows.map((r) => r.max_retry)),
                  last_completed_us: completed ? completed.last_completed_us : null,
                  first_started_us: completed ? completed.first_started_us : null };
      } else if (req.cmd === 'clock') {
        const before = mono();
        const { rows } = await db.query(`select (extract(epoch from clock_timestamp()) * 1000000)::bigint::text as us`);
        reply = { db_us: rows[0].us, mono_before: before, mono_after: mono() };
      } else if (req.cmd === 'versions') {
        const { rows } = await db.query('show server_version');
        reply = { pg_boss: pkgVersion('pg-boss'), pg: pkgVersion('pg'), node: process.version,
                  server: rows[0].server_version };
      } else {
        reply = { error: `unknown cmd ${req.cmd}` };
      }
    } catch (err) {
      reply = { error: String(err && err.stack || err) };
    }
    say(reply);
  }
  await db.end();
  await boss.stop({ graceful: false, timeout: 1000 }).catch(() => {});
  process.exit(0);
}

const [role, ...rest] = process.argv.slice(2);
if (!PG_URL) {
  console.error('pgboss_peer.js: PG_URL is not set');
  process.exit(2);
} else if (role === 'worker') {
  worker(Number(rest[0]), Number(rest[1] || 10)).catch((err) => { console.error(err); process.exit(1); });
} else if (role === 'client') {
  client().catch((err) => { console.error(err); process.exit(1); });
} else {
  console.error('usage: node pgboss_peer.js worker C B | client');
  process.exit(2);
}
