// The demo app's back-end: holds the app's credentials, gives each page
// (each tab) its own madx-pusher token for the visitor's user id, and
// queues jobs for the worker. Node's standard library only.
//
//   node examples/demo/server.js        then open http://127.0.0.1:3000
//
// MADX_URL (http://127.0.0.1:8080), MADX_KEY / MADX_SECRET (the pusher's demo
// app), PORT (3000; 0 picks a free one) and HOST (127.0.0.1) configure it.

import { randomUUID } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Worker } from './worker.js';

const here = dirname(fileURLToPath(import.meta.url));
const pusher = {
  url: (process.env.MADX_URL || 'http://127.0.0.1:8080').replace(/\/$/, ''),
  key: process.env.MADX_KEY || 'demo-key',
  secret: process.env.MADX_SECRET || 'demo-secret',
};
const worker = new Worker(pusher);

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css' };
/** Files the page may load: its own, and the client library's modules. */
const files = new Map([
  ['/', join(here, 'public/index.html')],
  ['/app.js', join(here, 'public/app.js')],
  ['/style.css', join(here, 'public/style.css')],
]);
const clientDir = join(here, '../../clients/js/src');
for (const name of await readdir(clientDir)) files.set(`/client/${name}`, join(clientDir, name));

const server = http.createServer(async (request, response) => {
  try {
    await handle(request, response);
  } catch (error) {
    console.error(error);
    send(response, 500, { error: 'internal error' });
  }
});

/**
 * @param {http.IncomingMessage} request
 * @param {http.ServerResponse} response
 */
async function handle(request, response) {
  const path = new URL(request.url || '/', 'http://x').pathname;
  const user = visitor(request, response);

  if (request.method === 'GET' && files.has(path)) {
    const file = /** @type {string} */ (files.get(path));
    response.writeHead(200, {
      'content-type': TYPES[/** @type {keyof TYPES} */ (file.slice(file.lastIndexOf('.')))],
      'cache-control': 'no-store',
    });
    response.end(await readFile(file));
    return;
  }
  if (request.method === 'POST' && path === '/api/token') {
    // One token per tab: a token opens at most three sockets per 30 s step,
    // so tabs sharing one would refuse each other's reconnects.
    let answer;
    try {
      answer = await fetch(`${pusher.url}/v1/tokens`, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(`${pusher.key}:${pusher.secret}`).toString('base64')}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ user_id: user }),
      });
    } catch (error) {
      send(response, 502, { error: `the pusher is unreachable: ${error}` });
      return;
    }
    if (!answer.ok) {
      send(response, 502, { error: `the pusher refused a token: ${answer.status} ${await answer.text()}` });
      return;
    }
    const { access_id, secret_seed, otp, ws_url, expires_in } = await answer.json();
    send(response, 200, { access_id, secret_seed, otp, ws_url, expires_in });
    return;
  }
  if (request.method === 'POST' && path === '/api/jobs') {
    const body = await json(request);
    const kind = body.kind === 'fibonacci' ? 'fibonacci' : 'primes';
    const n = Math.trunc(Number(body.n));
    const seconds = Number(body.seconds ?? 2);
    const max = kind === 'primes' ? 20_000_000 : 10_000;
    if (!(n >= 1 && n <= max) || !(seconds >= 0 && seconds <= 30)) {
      send(response, 400, { error: `n must be 1..${max} and seconds 0..30` });
      return;
    }
    send(response, 202, worker.enqueue({ user, kind, n, seconds }));
    return;
  }
  if (request.method === 'GET' && path === '/api/jobs') {
    // What the page reloads when the pusher says history did not reach back.
    send(response, 200, worker.jobs.filter((job) => job.user === user));
    return;
  }
  send(response, 404, { error: 'not found' });
}

/**
 * The visitor's user id, from a cookie set on the first request. A real
 * app has its own login; the pusher only needs a stable user id.
 * @param {http.IncomingMessage} request
 * @param {http.ServerResponse} response
 */
function visitor(request, response) {
  const match = /(?:^|;\s*)demo_user=([\w-]+)/.exec(request.headers.cookie || '');
  if (match) return match[1];
  const user = `user-${randomUUID().slice(0, 8)}`;
  response.setHeader('set-cookie', `demo_user=${user}; Path=/; HttpOnly; SameSite=Strict`);
  return user;
}

/**
 * @param {http.ServerResponse} response
 * @param {number} status
 * @param {unknown} body
 */
function send(response, status, body) {
  response.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  response.end(JSON.stringify(body));
}

/** @param {http.IncomingMessage} request */
async function json(request) {
  let text = '';
  for await (const chunk of request) {
    text += chunk;
    if (text.length > 10_000) throw new Error('body too large');
  }
  try {
    return JSON.parse(text || '{}');
  } catch {
    return {};
  }
}

server.listen(Number(process.env.PORT ?? 3000), process.env.HOST || '127.0.0.1', () => {
  const { address, port } = /** @type {import('node:net').AddressInfo} */ (server.address());
  console.log(`demo listening on http://${address}:${port} (pusher ${pusher.url})`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => process.exit(0));
