// BullMQ peer for bench/peers/drive (node, with bench/peers/node_modules).
//
//   node bullmq_peer.js worker C [--gate] [--expect N]   a Worker with concurrency C
//   node bullmq_peer.js client                           enqueues on request, one JSON line each
//
// Redis at 127.0.0.1:$REDIS_PORT through ioredis (BullMQ's default driver), queue "bench". The
// processor runs a job by its name: 'run' spawns the job's argv (stdio ignored) and resolves when
// it exits 0 (w1, w3); 'get' makes one HTTP GET of the job's url with a keep-alive agent and
// resolves on status 200, reading the body (w8). Jobs are added
// with removeOnComplete: 1000 / removeOnFail: 5000, the auto-removal BullMQ's production guide
// recommends (by default every finished job would be kept in Redis forever).
//
// worker: connects with autorun: false and prints "ready". With --gate it waits for one line on
// stdin before worker.run(), so jobs can be enqueued with no worker consuming and the drain
// timed from "go". With --expect N it counts 'completed'/'failed' events and, at the Nth, prints
// {"done_mono": CLOCK_MONOTONIC ns, "ok", "errors", "counts": queue.getJobCounts()}.
//
// client requests (JSON lines on stdin):
//   {"cmd": "enqueue", "n": N, "argv": [...]}  -> {"seconds": time to add N jobs one by one}
//   {"cmd": "enqueue", "n": N, "url": URL}     -> the same with N 'get' jobs
//   {"cmd": "add", "argv": [...]}              -> {"t0_mono": CLOCK_MONOTONIC ns just before add}
'use strict';
const { Queue, Worker } = require('bullmq');
const { spawn } = require('child_process');
const http = require('http');
const readline = require('readline');

const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT) };
const QUEUE = 'bench';
const jobOptions = { removeOnComplete: 1000, removeOnFail: 5000 };

function runArgv(argv) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code, sig) =>
      code === 0 ? resolve() : reject(new Error(`${argv[0]} exited ${code ?? sig}`)));
  });
}

// Node's default agent keeps connections alive (since Node 19); stated here for clarity. No
// socket cap, so each of the C concurrent jobs holds one connection, reused job after job.
const agent = new http.Agent({ keepAlive: true });

function httpGet(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent }, (res) => {
      res.resume(); // read (and discard) the body
      res.on('end', () =>
        res.statusCode === 200 ? resolve() : reject(new Error(`GET ${url}: HTTP ${res.statusCode}`)));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

const processor = async (job) => {
  if (job.name === 'get') await httpGet(job.data.url);
  else await runArgv(job.data.argv);
};

const say = (obj) => process.stdout.write((typeof obj === 'string' ? obj : JSON.stringify(obj)) + '\n');
const lines = () => readline.createInterface({ input: process.stdin, terminal: false });
const mono = () => process.hrtime.bigint().toString(); // CLOCK_MONOTONIC on Linux (libuv)

async function worker(concurrency, gate, expect) {
  const worker = new Worker(QUEUE, processor, { connection, concurrency, autorun: false });
  worker.on('error', (err) => console.error('[bullmq worker]', err));
  const stop = async () => { await worker.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (expect) {
    const queue = new Queue(QUEUE, { connection });
    let ok = 0, errors = 0;
    const tally = async () => {
      if (ok + errors !== expect) return;
      const t = mono();
      say({ done_mono: t, ok, errors, counts: await queue.getJobCounts('wait', 'active', 'delayed', 'failed') });
    };
    worker.on('completed', () => { ok++; tally(); });
    worker.on('failed', () => { errors++; tally(); });
  }
  await worker.waitUntilReady();
  say('ready');
  if (gate) {
    for await (const _ of lines()) break; // eslint-disable-line no-unused-vars
  }
  worker.run().catch((err) => { console.error('[bullmq worker]', err); process.exit(1); });
}

async function client() {
  const queue = new Queue(QUEUE, { connection, defaultJobOptions: jobOptions });
  await queue.waitUntilReady();
  for await (const line of lines()) {
    const req = JSON.parse(line);
    let reply;
    if (req.cmd === 'enqueue') {
      const t = process.hrtime.bigint();
      if (req.url) for (let i = 0; i < req.n; i++) await queue.add('get', { url: req.url });
      else for (let i = 0; i < req.n; i++) await queue.add('run', { argv: req.argv });
      reply = { seconds: Number(process.hrtime.bigint() - t) / 1e9 };
    } else if (req.cmd === 'add') {
      const t0 = mono();
      await queue.add('run', { argv: req.argv });
      reply = { t0_mono: t0 };
    } else {
      reply = { error: `unknown cmd ${req.cmd}` };
    }
    say(reply);
  }
  await queue.close();
}

const [role, ...rest] = process.argv.slice(2);
if (role === 'worker') {
  const at = rest.indexOf('--expect');
  worker(Number(rest[0]), rest.includes('--gate'), at >= 0 ? Number(rest[at + 1]) : 0)
    .catch((err) => { console.error(err); process.exit(1); });
} else if (role === 'client') {
  client().catch((err) => { console.error(err); process.exit(1); });
} else {
  console.error('usage: node bullmq_peer.js worker C [--gate] [--expect N] | client');
  process.exit(2);
}
