'use strict';
// Node read-modify-write workers for the runtime tests (mount_test/runtimes_test.go, issue 10).
//
// Each async task of this process owns one field ("p<proc>t<task>") of the shared records and
// increments it by reading the whole record and writing the whole record back. Nothing here knows
// about mergefs. Patterns (--pattern):
//   promises  fs.promises.readFile / fs.promises.writeFile (libuv's thread pool: open, fstat,
//             read and close may each run on another pool thread)
//   sync      fs.readFileSync, an await (a timer of up to --sleep-ms), fs.writeFileSync
//   fstat     read-only: readFile the record, open a descriptor on it and keep it, meet the other
//             processes at two barriers (another process rewrites the record in between), then
//             readFile again and read the old descriptor. Counts as bad a second readFile that is
//             not a whole record or is not the new one, and an old descriptor that does not read
//             (to EOF) exactly what the first readFile returned (its snapshot). Counts apart
//             (fstat_mismatch) the old descriptor's FileHandle.readFile that differs from it.
//
// Lockstep (--mode lockstep): all tasks read, barrier, all write, barrier; task g uses record
// (iteration + g) % records. The barrier across processes goes through the test: "B" on stdout
// when all tasks of this process arrived, then wait for "G" on stdin. Free: no barriers.
//
// Prints "R <json summary>" on stdout at the end.

const fs = require('fs');
const fsp = fs.promises;
const path = require('path');
const readline = require('readline');

function parseArgs(argv) {
  const a = { mode: 'lockstep', proc: 0, tasks: 1, records: 2, iterations: 10, seed: 1, sleepMs: 3 };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const v = argv[i + 1];
    a[k] = /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : v;
  }
  if (!a.dir || !a.pattern) throw new Error('usage: runtimes.js --dir D --pattern promises|sync|fstat ...');
  return a;
}

// mulberry32: a small seeded generator, so that free runs are repeatable.
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const lines = [];
const waiting = [];
let stdinClosed = false;
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (l) => {
  const w = waiting.shift();
  if (w) w.resolve(l);
  else lines.push(l);
});
rl.on('close', () => {
  stdinClosed = true;
  for (const w of waiting.splice(0)) w.reject(new Error('stdin closed at a barrier'));
});

function nextLine() {
  if (lines.length) return Promise.resolve(lines.shift());
  if (stdinClosed) return Promise.reject(new Error('stdin closed at a barrier'));
  return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
}

async function coordinate() {
  process.stdout.write('B\n');
  const l = await nextLine();
  if (l.trim() !== 'G') throw new Error(`the test answered ${JSON.stringify(l)} at the barrier`);
}

class Barrier {
  constructor(n) {
    this.n = n;
    this.count = 0;
    this.next();
  }
  next() {
    this.gen = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.gen.catch(() => {});
  }
  async wait() {
    const gen = this.gen;
    const resolve = this.resolve;
    const reject = this.reject;
    this.count++;
    if (this.count === this.n) {
      this.count = 0;
      this.next();
      try {
        await coordinate();
      } catch (e) {
        reject(e);
        throw e;
      }
      resolve();
    }
    return gen;
  }
}

function decode(text) {
  const obj = JSON.parse(text);
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj) || !('id' in obj)) {
    throw new SyntaxError(`not a record: ${JSON.stringify(text.slice(0, 60))}`);
  }
  return obj;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const stats = {
  commits: {}, attempts: 0, torn: 0, unreadable: 0, oserrors: 0, bad_reads: 0, reads_checked: 0, fstat_mismatch: 0,
  errors: [], samples: [],
};

function sample(s) {
  if (stats.samples.length < 10) stats.samples.push(s);
}

// readRecord reads until the record decodes, counting torn reads; null if it never does.
async function readRecord(read) {
  let lastBad = null;
  let sameBad = 0;
  for (let attempt = 1; attempt <= 60; attempt++) {
    let text;
    try {
      text = await read();
    } catch (e) {
      if (!e.code) throw e;
      stats.oserrors++;
      sample(`read: ${e.message}`);
      await sleep(Math.min(attempt, 5));
      continue;
    }
    try {
      return decode(text);
    } catch (e) {
      if (!(e instanceof SyntaxError)) throw e;
      stats.torn++;
      if (stats.torn <= 3) sample(`torn read: length ${text.length}, ${JSON.stringify(text.slice(-40))}`);
      if (text === lastBad) {
        if (++sameBad >= 4) break;
      } else {
        lastBad = text;
        sameBad = 1;
      }
      await sleep(Math.min(attempt, 5));
    }
  }
  stats.unreadable++;
  return null;
}

