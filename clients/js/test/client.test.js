// The client against the real host binary: connecting, delivery, and every
// reconnect path the host can produce (lost socket, revoked token, spent
// code, restarted node), checking that nothing is lost or repeated.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import test from 'node:test';

import { MadxClient, base32Decode } from '../src/index.js';
import { startHost } from './helpers/host.js';
import { startProxy } from './helpers/proxy.js';
import { sleep, until } from './helpers/wait.js';

/**
 * A client with everything it reports recorded.
 * @param {any} token
 * @param {import('../src/client.js').ClientOptions} [options]
 */
function recorded(token, options) {
  const client = new MadxClient(token, options);
  const log = {
    /** @type {any[]} */ messages: [],
    /** @type {any[]} */ states: [],
    /** @type {any[]} */ errors: [],
    /** @type {any[]} */ gaps: [],
  };
  client.on('*', (_data, message) => log.messages.push(message));
  client.onState((change) => log.states.push(change));
  client.onError((error) => log.errors.push(error));
  client.onGap((gap) => log.gaps.push(gap));
  return { client, log };
}

/** The events of the messages, in arrival order. */
const events = (messages) => messages.map((message) => message.event);

/** Wait, if needed, until at least `margin` ms remain in the current 30 s step. */
async function awayFromStepEdge(margin) {
  const left = 30_000 - (Date.now() % 30_000);
  if (left < margin) await sleep(left + 100);
}

/** RFC 6238 with node:crypto, independent of the client's code. */
function referenceCode(token, timeMs) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(timeMs / 1000 / token.otp.period)));
  const mac = createHmac('sha1', base32Decode(token.secret_seed)).update(counter).digest();
  const value = mac.readUInt32BE(mac[mac.length - 1] & 0xf) & 0x7fffffff;
  return String(value % 10 ** token.otp.digits).padStart(token.otp.digits, '0');
}

test('connects, receives its inboxes and channels, publishes, closes', async (t) => {
  const host = await startHost();
  t.after(() => host.stop());
  const token = await host.token({ user_id: 'ann', channels: ['news.*'], publish: ['news.*'] });
  const { client, log } = recorded(token);
  t.after(() => client.close());
  /** @type {any[]} */
  const sport = [];
  const subscription = client.subscribe('news.sport', (data) => sport.push(data));
  await client.connect();
  assert.equal(client.state, 'connected');
  await subscription.ready;

  await host.publish({ user_id: 'ann', event: 'report.done', data: { url: '/r/1' } });
  await host.publish({ access_id: token.access_id, event: 'token.only', data: 1 });
  await host.publish({ channel: 'news.sport', event: 'goal', data: { score: '1-0' } });
  assert.ok(client.publish('news.sport', 'cheer', { from: 'ann' }), 'sent while connected');
  await until(() => log.messages.length === 4, 'four messages');
  assert.deepEqual(events(log.messages), ['report.done', 'token.only', 'goal', 'cheer']);
  assert.deepEqual(log.messages.map((m) => m.channel), ['#user', '#token', 'news.sport', 'news.sport']);
  assert.deepEqual(sport, [{ score: '1-0' }, { from: 'ann' }]);
  assert.equal(client.lastId, log.messages[3].id);

  // Refusals come back as errors; the socket stays open.
  const refused = client.subscribe('secret.plans', () => {});
  await assert.rejects(refused.ready, /refused: 4303 forbidden/);
  client.publish('other', 'x', null);
  await until(() => log.errors.some((e) => e.frame === 'publish'), 'the publish refusal');
  assert.deepEqual(log.errors.map((e) => [e.code, e.frame, e.channel]),
    [[4303, 'subscribe', 'secret.plans'], [4303, 'publish', 'other']]);
  assert.equal(client.state, 'connected');

  client.close();
  assert.equal(client.state, 'closed');
  assert.equal(client.publish('news.sport', 'late', null), false);
  assert.equal(log.gaps.length, 0);
});

