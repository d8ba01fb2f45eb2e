// graphile-worker peer for bench/peers/drive (node, with bench/peers/node_modules).
//
//   node graphile_peer.js worker C   one worker process: a graphile-worker runner, concurrency C
//   node graphile_peer.js client     prepares the database and enqueues on request, one JSON line each
//
// PostgreSQL at $PG_URL (a libpq URL naming the database; drive creates a fresh database per run
// and drops it afterwards). Schema graphile_worker (the default), installed by the client's
// migrate. One task, 'run': spawns the job's payload.argv (stdio ignored) and resolves when it
// exits 0, so a job succeeds exactly when its command exits 0; payload.i is the job's index,
// reported back so drive can check every job ran exactly once.
//
// Settings: graphile-worker's defaults except concurrency, i.e. pollInterval 2000 ms (only used
// when a worker finds no job: a worker that just finished a job asks for the next one at once,
// and LISTEN/NOTIFY on jobs:insert wakes idle workers for new jobs), no local queue (each of the
// C workers fetches its own job, one get_job round trip per job), no completion batching
// (completeJobBatchDelay/failJobBatchDelay -1: one DELETE per completed job, issued right after
// the job's 'job:success' event and not awaited by the worker), maxPoolSize 10 (our own pg.Pool
// of the same size, passed as pgPool so its connections can be opened before "go"), prepared
// statements on, useNodeTime false, 25 attempts per job. The localQueue/batching options are
// opt-in and documented as a trade-off (more jobs locked per process, more work lost on a crash),
// so the peer runs without them. Logging: warnings and errors to stderr only; graphile's default
// logger would print an info line per completed job (NO_LOG_SUCCESS=1 is set as well, which
// skips building that message), in line with celery/huey running at WARNING here.
//
// worker: imports graphile-worker, opens its pool (min(C + 2, 10) connections made and released:
// C get_job/DELETE users plus the LISTEN client) and prints "ready". On the line "go" it calls
// run({pgPool, concurrency: C, taskList, noHandleSignals, logger, events}) - the runner checks
// the (already migrated) schema, LISTENs, and its C workers start fetching - and from then on
// reports progress, at most every 25 ms while jobs complete:
//   {"ok", "errors", "go_mono", "first_start_mono", "last_ok_mono"}   (CLOCK_MONOTONIC ns strings)
// ok counts 'job:success' events, errors 'job:error' events (a failed attempt; graphile then
// retries the job later). On the line "ids" it answers {"ids": [payload.i of each success]}.
// SIGTERM/SIGINT or EOF on stdin: runner.stop() (graceful), pool.end(), exit.
//
// client requests (JSON lines on stdin):
//   {"cmd": "migrate"}                    -> {"seconds"}: install the graphile_worker schema
//   {"cmd": "enqueue", "n": N, "argv": [...]}
//                                         -> {"seconds", "added"}: ONE bulk addJobs() call with N
//                                            specs {identifier: 'run', payload: {argv, i}}
//   {"cmd": "check"}                      -> {"left", "attempted", "errored"}: rows still in
//                                            graphile_worker._private_jobs (completed jobs are
//                                            deleted), of which with attempts > 0 / a last_error
//   {"cmd": "versions"}                   -> {"graphile_worker", "pg", "node", "server"}
'use strict';
process.env.NO_LOG_SUCCESS = '1'; // read by graphile-worker when its modules load
const { spawn } = require('child_process');
const readline = require('readline');
const { EventEmitter } = require('events');

const PG_URL = process.env.PG_URL;
// Read directly: graphile-worker's "exports" map does not expose its package.json.
const pkgVersion = (name) => JSON.parse(require('fs').readFileSync(
  require('path').join(__dirname, 'node_modules', name, 'package.json'), 'utf8')).version;
const say = (obj) => process.stdout.write((typeof obj === 'string' ? obj : JSON.stringify(obj)) + '\n');
const mono = () => process.hrtime.bigint().toString(); // CLOCK_MONOTONIC on Linux (libuv)

function runArgv(argv) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code, sig) =>
      code === 0 ? resolve() : reject(new Error(`${argv[0]} exited ${code ?? sig}`)));
  });
}

const taskList = { run: async (payload) => { await runArgv(payload.argv); } };

// graphile-worker (and pg-boss) ship as ES modules; a dynamic import loads them from CommonJS on
// every Node version that has it, without require(esm)'s experimental warning on Node 20.
const load = () => import('graphile-worker');