function commit(rec, field) {
  const name = `r${rec}.json`;
  const f = (stats.commits[name] = stats.commits[name] || {});
  f[field] = (f[field] || 0) + 1;
}

async function rmwTask(a, task, barrier) {
  const g = a.proc * a.tasks + task;
  const field = `p${a.proc}t${task}`;
  const rand = rng(a.seed * 7919 + g);
  for (let it = 0; it < a.iterations; it++) {
    const rec = a.mode === 'lockstep' ? (it + g) % a.records : Math.floor(rand() * a.records);
    const p = path.join(a.dir, `r${rec}.json`);
    let obj;
    if (a.pattern === 'promises') {
      obj = await readRecord(() => fsp.readFile(p, 'utf8'));
    } else {
      obj = await readRecord(async () => fs.readFileSync(p, 'utf8'));
      await sleep(rand() * a.sleepMs);
    }
    if (barrier) await barrier.wait();
    if (obj !== null) {
      obj[field] = (obj[field] || 0) + 1;
      stats.attempts++;
      try {
        if (a.pattern === 'promises') await fsp.writeFile(p, JSON.stringify(obj));
        else fs.writeFileSync(p, JSON.stringify(obj));
        commit(rec, field);
      } catch (e) {
        if (!e.code) throw e;
        stats.oserrors++;
        sample(`write: ${e.message}`);
      }
    }
    if (barrier) await barrier.wait();
  }
}

// readAll reads a descriptor from offset 0 to EOF, whatever fstat says.
async function readAll(fh) {
  const chunks = [];
  const buf = Buffer.alloc(64 << 10);
  for (let pos = 0; ;) {
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, bytesRead)));
    pos += bytesRead;
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function fstatTask(a, task, barrier) {
  const g = a.proc * a.tasks + task;
  for (let it = 0; it < a.iterations; it++) {
    const p = path.join(a.dir, `r${(it + g) % a.records}.json`);
    const before = await fsp.readFile(p, 'utf8');
    try {
      decode(before);
    } catch (e) {
      stats.bad_reads++;
      sample(`readFile before the rewrite: not a whole record: length ${before.length}, tail ${JSON.stringify(before.slice(-30))}`);
    }
    const old = await fsp.open(p, 'r');
    try {
      await barrier.wait(); // the other process reads
      await barrier.wait(); // ... and has rewritten the record
      const now = await fsp.readFile(p, 'utf8');
      // FileHandle.readFile reads as many bytes as fstat reports; the
      // kernel does not say which descriptor an fstat is for, so through
      // mergefs it may report another handle's size (counted, not judged).
      const viaFstat = await old.readFile('utf8');
      if (viaFstat !== before) stats.fstat_mismatch++;
      const oldText = await readAll(old);
      stats.reads_checked++;
      let whole = true;
      try {
        decode(now);
      } catch (e) {
        whole = false;
      }
      if (!whole || now === before) {
        stats.bad_reads++;
        sample(`readFile with an older descriptor open: ${whole ? 'the old record' : 'not a whole record'}: ` +
          `length ${now.length} (before ${before.length}), tail ${JSON.stringify(now.slice(-30))}`);
      }
      if (oldText !== before) {
        stats.bad_reads++;
        sample(`the older descriptor read length ${oldText.length}, not its snapshot (length ${before.length})`);
      }
    } finally {
      await old.close();
    }
  }
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const start = Date.now();
  const barrier = a.mode === 'lockstep' || a.pattern === 'fstat' ? new Barrier(a.tasks) : null;
  const run = a.pattern === 'fstat' ? fstatTask : rmwTask;
  const finish = () => {
    stats.elapsed = (Date.now() - start) / 1000;
    process.stdout.write(`R ${JSON.stringify(stats)}\n`, () => process.exit(0));
  };
  await Promise.all(Array.from({ length: a.tasks }, (_, t) => run(a, t, barrier).catch((e) => {
    stats.errors.push(String(e && e.stack ? e.stack : e));
    // The other tasks would wait at the barrier for this one forever: report now.
    if (barrier) finish();
  })));
  finish();
}

main().catch((e) => {
  process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