test('a lost socket (1006) resumes inboxes and channels: nothing lost, nothing twice', async (t) => {
  const host = await startHost();
  t.after(() => host.stop());
  const proxy = await startProxy(host.port);
  t.after(() => proxy.close());
  // Asked through the proxy, so ws_url points at the proxy.
  const token = await fetchToken(proxy.base, { user_id: 'bo', channels: ['room.*'] });
  const { client, log } = recorded(token);
  t.after(() => client.close());
  await client.connect();
  await client.subscribe('room.1', () => {}).ready;
  await host.publish({ user_id: 'bo', event: 'before.inbox', data: 1 });
  await host.publish({ channel: 'room.1', event: 'before.room', data: 2 });
  await until(() => log.messages.length === 2, 'the first two messages');

  proxy.blockWebSockets(true);
  assert.equal(proxy.dropWebSockets(), 1);
  await until(() => log.states.some((s) => s.current === 'reconnecting' && s.code === 1006),
    'reconnecting after 1006');
  // Published while the client cannot connect.
  await host.publish({ user_id: 'bo', event: 'during.inbox.1', data: 3 });
  await host.publish({ channel: 'room.1', event: 'during.room', data: 4 });
  await host.publish({ user_id: 'bo', event: 'during.inbox.2', data: 5 });
  proxy.blockWebSockets(false);

  await until(() => log.messages.length >= 5 && client.state === 'connected', 'the missed messages');
  await host.publish({ channel: 'room.1', event: 'after.room', data: 6 });
  await until(() => log.messages.length >= 6, 'the live message after the reconnect');
  await sleep(300); // room for a duplicate to show up, if there were one
  const names = events(log.messages);
  assert.deepEqual(names.filter((n) => n.includes('inbox')), ['before.inbox', 'during.inbox.1', 'during.inbox.2']);
  assert.deepEqual(names.filter((n) => n.includes('room')), ['before.room', 'during.room', 'after.room']);
  assert.equal(new Set(log.messages.map((m) => m.id)).size, 6);
  assert.deepEqual(log.gaps, [], 'history reached back: no gap');
});

test('a socket lost before any message still gets what was published meanwhile', async (t) => {
  const host = await startHost();
  t.after(() => host.stop());
  const proxy = await startProxy(host.port);
  t.after(() => proxy.close());
  const token = await fetchToken(proxy.base, { user_id: 'cy', channels: ['jobs'] });
  const { client, log } = recorded(token);
  t.after(() => client.close());
  await client.connect();
  await client.subscribe('jobs', () => {}).ready;

  proxy.blockWebSockets(true);
  proxy.dropWebSockets();
  await until(() => client.state === 'reconnecting', 'reconnecting');
  await host.publish({ user_id: 'cy', event: 'job.done', data: { job: 1 } });
  await host.publish({ channel: 'jobs', event: 'job.listed', data: { job: 1 } });
  proxy.blockWebSockets(false);

  await until(() => log.messages.length >= 2, 'both messages after the reconnect');
  await sleep(300);
  assert.deepEqual(events(log.messages).sort(), ['job.done', 'job.listed']);
});

test('a revoked token (4010) is replaced through refreshToken, resuming with last_id', async (t) => {
  const host = await startHost();
  t.after(() => host.stop());
  let refreshes = 0;
  const refreshToken = async () => {
    refreshes++;
    return host.token({ user_id: 'dee' });
  };
  const first = await host.token({ user_id: 'dee' });
  const { client, log } = recorded(first, { refreshToken });
  t.after(() => client.close());
  await client.connect();
  await host.publish({ user_id: 'dee', event: 'one', data: 1 });
  await until(() => log.messages.length === 1, 'the first message');

  assert.equal(await host.revoke(first.access_id), 204);
  await host.publish({ user_id: 'dee', event: 'two', data: 2 });
  await until(() => refreshes === 1 && client.state === 'connected', 'a new token and connection');
  await host.publish({ user_id: 'dee', event: 'three', data: 3 });
  await until(() => log.messages.length >= 3, 'the messages after the revocation');
  await sleep(300);
  assert.deepEqual(events(log.messages), ['one', 'two', 'three']);
  assert.ok(log.states.some((s) => s.code === 4010 && s.reason === 'token_revoked'));
  assert.equal(refreshes, 1);
});

/** Open a raw socket with `otp` for `token`; the code it is closed with. */
function closeCodeWith(token, otp) {
  return new Promise((resolve) => {
    const socket = new WebSocket(`${token.ws_url}&access_id=${token.access_id}&otp=${otp}`);
    socket.addEventListener('close', (event) => resolve(event.code));
  });
}