function makeLogger(Logger) {
  return new Logger((scope) => (level, message) => {
    if (level === 'error' || level === 'warning') {
      console.error(`[graphile ${level}]${scope.workerId ? ` ${scope.workerId}` : ''} ${message}`);
    }
  });
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

async function worker(concurrency) {
  const { run, Logger } = await load();
  const { Pool } = require('pg');
  const logger = makeLogger(Logger);
  const pgPool = new Pool({ connectionString: PG_URL, max: 10 }); // graphile's default maxPoolSize
  // The error handlers graphile-worker asks a passed-in pool to have (idle and checked-out clients).
  pgPool.on('error', (err) => console.error('[graphile pool]', err.message));
  pgPool.on('connect', (c) => c.on('error', (err) => console.error('[graphile client]', err.message)));
  const warm = await Promise.all(Array.from({ length: Math.min(concurrency + 2, 10) }, () => pgPool.connect()));
  warm.forEach((c) => c.release());

  const events = new EventEmitter();
  const done = [];
  let ok = 0, errors = 0, goMono = null, firstStart = null, lastOk = null, timer = null;
  const report = () => { timer = null; say({ ok, errors, go_mono: goMono, first_start_mono: firstStart, last_ok_mono: lastOk }); };
  const soon = () => { if (!timer) timer = setTimeout(report, 25); };
  events.on('job:start', () => { if (!firstStart) firstStart = mono(); });
  events.on('job:success', ({ job }) => { lastOk = mono(); ok++; done.push(job.payload.i); soon(); });
  events.on('job:error', ({ error }) => { errors++; console.error('[graphile job:error]', error.message); soon(); });

  let runner = null, stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    try { if (runner) await runner.stop(); } catch (err) { console.error('[graphile stop]', err.message); }
    await pgPool.end().catch(() => {});
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  say('ready');
  const lines = stdinLines();
  for (let line; (line = await lines.next()) !== null;) {
    line = line.trim();
    if (line === 'go' && !runner) {
      goMono = mono();
      runner = await run({ pgPool, concurrency, taskList, noHandleSignals: true, logger, events });
      runner.promise.catch((err) => { console.error('[graphile runner]', err); process.exit(1); });
      soon();
    } else if (line === 'ids') {
      if (timer) { clearTimeout(timer); report(); }
      say({ ids: done });
    }
  }
  await stop();
}

async function client() {
  const { makeWorkerUtils, Logger } = await load();
  const utils = await makeWorkerUtils({ connectionString: PG_URL, logger: makeLogger(Logger) });
  const lines = stdinLines();
  for (let line; (line = await lines.next()) !== null;) {
    if (!line.trim()) continue;
    const req = JSON.parse(line);
    let reply;
    try {
      if (req.cmd === 'migrate') {
        const t = process.hrtime.bigint();
        await utils.migrate();
        reply = { seconds: Number(process.hrtime.bigint() - t) / 1e9 };
      } else if (req.cmd === 'enqueue') {
        const specs = Array.from({ length: req.n }, (_, i) => ({ identifier: 'run', payload: { argv: req.argv, i } }));
        const t = process.hrtime.bigint();
        const jobs = await utils.addJobs(specs);
        reply = { seconds: Number(process.hrtime.bigint() - t) / 1e9, added: jobs.length };
      } else if (req.cmd === 'check') {
        const { rows } = await utils.withPgClient((c) => c.query(
          `select count(*)::int as left, (count(*) filter (where attempts > 0))::int as attempted,
                  (count(*) filter (where last_error is not null))::int as errored
             from graphile_worker._private_jobs`));
        reply = rows[0];
      } else if (req.cmd === 'versions') {
        const { rows } = await utils.withPgClient((c) => c.query('show server_version'));
        reply = { graphile_worker: pkgVersion('graphile-worker'), pg: pkgVersion('pg'),
                  node: process.version, server: rows[0].server_version };
      } else {
        reply = { error: `unknown cmd ${req.cmd}` };
      }
    } catch (err) {
      reply = { error: String(err && err.stack || err) };
    }
    say(reply);
  }
  await utils.release();
}

const [role, ...rest] = process.argv.slice(2);
if (!PG_URL) {
  console.error('graphile_peer.js: PG_URL is not set');
  process.exit(2);
} else if (role === 'worker') {
  worker(Number(rest[0])).catch((err) => { console.error(err); process.exit(1); });
} else if (role === 'client') {
  client().catch((err) => { console.error(err); process.exit(1); });
} else {
  console.error('usage: node graphile_peer.js worker C | client');
  process.exit(2);
}
