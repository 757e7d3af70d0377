// Runs the real madx-pusher binary on 127.0.0.1:0 for tests, the way
// host/tests/suites/common/mod.rs does: a config file, the bound address read from
// the first stdout line, the built-in demo app. Every process started here
// is killed when the test process exits, also on failure.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
export const BIN = resolve(REPO_ROOT, process.env.MADX_PUSHER_BIN || 'target/release/madx-pusher');
/** The built-in demo app, served when the config names no app. */
export const DEMO_APP = { id: 'demo', key: 'demo-key', secret: 'demo-secret' };

/** @type {Set<import('node:child_process').ChildProcess>} */
const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => process.exit(130));
}

/**
 * Track a child process so it is killed when the tests end.
 * @param {import('node:child_process').ChildProcess} child
 */
export function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/**
 * Read a child's stdout until a line matches; keep draining afterwards so
 * the child never blocks on a full pipe.
 * @param {import('node:child_process').ChildProcess} child
 * @param {RegExp} pattern
 * @param {() => string} diagnostics
 * @returns {Promise<RegExpMatchArray>}
 */
export function waitForLine(child, pattern, diagnostics) {
  return new Promise((resolvePromise, reject) => {
    const lines = createInterface({ input: /** @type {any} */ (child.stdout) });
    let found = false;
    lines.on('line', (line) => {
      const match = !found && line.match(pattern);
      if (match) {
        found = true;
        resolvePromise(match);
      }
    });
    child.once('exit', (code, signal) => {
      if (!found) reject(new Error(`exited (${code ?? signal}) before printing ${pattern}\n${diagnostics()}`));
    });
    child.once('error', reject);
  });
}

/**
 * @typedef {object} Host
 * @property {string} base `http://127.0.0.1:PORT`
 * @property {number} port
 * @property {import('node:child_process').ChildProcess} child
 * @property {(body?: object) => Promise<any>} token POST /v1/tokens
 * @property {(body: object) => Promise<string>} publish POST /v1/publish, the id
 * @property {(accessId: string) => Promise<number>} revoke DELETE, the status
 * @property {(signal?: NodeJS.Signals) => Promise<void>} stop kill and wait
 */

/**
 * Start `madx-pusher serve` with `config` (TOML without `listen`).
 * @param {string} [config]
 * @returns {Promise<Host>}
 */
export async function startHost(config = '') {
  const dir = mkdtempSync(join(tmpdir(), 'madx-js-'));
  const configPath = join(dir, 'pusher.toml');
  writeFileSync(configPath, `listen = "127.0.0.1:0"\n${config}`);
  const child = track(spawn(BIN, ['serve', '--config', configPath], {
    env: { ...process.env, MADX_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
  let stderr = '';
  child.stderr?.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const exited = new Promise((done) => child.once('exit', done));
  child.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const [, base] = await waitForLine(child, /listening on (http:\/\/\S+)/, () =>
    `binary: ${BIN} (build it with cargo build --release, or set MADX_PUSHER_BIN)\n${stderr}`);
  const auth = `Basic ${Buffer.from(`${DEMO_APP.key}:${DEMO_APP.secret}`).toString('base64')}`;

  /**
   * @param {string} method
   * @param {string} path
   * @param {object} [body]
   */
  async function call(method, path, body) {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: auth, 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  return {
    base,
    port: Number(new URL(base).port),
    child,
    async token(body = {}) {
      const { status, body: token } = await call('POST', '/v1/tokens', body);
      if (status !== 201) throw new Error(`token refused: ${status} ${JSON.stringify(token)}`);
      return token;
    },
    async publish(body) {
      const { status, body: answer } = await call('POST', '/v1/publish', body);
      if (status !== 202) throw new Error(`publish refused: ${status} ${JSON.stringify(answer)}`);
      return answer.id;
    },
    async revoke(accessId) {
      return (await call('DELETE', `/v1/tokens/${accessId}`)).status;
    },
    async stop(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