test('a locked access id (4100) is left for a new token through refreshToken', async (t) => {
  const host = await startHost();
  t.after(() => host.stop());
  const locked = await host.token({ user_id: 'lou' });
  // Someone who saw its connection string spends the allowance of wrong
  // codes: the access id is locked for minutes.
  const codes = [];
  for (let i = 0; i < 5; i++) codes.push(await closeCodeWith(locked, '000000'));
  assert.deepEqual(codes, [4002, 4002, 4002, 4002, 4002]);
  assert.equal(await closeCodeWith(locked, referenceCode(locked, Date.now())), 4100);

  let refreshes = 0;
  const refreshToken = async () => {
    refreshes++;
    return host.token({ user_id: 'lou' });
  };
  const { client, log } = recorded(locked, { refreshToken });
  t.after(() => client.close());
  await client.connect();
  assert.equal(client.state, 'connected');
  assert.equal(refreshes, 1);
  assert.ok(log.states.some((s) => s.code === 4100 && s.reason === 'rate_limited'));
  await host.publish({ user_id: 'lou', event: 'after', data: 1 });
  await until(() => log.messages.length === 1, 'a message on the new token');
});

test('without refreshToken, an invalid token fails the client and rejects connect()', async (t) => {
  const host = await startHost();
  t.after(() => host.stop());
  const token = await host.token({});
  assert.equal(await host.revoke(token.access_id), 204);
  const { client, log } = recorded(token);
  await assert.rejects(client.connect(), /4004 token_invalid/);
  assert.equal(client.state, 'failed');
  assert.deepEqual(log.errors.map((e) => [e.code, e.reason]), [[4004, 'token_invalid']]);
});

test('connectionId is the socket_id that keeps a publish from this connection', async (t) => {
  const host = await startHost();
  t.after(() => host.stop());
  const { client, log } = recorded(await host.token({ user_id: 'sam' }));
  const { client: other, log: otherLog } = recorded(await host.token({ user_id: 'sam' }));
  t.after(() => client.close());
  t.after(() => other.close());
  assert.equal(client.connectionId, null);
  await client.connect();
  await other.connect();
  assert.match(client.connectionId, /^\d+\.\d+$/);
  assert.notEqual(client.connectionId, other.connectionId);

  await host.publish({ user_id: 'sam', event: 'echo', data: 1, socket_id: client.connectionId });
  await host.publish({ user_id: 'sam', event: 'sentinel', data: 2 });
  await until(() => events(log.messages).includes('sentinel'), 'the sentinel');
  await until(() => events(otherLog.messages).includes('sentinel'), 'the other sentinel');
  assert.deepEqual(events(log.messages), ['sentinel']);
  assert.deepEqual(events(otherLog.messages), ['echo', 'sentinel']);

  client.close();
  assert.equal(client.connectionId, null);
});

test('a code spent elsewhere (4003) is followed by another code of the window', async (t) => {
  const host = await startHost();
  t.after(() => host.stop());
  const token = await host.token({});
  await awayFromStepEdge(6000);
  // Another tab with the same token takes the current step's code first.
  const other = new WebSocket(`${token.ws_url}&access_id=${token.access_id}&otp=${referenceCode(token, Date.now())}`);
  t.after(() => other.close());
  const first = await new Promise((resolve) => other.addEventListener('message', (e) => resolve(JSON.parse(e.data))));
  assert.equal(first.type, 'welcome');

  const { client, log } = recorded(token);
  t.after(() => client.close());
  await client.connect();
  assert.deepEqual(log.errors.map((e) => [e.code, e.reason]), [[4003, 'otp_reused']]);
  assert.equal(client.state, 'connected');
});

test('a restarted node: going_away, connection refused, unknown token, new token, resumed', async (t) => {
  let host = await startHost();
  t.after(() => host.stop());
  const proxy = await startProxy(host.port);
  t.after(() => proxy.close());
  const refreshToken = () => fetchToken(proxy.base, { user_id: 'eve' });
  const { client, log } = recorded(await refreshToken(), { refreshToken });
  t.after(() => client.close());
  await client.connect();
  await host.publish({ user_id: 'eve', event: 'before', data: 1 });
  await until(() => log.messages.length === 1, 'the first message');

  await host.stop('SIGTERM'); // closes sockets with 4200 going_away
  await until(() => log.states.some((s) => s.code === 4200), 'the 4200 close');
  host = await startHost();
  proxy.setTarget(host.port);
  await host.publish({ user_id: 'eve', event: 'after.restart', data: 2 });
  await until(() => log.messages.length >= 2, 'the message published on the new node');
  await sleep(300);
  assert.deepEqual(events(log.messages), ['before', 'after.restart']);
  const codes = log.states.map((s) => s.code).filter(Boolean);
  assert.equal(codes[0], 4200);
  assert.ok(codes.includes(4004), `the old token is unknown to the new node: ${codes}`);
  // History lived in the old process: the client is told to reload.
  assert.deepEqual(log.gaps, [{ channel: '#inbox' }]);
});

