// What the real server never does on purpose, so a scripted socket stands in
// for it: the same message twice (a replay overlapping live delivery) is
// handed to the app once. Everything else is tested against the real host.

import assert from 'node:assert/strict';
import test from 'node:test';

import { MadxClient } from '../src/index.js';

/** A WebSocket that welcomes, then lets the test push frames. */
class ScriptedSocket {
  /** @type {ScriptedSocket[]} */
  static opened = [];
  /** @param {string} url */
  constructor(url) {
    this.url = url;
    this.readyState = 1;
    /** @type {any[]} */
    this.sent = [];
    /** @type {((event: {data: string}) => void) | null} */
    this.onmessage = null;
    ScriptedSocket.opened.push(this);
    queueMicrotask(() => this.receive({ type: 'welcome', connection_id: 1, access_id: 'a', heartbeat_s: 25 }));
  }
  /** @param {object} frame */
  receive(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  /** @param {string} text */
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
}

test('a message that arrives twice is handled once', async () => {
  const token = { access_id: 'a', secret_seed: 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ',
    otp: { algorithm: 'SHA1', digits: 6, period: 30 }, ws_url: 'ws://127.0.0.1:1/v1/ws?app=demo' };
  const client = new MadxClient(token, { WebSocket: /** @type {any} */ (ScriptedSocket), pingAfterMs: 0 });
  /** @type {string[]} */
  const seen = [];
  client.on('*', (_data, message) => seen.push(message.id));
  await client.connect();
  const socket = ScriptedSocket.opened[0];
  assert.match(socket.url, /^ws:\/\/127\.0\.0\.1:1\/v1\/ws\?app=demo&access_id=a&otp=\d{6}$/);
  for (const id of ['100', '101', '100', '102', '101']) {
    socket.receive({ type: 'message', id, channel: '#user', event: 'e', data: null });
  }
  assert.deepEqual(seen, ['100', '101', '102']);
  assert.equal(client.lastId, '102');
  client.close();
});
