// Shared reporting for the Node interop scripts: one line per check,
// "PASS <suite>/<check>" or "FAIL <suite>/<check>: <reason>", which
// scripts/test.sh counts. Every check has its own time limit.

let failed = 0;

export function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}

/** Runs one check; a thrown error or a time-out is a failure. Returns its value or undefined. */
export async function check(name, fn, ms = 20000) {
  try {
    const value = await withTimeout(Promise.resolve().then(fn), ms, name);
    console.log(`PASS ${name}`);
    return value;
  } catch (e) {
    failed += 1;
    const reason = (e && e.message) || String(e);
    console.log(`FAIL ${name}: ${String(reason).split('\n').join(' | ').slice(0, 400)}`);
    return undefined;
  }
}

/** Reports a check that could not run because an earlier one failed. */
export function skipped(name, why) {
  failed += 1;
  console.log(`FAIL ${name}: not run (${why})`);
}

export function finish() {
  process.exit(failed === 0 ? 0 : 1);
}

export function textOf(result) {
  const block = (result?.content ?? []).find((c) => c.type === 'text');
  return block?.text;
}

/** Parses "--name value" arguments. */
export function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  return out;
}