test('the WebSocket layer answers the server heartbeats: no 4201', async (t) => {
  const host = await startHost('heartbeat_secs = 1\n');
  t.after(() => host.stop());
  const { client, log } = recorded(await host.token({}));
  t.after(() => client.close());
  await client.connect();
  await sleep(3500); // more than two heartbeat intervals of silence
  assert.equal(client.state, 'connected');
  assert.deepEqual(log.states.map((s) => s.current), ['connecting', 'connected']);
});

test('a silently dead connection is noticed by an unanswered ping and replaced', async (t) => {
  const host = await startHost();
  t.after(() => host.stop());
  const proxy = await startProxy(host.port);
  t.after(() => proxy.close());
  const { client, log } = recorded(await fetchToken(proxy.base, { user_id: 'fay' }), { pingAfterMs: 300, pongTimeoutMs: 1000 });
  t.after(() => client.close());
  await client.connect();
  assert.equal(proxy.freezeWebSockets(), 1);
  await host.publish({ user_id: 'fay', event: 'while.frozen', data: 1 });
  await until(() => log.states.some((s) => s.reason === 'no answer to ping'), 'the dead connection to be noticed');
  await until(() => log.messages.length >= 1 && client.state === 'connected', 'the message after the reconnect');
  await sleep(300);
  assert.deepEqual(events(log.messages), ['while.frozen']);
});

test('close() stops reconnecting', async (t) => {
  const host = await startHost();
  t.after(() => host.stop());
  const proxy = await startProxy(host.port);
  t.after(() => proxy.close());
  const { client } = recorded(await fetchToken(proxy.base, {}));
  await client.connect();
  client.close();
  assert.equal(client.state, 'closed');
  await until(() => proxy.webSocketCount() === 0, 'the socket to close');
  await sleep(1000);
  assert.equal(proxy.webSocketCount(), 0);
  assert.equal(client.state, 'closed');
});

/**
 * POST /v1/tokens at `base` with the demo app's credentials.
 * @param {string} base
 * @param {object} body
 */
async function fetchToken(base, body) {
  const response = await fetch(`${base}/v1/tokens`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from('demo-key:demo-secret').toString('base64')}` },
    body: JSON.stringify(body),
  });
  if (response.status !== 201) throw new Error(`token refused: ${response.status}`);
  return response.json();
}

test('presence: the member list, then each user added and removed once', async (t) => {
  const host = await startHost();
  t.after(() => host.stop());
  const claims = (user) => ({ user_id: user, channels: ['presence-*'], user_info: { name: user.toUpperCase() } });
  const ann = recorded(await host.token(claims('ann')));
  t.after(() => ann.client.close());
  /** @type {any[]} */
  const changes = [];
  ann.client.onPresence((change) => changes.push(change));
  await ann.client.connect();
  await ann.client.subscribe('presence-room', () => {}).ready;
  await until(() => changes.length === 1, 'the member list');
  assert.equal(changes[0].kind, 'members');
  assert.deepEqual([...changes[0].members], [['ann', { name: 'ANN' }]]);

  // Bob, with two sockets: added once; removed when his last one leaves.
  const bobToken = await host.token(claims('bob'));
  const bobs = [new MadxClient(bobToken), new MadxClient(await host.token(claims('bob')))];
  for (const bob of bobs) {
    t.after(() => bob.close());
    await bob.connect();
    await bob.subscribe('presence-room', () => {}).ready;
  }
  await until(() => changes.length === 2, 'bob added');
  assert.deepEqual(
    { kind: changes[1].kind, userId: changes[1].userId, userInfo: changes[1].userInfo },
    { kind: 'member_added', userId: 'bob', userInfo: { name: 'BOB' } },
  );
  assert.deepEqual([...ann.client.members('presence-room').keys()].sort(), ['ann', 'bob']);
  assert.deepEqual([...bobs[1].members('presence-room').keys()].sort(), ['ann', 'bob']);

  // One of bob's sockets goes: he stays. (Absence can only be seen by
  // giving a wrong removal the time to arrive.)
  bobs[0].close();
  await sleep(500);
  assert.equal(changes.length, 2, 'bob still has a socket in the room');
  bobs[1].unsubscribe('presence-room');
  await until(() => changes.length === 3, 'bob removed');
  assert.equal(changes[2].kind, 'member_removed');
  assert.equal(changes[2].userId, 'bob');
  assert.deepEqual([...ann.client.members('presence-room').keys()], ['ann']);
  assert.equal(ann.client.members('news'), undefined);
});
